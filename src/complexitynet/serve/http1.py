"""The router's upstream HTTP client: keep-alive HTTP/1.1 (TLS for https) over asyncio.

Why not aiohttp's client: forwarding one request through it cost ~0.3 ms of CPU on the build
machine, about a third of all the router's work per request, where this client costs ~0.06 ms. The
router needs little of HTTP from its upstreams: POST a JSON body to a known URL and read back the
status, a few headers and the body, whole or (for streams) as it arrives. That much is here, with
what a real server can answer: a Content-Length body, a chunked one (extensions and trailers
skipped), a body that lasts until the connection closes, interim 1xx heads, gzip or deflate despite
`Accept-Encoding: identity`, and `Connection: close` (an HTTP/1.0 connection is never reused).
Anything else is an HTTPError naming what broke. Not here (and not used by the router's
upstreams): proxies, redirects, cookies, HTTP/2.

Connections are pooled per origin and reused only when the last response was read to its end; one
given up half-way (a timeout, a cancelled request, a stream the caller left) is closed. A pooled
connection the server closed while it sat idle (servers time idle connections out: uvicorn after
5 s) would fail the next request before a byte came back; that request is sent once more on a new
connection, as browsers and urllib3 do. Deadlines are the caller's (`asyncio.timeout` around a call),
except a stream's per-read one (`Response.chunks(read_timeout_s)`).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import zlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # bytes of status line and headers
MAX_BODY = 64 * 2**20  # bytes of a whole (non-streamed) body
HIGH_WATER, LOW_WATER = 256 * 1024, 64 * 1024  # unread bytes at which reading from the socket pauses/resumes
IDLE_S = 15.0  # a pooled connection idle longer is closed, not reused
MAX_IDLE = 256  # pooled connections kept per origin
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class HTTPError(Exception):
    """The upstream broke HTTP/1.1: a malformed or cut-off response, or a connection closed early."""


class _Closed(HTTPError):
    """The connection ended before any byte of the response arrived."""


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: the bytes received so far and a way to wait for more."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.paused = False
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.received = 0  # bytes of the current response so far
        self.error: Exception | None = None  # why the connection was lost, if not by an orderly close

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.received += len(data)
        if len(self.buf) > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof, self.error = True, exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # reading
    @property
    def quiet(self) -> bool:
        """Open and with nothing unread (between responses a server has nothing to say)."""
        return not self.eof and not self.buf and not self.transport.is_closing()

    async def _more(self) -> None:
        if self.eof:
            raise _Closed("the upstream closed the connection without answering") if not self.received else \
                HTTPError("the upstream closed the connection in the middle of its response")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, n: int) -> bytes:
        """The first n buffered bytes, removed from the buffer."""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        if self.paused and len(self.buf) < LOW_WATER:
            self.paused = False
            self.transport.resume_reading()
        return out

    async def until(self, sep: bytes, limit: int, what: str) -> bytes:
        """The bytes up to and including `sep`, at most `limit` of them."""
        start = 0
        while (end := self.buf.find(sep, start)) < 0:
            if len(self.buf) > limit:
                raise HTTPError(f"the upstream's {what} exceeds {limit} bytes")
            start = max(0, len(self.buf) - len(sep) + 1)
            await self._more()
        if end > limit:
            raise HTTPError(f"the upstream's {what} exceeds {limit} bytes")
        return self.take(end + len(sep))

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._more()
        return self.take(n)

    async def some(self, most: int) -> bytes:
        """At least one byte (at most `most`); b"" once the connection has ended and nothing is left."""
        while not self.buf:
            if self.eof:
                if self.error is not None:  # a reset is not the end of a body
                    raise HTTPError(f"the connection to the upstream broke ({self.error})")
                return b""
            await self._more()
        return self.take(most)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Response:
    """An upstream response whose head has been read; its body is read with `read()` or `chunks()`.
    Call `release()` when done: the connection goes back to the pool if the body was read to its end,
    and is closed otherwise."""

    def __init__(self, client: Client, origin: tuple[str, str, int], conn: Connection, status: int,
                 headers: dict[str, str], keep_alive: bool) -> None:
        self.status, self.headers = status, headers
        self._client, self._origin, self._conn, self._keep_alive = client, origin, conn, keep_alive
        self._done = False
        te = headers.get("transfer-encoding", "")
        self._chunked = bool(te)
        if te and te.replace(" ", "").lower() != "chunked":
            raise HTTPError(f"the upstream's Transfer-Encoding '{te}' is not supported (only chunked)")
        if status < 200 or status in (204, 304):
            self._left: int | None = 0
        elif self._chunked:
            self._left = None
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}  # "5, 5" from repeated headers
            value = values.pop()
            if values or not (value.isascii() and value.isdigit()):
                raise HTTPError(f"the upstream's Content-Length '{headers['content-length']}' is not a number")
            self._left = int(value)
        else:
            self._left = None  # the body lasts until the connection closes
            self._keep_alive = False
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise HTTPError(f"the upstream answered with Content-Encoding '{encoding}', which the router cannot decode")
        self._encoding = None if encoding == "identity" else encoding
        self._decoder = None

    async def read(self, limit: int = MAX_BODY) -> bytes:
        """The whole body (decoded); the connection is released either way."""
        parts, size = [], 0
        try:
            while (raw := await self._next()) is not None:
                parts.append(self._decode(raw))
                size += len(parts[-1])
                if size > limit:
                    raise HTTPError(f"the upstream's body exceeds {limit} bytes")
            parts.append(self._flush())
        finally:
            self.release()
        return b"".join(parts)

    async def chunks(self, read_timeout_s: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded); each wait for the upstream at most `read_timeout_s`. The
        connection is released when the body ends."""
        try:
            while True:
                if read_timeout_s is None:
                    raw = await self._next()
                else:
                    async with asyncio.timeout(read_timeout_s):
                        raw = await self._next()
                if raw is None:
                    break
                if data := self._decode(raw):
                    yield data
            if tail := self._flush():
                yield tail
        finally:
            self.release()

    def _decode(self, raw: bytes) -> bytes:
        if self._encoding is None:
            return raw
        try:
            if self._decoder is None:  # "deflate" is zlib-wrapped (RFC 9110), but some servers send it raw
                zlib_wrapped = len(raw) < 2 or (raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0)
                self._decoder = zlib.decompressobj(31 if self._encoding != "deflate" else 15 if zlib_wrapped else -15)
            return self._decoder.decompress(raw)
        except zlib.error as exc:
            raise HTTPError(f"the upstream's {self._encoding} body does not decode ({exc})") from None

    def _flush(self) -> bytes:
        if self._decoder is None:
            return b""
        tail = self._decoder.flush()
        if not self._decoder.eof:
            raise HTTPError(f"the upstream's {self._encoding} body is cut short")
        return tail

    async def _next(self) -> bytes | None:
        """The next piece of the raw body, None at its end."""
        conn = self._conn
        if self._done or conn is None:
            return None
        if not self._chunked:
            if self._left is None:  # until the connection closes
                data = await conn.some(1 << 16)
                if not data:
                    self._done = True
                    return None
                return data
            if self._left == 0:
                self._done = True
                return None
            data = await conn.some(min(self._left, 1 << 16))
            if not data:
                raise HTTPError(f"the upstream closed the connection {self._left} bytes before the end of its body")
            self._left -= len(data)
            return data
        if not self._left:  # the start of a chunk: its size line
            line = await conn.until(b"\r\n", 4096, "chunk size line")
            digits = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(digits):
                raise HTTPError(f"the upstream's chunk size line {line[:40]!r} is malformed")
            size = int(digits, 16)
            if size == 0:  # the last chunk: trailers (ignored) up to an empty line
                while await conn.until(b"\r\n", MAX_HEAD, "trailers") != b"\r\n":
                    pass
                self._done = True
                return None
            self._left = size
        data = await conn.some(self._left)
        if not data:
            raise HTTPError("the upstream closed the connection in the middle of a chunk")
        self._left -= len(data)
        if not self._left:
            if await conn.exactly(2) != b"\r\n":
                raise HTTPError("the upstream's chunk does not end with CRLF")
            self._left = None
        return data

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep_alive:
            self._client._put(self._origin, conn)
        else:
            conn.close()


