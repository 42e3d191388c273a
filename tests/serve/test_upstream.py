"""One rung's upstream calls (serve/upstream.py, over aiohttp's client) against raw asyncio servers on
loopback that answer with exactly the bytes each case needs: connection reuse and the pool's size,
streams, compression, broken answers, deadlines, retries with Retry-After, and TLS verification."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import gzip
import ipaddress
import json
import os
import re
import ssl
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from complexitynet.config import ConfigError, OpenAIRung, ServeParams, parse_rung
from complexitynet.serve import upstream as upstream_module
from complexitynet.serve.upstream import Upstream, UpstreamFailed, UpstreamRejected, open_session
from tests.conftest import REPO
from tests.serve.conftest import KEY_ENV, SECRET

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
ANSWER = json.dumps({"id": "x", "object": "chat.completion",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}).encode()


class RawServer:
    """A loopback server that hands each request (head and body read) to `answer(reader, writer, n)`,
    n counting requests from 0; it records the connections it accepted and each request's arrival."""

    def __init__(self, answer: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.answer, self.tls = answer, tls
        self.connections = self.requests = 0
        self.heads: list[str] = []
        self.bodies: list[bytes] = []
        self.arrivals: list[float] = []

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.heads.append(head.decode("latin-1"))
                self.bodies.append(await reader.readexactly(length))
                self.arrivals.append(time.monotonic())
                n, self.requests = self.requests, self.requests + 1
                await self.answer(reader, writer, n)
                if writer.is_closing():
                    return
        finally:
            writer.close()


def reply(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def fixed(body: bytes = ANSWER, *headers: str, status: str = "200 OK") -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(reply(body, f"Content-Length: {len(body)}", "Content-Type: application/json", *headers,
                           status=status))
        await writer.drain()
    return answer


def spec(base_url: str, key_env: str | None = None) -> OpenAIRung:
    return parse_rung({"name": "rung", "provider": "openai", "price": {"input": 1, "output": 1},
                       "openai": {"base_url": base_url, "model": "m-rung", "api_key_env": key_env}})


def rung(server: RawServer, retries: int = 0, timeout_s: float = 2.0, key_env: str | None = None,
         scheme: str = "http", host: str = "127.0.0.1") -> Upstream:
    """An Upstream to `server` on a new session (close it with `await up.client.close()`)."""
    return Upstream(spec(f"{scheme}://{host}:{server.port}/v1", key_env), open_session(ServeParams()), timeout_s,
                    retries, 0.0)


def test_answers_reuse_one_connection_and_carry_only_what_the_rung_needs(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)

    async def scenario() -> None:
        async with RawServer(fixed(ANSWER, "Set-Cookie: session=caller-a")) as server:
            up = rung(server, key_env=KEY_ENV)
            for i in range(3):
                answer = await up.complete(up.body_for({"model": "complexitynet", "n": i}))
                assert answer["choices"][0]["message"]["content"] == "hi"
            assert server.connections == 1  # kept alive and reused
            assert [json.loads(b) for b in server.bodies] == [{"model": "m-rung", "n": i} for i in range(3)]
            head = server.heads[0]
            assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
            for line in (f"Host: 127.0.0.1:{server.port}", f"Authorization: Bearer {SECRET}",
                         "Content-Type: application/json", "User-Agent: complexitynet-router",
                         "Accept-Encoding: identity"):
                assert line + "\r\n" in head, line
            assert "cookie" not in server.heads[1].lower()  # one caller's cookies never go out with another's
            await up.client.close()

    asyncio.run(scenario())


def test_the_pool_is_sized_from_serve_max_in_flight():
    async def scenario() -> None:
        for cfg in (ServeParams(), ServeParams(max_in_flight=7)):
            session = open_session(cfg)
            assert session.connector.limit == cfg.max_in_flight and session.connector.limit_per_host == 0
            assert session.trust_env  # HTTP(S)_PROXY / NO_PROXY apply (tests/serve/test_server.py)
            await session.close()

    asyncio.run(scenario())


def test_a_stream_arrives_piece_by_piece_and_then_its_connection_is_reused():
    async def scenario() -> None:
        go = asyncio.Event()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            if n > 0:
                return await fixed()(reader, writer, n)
            writer.write(reply(b"", "Transfer-Encoding: chunked", "Content-Type: text/event-stream"))
            writer.write(b"6;ext=1\r\nhello \r\n")
            await writer.drain()
            await go.wait()  # the client must see the first piece before the second exists
            writer.write(b"5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n")
            await writer.drain()

        async with RawServer(answer) as server:
            up = rung(server)
            resp = await up.open_stream(b'{"stream": true}')
            pieces = []
            async for piece in up.stream_body(resp):
                pieces.append(piece)
                go.set()
            resp.release()
            assert pieces == [b"hello ", b"world"]
            assert (await up.complete(b"{}"))["choices"] and server.connections == 1  # read to its end: reused
            await up.client.close()

    asyncio.run(scenario())


def test_a_connection_the_server_closed_while_idle_is_not_reused():
    """Servers close idle keep-alive connections (uvicorn after 5 s): the next request goes out on a
    new connection and succeeds at its first attempt."""
    async def scenario() -> None:
        async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await fixed()(reader, writer, n)
            writer.close()  # no "Connection: close": the client learns it from the socket

        async with RawServer(answer_and_close) as server:
            up = rung(server, retries=0)
            assert (await up.complete(b"{}"))["choices"]
            await asyncio.sleep(0.1)
            assert (await up.complete(b"{}"))["choices"]
            assert server.connections == 2 and server.requests == 2
            await up.client.close()

    asyncio.run(scenario())


def test_compressed_answers_are_decoded():
    raw_deflate = zlib.compressobj(wbits=-15)
    raw_deflate = raw_deflate.compress(ANSWER) + raw_deflate.flush()

    async def scenario() -> None:
        for body, coding in [(gzip.compress(ANSWER), "gzip"), (zlib.compress(ANSWER), "deflate"),
                             (raw_deflate, "deflate")]:  # deflate as RFC 9110 says, and as some servers send it
            async with RawServer(fixed(body, f"Content-Encoding: {coding}")) as server:
                up = rung(server)
                assert (await up.complete(b"{}"))["choices"][0]["message"]["content"] == "hi", coding
                await up.client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("answer", "error"), [
    (b"", "the upstream closed the connection before it answered"),
    (b"SPDY/3 200 OK\r\n\r\n", "ClientResponseError"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "ClientResponseError"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", "the upstream's answer was malformed or cut off"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "ClientResponseError"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc", "the upstream's answer was malformed or cut off"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
     "malformed or cut off (400, message: Can not decode content-encoding: gzip"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "a malformed answer (not JSON)"),
    (b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}', "a malformed answer (no choices)"),
    (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", "HTTP 503"),
])
def test_broken_answers_are_retried_then_fail_the_rung_saying_what_broke(answer, error):
    async def scenario() -> None:
        async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(answer)
            await writer.drain()
            writer.close()

        async with RawServer(send) as server:
            up = rung(server, retries=1)
            with pytest.raises(UpstreamFailed, match=re.escape(error) + ".* after 2 attempt\\(s\\)"):
                await up.complete(b"{}")
            assert server.requests == 2 and server.connections == 2  # nothing broken is reused
            await up.client.close()

    asyncio.run(scenario())


def test_a_request_the_rung_refuses_is_passed_back_once_with_the_key_redacted(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)

    async def scenario() -> None:
        for status in ("400 Bad Request", "401 Unauthorized", "409 Conflict"):
            body = json.dumps({"error": {"message": f"bad key {SECRET}"}}).encode()
            async with RawServer(fixed(body, status=status)) as server:
                up = rung(server, retries=3, key_env=KEY_ENV)
                with pytest.raises(UpstreamRejected) as err:
                    await up.complete(b"{}")
                assert err.value.status == int(status[:3]) and server.requests == 1
                assert SECRET.encode() not in err.value.body and b"[redacted]" in err.value.body
                await up.client.close()

    asyncio.run(scenario())


def test_deadlines_and_abandoned_streams_close_the_connection():
    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            if n == 0:  # the head never comes
                await release.wait()
                return
            writer.write(reply(b"", "Transfer-Encoding: chunked", "Content-Type: text/event-stream") +
                         b"3\r\nabc\r\n")
            await writer.drain()
            await release.wait()

        async with RawServer(slow) as server:
            up = rung(server, timeout_s=0.3)
            with pytest.raises(UpstreamFailed, match=r"no answer within 0.3 s after 1 attempt\(s\)"):
                await up.complete(b"{}")  # one deadline for the whole answer
            resp = await up.open_stream(b"{}")
            chunks = up.stream_body(resp)
            assert await anext(chunks) == b"abc"
            with pytest.raises(TimeoutError):  # then one for each read of a stream
                await anext(chunks)
            resp.release()
            await chunks.aclose()
            assert server.connections == 2  # neither connection went back to the pool
            release.set()
            await up.client.close()

    asyncio.run(scenario())


def test_retry_after_is_honoured_in_both_forms_up_to_the_routers_cap(monkeypatch):
    """A 429's Retry-After, in seconds or as an HTTP date (not read as 0), sets the wait before the
    next attempt; the router waits at most MAX_WAIT_S, then the next rung is the better bet."""
    monkeypatch.setattr(upstream_module, "MAX_WAIT_S", 0.3)

    async def scenario(retry_after: str, at_least: float, at_most: float) -> None:
        async def limited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            if n == 0:
                return await fixed(b"{}", f"Retry-After: {retry_after}", status="429 Too Many Requests")(
                    reader, writer, n)
            await fixed()(reader, writer, n)

        async with RawServer(limited) as server:
            up = rung(server, retries=1)
            assert (await up.complete(b"{}"))["choices"]
            gap = server.arrivals[1] - server.arrivals[0]
            assert at_least <= gap <= at_most, (retry_after, gap)
            await up.client.close()

    asyncio.run(scenario("0.2", 0.2, 0.29))
    asyncio.run(scenario("3600", 0.3, 0.45))  # capped
    monkeypatch.setattr(upstream_module, "MAX_WAIT_S", 5.0)
    # formatdate drops the fraction of a second: the date is 1-2 s ahead
    asyncio.run(scenario(email.utils.formatdate(time.time() + 2, usegmt=True), 0.9, 2.5))


def test_a_base_url_that_is_not_http_is_a_config_error():
    async def scenario() -> None:
        session = open_session(ServeParams())
        with pytest.raises(ConfigError, match="is not an http:// or https:// URL"):  # params refuse ftp:// etc.
            Upstream(spec("http:///v1"), session, 1.0, 0, 0.0)
        await session.close()

    asyncio.run(scenario())


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return tmp / "cert.pem", tmp / "key.pem"


TRUSTING = """
import asyncio, sys
from complexitynet.config import ServeParams
from complexitynet.serve.upstream import Upstream, open_session
from tests.serve.test_upstream import spec

async def main():
    async with open_session(ServeParams()) as session:
        answer = await Upstream(spec(sys.argv[1]), session, 10.0, 0, 0.0).complete(b"{}")
    print(answer["choices"][0]["message"]["content"])

asyncio.run(main())
"""


def test_https_verifies_the_server_certificate(tmp_path):
    """An untrusted certificate fails the rung at once (another try cannot help); one that SSL_CERT_FILE
    names is trusted, as a company's own CA would be (aiohttp reads it when it is imported: a fresh
    process)."""
    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def scenario() -> None:
        async with RawServer(fixed(), tls=tls) as server:
            up = rung(server, retries=2, scheme="https", host="localhost")
            with pytest.raises(UpstreamFailed, match=r"TLS certificate is not trusted here.*\(not retried\)"):
                await up.complete(b"{}")
            assert server.requests == 0
            await up.client.close()
            env = {**os.environ, "SSL_CERT_FILE": str(cert)}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", TRUSTING, f"https://localhost:{server.port}/v1", cwd=REPO, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0 and out.decode().strip() == "hi", err.decode()[-2000:]
            assert server.requests == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("base_url, message", [
    ("http://no-such-host.invalid/v1", "cannot resolve the upstream's host name 'no-such-host.invalid' (DNS)"),
    ("http://127.0.0.1:9/v1", "cannot connect to 127.0.0.1:9 ("),
])
def test_an_upstream_that_cannot_be_reached_is_named_in_plain_words(base_url, message):
    async def scenario() -> None:
        up = Upstream(spec(base_url), open_session(ServeParams()), 5.0, 0, 0.0)
        with pytest.raises(UpstreamFailed) as info:
            await up.complete(b"{}")
        assert message in str(info.value) and "gaierror" not in str(info.value)
        await up.client.close()

    asyncio.run(scenario())
