"""The router's upstream HTTP/1.1 client (serve/http1.py) against raw asyncio servers on loopback that
answer with exactly the bytes each case needs: every body framing, interim responses, compression,
keep-alive and its failures, cut-off and malformed answers, deadlines, and TLS."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import re
import socket
import ssl
import struct
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from complexitynet.serve import http1
from complexitynet.serve.http1 import Client, HTTPError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A loopback server that hands each request (head and body read) to `answer(reader, writer, n)`,
    n counting requests from 0; it records how many connections it accepted."""

    def __init__(self, answer: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.answer, self.tls = answer, tls
        self.connections = self.requests = 0
        self.bodies: list[bytes] = []
        self.heads: list[bytes] = []

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
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                n, self.requests = self.requests, self.requests + 1
                await self.answer(reader, writer, n)
                if writer.is_closing():
                    return
        finally:
            writer.close()


def reply(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def fixed(body: bytes, *headers: str) -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(reply(body, f"Content-Length: {len(body)}", *headers))
        await writer.drain()
    return answer


async def post(client: Client, server: RawServer, body: bytes = b'{"q": 1}', path: str = "/v1/chat/completions",
               scheme: str = "http", host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    origin, head = client.request_head(f"{scheme}://{host}:{server.port}{path}", {"Content-Type": "application/json"})
    resp = await client.post(origin, head, body)
    return resp.status, resp.headers, await resp.read()


def test_content_length_answers_reuse_one_connection():
    async def scenario() -> None:
        async with RawServer(fixed(b'{"ok": true}', "Content-Type: application/json", "X-Two: a",
                                   "x-two: b")) as server:
            client = Client()
            for i in range(3):
                status, headers, body = await post(client, server, b'{"n": %d}' % i)
                assert (status, body) == (200, b'{"ok": true}')
                assert headers["content-type"] == "application/json" and headers["x-two"] == "a, b"
            assert server.connections == 1 and server.bodies == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
            head = server.heads[0].decode()
            assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "Content-Length: 8\r\n" in head
            assert "Accept-Encoding: identity\r\n" in head and "Content-Type: application/json\r\n" in head
            await client.close()

    asyncio.run(scenario())


def test_a_chunked_stream_arrives_piece_by_piece_and_trailers_are_skipped():
    async def scenario() -> None:
        go = asyncio.Event()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(reply(b"", "Transfer-Encoding: chunked", "Content-Type: text/event-stream"))
            writer.write(b"6;ext=1\r\nhello \r\n")
            await writer.drain()
            await go.wait()  # the client must see the first piece before the second exists
            writer.write(b"5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n")
            await writer.drain()

        async with RawServer(answer) as server:
            client = Client()
            origin, head = client.request_head(f"http://127.0.0.1:{server.port}/v1", {})
            resp = await client.post(origin, head, b"{}")
            pieces = []
            async for piece in resp.chunks(read_timeout_s=5):
                pieces.append(piece)
                go.set()
            assert pieces == [b"hello ", b"world"]
            server.answer = fixed(b"again")
            assert (await post(client, server))[2] == b"again" and server.connections == 1  # read to its end: reused
            await client.close()

    asyncio.run(scenario())


def test_a_body_until_close_interim_responses_and_connection_close():
    async def scenario() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            if n == 0:  # no length: the body ends with the connection
                writer.write(reply(b"", status="100 Continue") + reply(b"", status="103 Early Hints") +
                             reply(b"all of it"))
                writer.close()
            else:
                writer.write(reply(b"bye", "Content-Length: 3", "Connection: close"))

        async with RawServer(answer) as server:
            client = Client()
            assert await post(client, server) == (200, {}, b"all of it")
            assert (await post(client, server))[2] == b"bye"
            assert (await post(client, server))[2] == b"bye"
            assert server.connections == 3  # neither kind of connection goes back to the pool
            await client.close()

    asyncio.run(scenario())


def test_compressed_answers_are_decoded_and_bad_ones_refused():
    answer = b'{"big": "answer"}'
    raw_deflate = zlib.compressobj(wbits=-15)
    raw_deflate = raw_deflate.compress(answer) + raw_deflate.flush()

    async def scenario() -> None:
        for body, coding in [(gzip.compress(answer), "gzip"), (zlib.compress(answer), "deflate"),
                             (raw_deflate, "deflate")]:  # deflate as RFC 9110 says, and as some servers send it
            async with RawServer(fixed(body, f"Content-Encoding: {coding}")) as server:
                assert (await post(Client(), server))[2] == answer
        for body, coding, error in [(b"\x00\x01", "br", "Content-Encoding 'br'"),
                                    (b"not gzip at all", "gzip", "gzip body does not decode"),
                                    (gzip.compress(answer)[:-6], "gzip", "gzip body is cut short")]:
            async with RawServer(fixed(body, f"Content-Encoding: {coding}")) as server:
                with pytest.raises(HTTPError, match=error):
                    await post(Client(), server)

    asyncio.run(scenario())


def test_a_pooled_connection_closed_by_the_server_is_replaced_once():
    async def scenario() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            if n == 1:  # the second request, on the kept-alive connection: closed unanswered
                writer.close()
                return
            writer.write(reply(b"fine", "Content-Length: 4"))

        async with RawServer(answer) as server:
            client = Client()
            assert (await post(client, server))[2] == b"fine"
            assert (await post(client, server))[2] == b"fine"  # sent again on a new connection
            assert server.connections == 2 and server.requests == 3

            server.answer = lambda reader, writer, n: asyncio.sleep(0, writer.close())
            with pytest.raises(HTTPError, match="closed the connection"):  # pooled, then new: both fail
                await post(client, server)
            assert server.requests == 5  # once more, not for every pooled connection
            await client.close()

    asyncio.run(scenario())


def test_idle_connections_expire(monkeypatch):
    monkeypatch.setattr(http1, "IDLE_S", 0.0)

    async def scenario() -> None:
        async with RawServer(fixed(b"x")) as server:
            client = Client()
            for _ in range(3):
                await post(client, server)
            assert server.connections == 3
            await client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("answer", "error"), [
    (b"SPDY/3 200 OK\r\n\r\n", "did not answer in HTTP/1.x"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "did not answer in HTTP/1.x"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "Content-Length 'ten' is not a number"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", "closed the connection 91 bytes before the end"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size line b'zz\\r\\n' is malformed"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", "chunk does not end with CRLF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc", "in the middle of a chunk"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding 'gzip' is not supported"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding 'gzip, chunked' is not"),
    (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding in an HTTP/1.0"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", "Content-Length '0x5' is not a number"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "Content-Length '5, 6' is not"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc", "chunk size line b'-1\\r\\n' is malformed"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "switched protocols (101)"),
    (b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * (70 * 1024), "response head exceeds 65536 bytes"),
    (b"HTTP/1.1 200", "closed the connection in the middle of its response"),
    (b"", "the upstream closed the connection without answering"),
])
def test_broken_answers_are_errors_that_say_what_broke(answer, error):
    async def scenario() -> None:
        async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(answer)
            await writer.drain()
            writer.close()

        async with RawServer(send) as server:
            client = Client()
            with pytest.raises(HTTPError, match=re.escape(error)):
                await post(client, server)
            assert not any(client._idle.values())  # nothing broken is pooled
            await client.close()

    asyncio.run(scenario())


def test_a_body_until_close_cut_by_a_reset_is_an_error():
    async def scenario() -> None:
        async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(reply(b'{"choices": [{"message": {"content": "partial'))
            await writer.drain()
            await asyncio.sleep(0.05)
            # linger 0: the close sends RST, not FIN; the body did not end
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        async with RawServer(reset) as server:
            with pytest.raises(HTTPError, match="the connection to the upstream broke"):
                await post(Client(), server)

    asyncio.run(scenario())


def test_repeated_equal_content_lengths_are_one():
    async def scenario() -> None:
        async with RawServer(fixed(b"hello", "Content-Length: 5")) as server:  # sent twice
            assert (await post(Client(), server))[2] == b"hello"

    asyncio.run(scenario())


def test_a_body_over_the_limit_is_refused():
    async def scenario() -> None:
        async with RawServer(fixed(b"z" * 5000)) as server:
            client = Client()
            origin, head = client.request_head(f"http://127.0.0.1:{server.port}/", {})
            resp = await client.post(origin, head, b"")
            with pytest.raises(HTTPError, match="body exceeds 4096 bytes"):
                await resp.read(limit=4096)
            assert not any(client._idle.values())

    asyncio.run(scenario())


def test_deadlines_and_abandoned_streams_close_the_connection():
    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(reply(b"", "Transfer-Encoding: chunked") + b"3\r\nabc\r\n")
            await writer.drain()
            await release.wait()

        async with RawServer(slow) as server:
            client = Client()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):  # the caller's deadline for a whole answer
                    await post(client, server)
            origin, head = client.request_head(f"http://127.0.0.1:{server.port}/", {})
            resp = await client.post(origin, head, b"")
            chunks = resp.chunks(read_timeout_s=0.2)
            assert await anext(chunks) == b"abc"
            with pytest.raises(TimeoutError):  # a stream's per-read deadline
                await anext(chunks)
            resp2 = await client.post(origin, head, b"")
            resp2.release()  # left before its body ended
            assert not any(client._idle.values()) and server.connections == 3
            release.set()
            await client.close()
            with pytest.raises(HTTPError, match="client is closed"):
                await client.post(origin, head, b"")

    asyncio.run(scenario())


def test_urls_the_client_cannot_call_are_value_errors():
    client = Client()
    for url in ("ftp://host/v1", "http:///v1", "localhost:8000/v1"):
        with pytest.raises(ValueError, match="is not an http:// or https:// URL"):
            client.request_head(url, {})
    origin, head = client.request_head("https://api.example.com/v1/chat/completions?x=1", {"Authorization": "Bearer k"})
    assert origin == ("https", "api.example.com", 443)
    assert head.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: api.example.com\r\n")
    assert head.endswith(b"Authorization: Bearer k\r\n")
    assert client.request_head("http://[::1]:9000/v1", {})[1].split(b"\r\n")[1] == b"Host: [::1]:9000"


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


def test_https_verifies_the_server_certificate(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def scenario(trusted: bool) -> None:
        async with RawServer(fixed(b"secret"), tls=tls) as server:
            client = Client()
            if trusted:
                assert (await post(client, server, scheme="https", host="localhost"))[2] == b"secret"
                assert (await post(client, server, scheme="https", host="localhost"))[2] == b"secret"
                assert server.connections == 1
            else:
                with pytest.raises(ssl.SSLCertVerificationError):
                    await post(client, server, scheme="https", host="localhost")
            await client.close()

    asyncio.run(scenario(trusted=False))  # the system's roots do not include it
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what create_default_context() trusts, as for any client
    asyncio.run(scenario(trusted=True))


def test_sse_relay_splits_events_across_any_chunking():
    """sse.relay (what a streamed answer goes through after this client): events come out whole and
    in order however the upstream's bytes were cut, CRLF line ends included (sse-starlette's default),
    and the usage-only event reaches the caller only when asked for."""
    from complexitynet.serve import sse

    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}'
    stream = b"data: a\r\n\r\ndata: b\r\n\r\n" + usage + b"\r\n\r\ndata: [DONE]\r\n\r\n"

    async def relay(pieces: list[bytes], keep_usage: bool) -> tuple[list[bytes], dict | None]:
        async def chunks():
            for piece in pieces:
                yield piece

        out: list[bytes] = []

        async def write(data: bytes) -> None:
            out.append(data)

        return out, await sse.relay(chunks(), write, keep_usage)

    want = [b"data: a\n\n", b"data: b\n\n", usage + b"\n\n", sse.DONE]
    for cut in range(1, len(stream)):  # every two-piece split, CRLFs straddling included
        out, found = asyncio.run(relay([stream[:cut], stream[cut:]], keep_usage=True))
        assert out == want and found == {"prompt_tokens": 3, "completion_tokens": 2}, cut
    out, _ = asyncio.run(relay([stream[i:i + 1] for i in range(len(stream))], keep_usage=False))
    assert out == [want[0], want[1], want[3]]