class Client:
    """Keep-alive connections to any number of origins; `post()` sends one request."""

    def __init__(self, user_agent: str = "complexitynet-router") -> None:
        self.user_agent = user_agent
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def request_head(self, url: str, headers: dict[str, str]) -> tuple[tuple[str, str, int], bytes]:
        """(origin, the request's bytes before Content-Length) for POSTs to `url`; computed once per
        URL by the caller. Raises ValueError for a URL that is not http(s)://host[:port]/path."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{url}' is not an http:// or https:// URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = (parts.scheme, port) in (("http", 80), ("https", 443))
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {host if default else f'{host}:{port}'}",
                 f"User-Agent: {self.user_agent}", "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return (parts.scheme, parts.hostname, port), head

    async def post(self, origin: tuple[str, str, int], head: bytes, body: bytes) -> Response:
        """Send head + Content-Length + body; the response once its head has arrived."""
        if self._closed:
            raise HTTPError("the client is closed")
        message = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        if (conn := self._get(origin)) is not None:
            try:
                return await self._exchange(origin, conn, message)
            except _Closed:
                pass  # the server closed it as the request went out; once more, on a new connection
        return await self._exchange(origin, await self._connect(origin), message)

    async def _exchange(self, origin: tuple[str, str, int], conn: Connection, message: bytes) -> Response:
        try:
            conn.received = 0
            conn.transport.write(message)
            while True:
                head = await conn.until(b"\r\n\r\n", MAX_HEAD, "response head")
                status, headers, keep_alive = _parse_head(head)
                if status >= 200:
                    return Response(self, origin, conn, status, headers, keep_alive)
                if status == 101:
                    raise HTTPError("the upstream switched protocols (101), which the router never asks for")
                # an interim 1xx (100 Continue, 103 Early Hints): the real response follows
        except BaseException:
            conn.close()
            raise

    async def _connect(self, origin: tuple[str, str, int]) -> Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        _, conn = await asyncio.get_running_loop().create_connection(
            Connection, host, port, ssl=tls, server_hostname=host if tls else None)
        return conn

    def _get(self, origin: tuple[str, str, int]) -> Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.quiet and time.monotonic() - conn.idle_since < IDLE_S:
                return conn
            conn.close()
        return None

    def _put(self, origin: tuple[str, str, int], conn: Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if self._closed or len(idle) >= MAX_IDLE or not conn.quiet:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """(status, headers with lower-case names, keep-alive) of a response head ending in CRLF CRLF."""
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise HTTPError(f"the upstream did not answer in HTTP/1.x (status line {lines[0][:60]!r})")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HTTPError(f"the upstream sent a malformed header line {line[:60]!r}")
        key, text = name.decode("latin-1").lower(), value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if version == b"HTTP/1.0" and "transfer-encoding" in headers:  # RFC 9112 6.1: faulty framing
        raise HTTPError("the upstream sent Transfer-Encoding in an HTTP/1.0 response")
    connection = {token.strip() for token in headers.get("connection", "").lower().split(",")}
    keep_alive = version == b"HTTP/1.1" and "close" not in connection  # HTTP/1.0 connections are not reused
    return int(code), headers, keep_alive
