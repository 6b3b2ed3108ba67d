"""``HTTP1Transport``: a lean httpx transport for plain-HTTP (``http://``) origins, HTTP/1.1
on an asyncio protocol, for the worker's many short and long streams.

httpcore's pool costs more CPU than a one-token reply's whole job (a lock, a pool walk that
polls every idle socket, anyio's stream wrappers and h11's event machine, per request and per
piece read). This transport keeps the part a streamed chat request needs: keep-alive
connections per origin (taken from and given back to a list: no walk), a request written in
one call, the response's headers parsed once, its body read as it comes (``Content-Length``,
``chunked`` or up to the end of the connection). httpx's client stays in front of it:
requests are built, redirects, cookies and content decoding handled, and failures raised as
httpx's own exceptions, so ``errors.py`` classifies them as before.

Guarantees: a connection goes back to the pool only when its response was read to the end
and neither side said ``Connection: close``; one that the server closed while idle is never
handed out (a request that meets one anyway fails before any byte of an answer with
``RemoteProtocolError``, which ``transport.py`` sends again); a request stopped midway
(cancelled, timed out, failed) closes its connection. TLS origins are not served here: they
keep httpcore (HTTP/2 where the provider offers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator

import httpx

MAX_HEAD = 64 * 1024
"""The most bytes a response's status line and headers (or a chunk's size line) may take."""

READ_SIZE = 64 * 1024
HIGH_WATER = 1024 * 1024
"""Bytes received and not read yet at which the socket is no longer read (until they are)."""

KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept (httpcore's default): servers close theirs after a
few seconds (uvicorn after 5), and one they closed is a request's wasted round trip."""


def plain_http_mounts(max_idle: int = 4) -> dict[str, httpx.AsyncBaseTransport]:
    """An ``httpx.AsyncClient``'s ``mounts`` that put ``http://`` origins on this transport
    (httpcore would speak HTTP/1.1 to them too, at about twice the CPU); none when the
    environment names a proxy, which httpx's own transports then go through."""
    if urllib.request.getproxies():
        return {}
    return {"http://": HTTP1Transport(max_idle=max_idle)}


INCOMPLETE = "peer closed connection without sending complete message body"


class _Closed(Exception):
    """The server closed the connection before what was being read (``partial``: what of
    it had come)."""

    def __init__(self, partial: bytes):
        super().__init__("The server closed the connection.")
        self.partial = partial


class _Connection(asyncio.Protocol):
    """One keep-alive connection: what it received and was not read yet, read by one
    request at a time. A read that finds what it needs in the buffer costs no timer; one
    that waits sets one for its timeout."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost: BaseException | None = None  # why the connection went, if it failed
        self.waiter: asyncio.Future | None = None
        self.paused = False  # reading paused: the buffer is full
        self.writable: asyncio.Future | None = None  # while the socket's buffer is full
        self.idle_since = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the connection

    def connection_lost(self, error: BaseException | None) -> None:
        self.eof, self.lost = True, error
        self._wake()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    # -- reading and writing ----------------------------------------------------------
    def usable(self, now: float) -> bool:
        """Still open, nothing unread on it (a server says nothing on an idle connection
        but that it closes), and not idle for too long."""
        return (
            not self.eof
            and not self.buffer
            and not self.transport.is_closing()
            and now - self.idle_since < KEEPALIVE_EXPIRY
        )

    async def write(self, data: bytes, timeout: float | None) -> None:
        self.transport.write(data)
        if self.writable is not None:
            await self._until(self.writable, timeout, httpx.WriteTimeout)
        if self.lost is not None:
            raise self.lost

    async def read_until(self, separator: bytes, timeout: float | None) -> bytes:
        """The bytes up to and including ``separator`` (at most MAX_HEAD of them)."""
        start = 0
        while True:
            found = self.buffer.find(separator, start)
            if found >= 0:
                return self._take(found + len(separator))
            if len(self.buffer) > MAX_HEAD:
                raise httpx.RemoteProtocolError(
                    f"A line of the response is longer than {MAX_HEAD} bytes."
                )
            start = max(len(self.buffer) - len(separator) + 1, 0)
            await self._more(timeout)

    async def read_exactly(self, size: int, timeout: float | None) -> bytes:
        while len(self.buffer) < size:
            await self._more(timeout)
        return self._take(size)

    async def read_some(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes; none at the end of the connection."""
        if not self.buffer and not self.eof:
            await self._more(timeout)
        return self._take(min(size, len(self.buffer)))

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        if self.paused and len(self.buffer) < HIGH_WATER // 2:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def _more(self, timeout: float | None) -> None:
        if self.eof:
            if self.lost is not None:
                raise self.lost
            raise _Closed(bytes(self.buffer))
        if self.paused:  # what is needed is more than the buffer holds
            self.paused = False
            self.transport.resume_reading()
        self.waiter = self.loop.create_future()
        try:
            await self._until(self.waiter, timeout, httpx.ReadTimeout)
        finally:
            self.waiter = None

    async def _until(self, future: asyncio.Future, timeout, error: type[Exception]) -> None:
        if timeout is None:
            await future
            return

        def expire() -> None:
            if not future.done():
                future.set_exception(error(f"No answer within {timeout:g} s."))

        timer = self.loop.call_later(timeout, expire)
        try:
            await future
        finally:
            timer.cancel()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HTTP1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to ``http://`` origins, with up to ``max_idle`` keep-alive connections kept
    per origin (more are opened when more requests run at once)."""

    def __init__(self, max_idle: int = 4):
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"HTTP1Transport serves http:// URLs, not {url.scheme}://.", request=request
            )
        timeouts = request.extensions.get("timeout", {})
        origin = (url.host, url.port or 80)
        body = await request.aread()
        if request.headers.get("transfer-encoding", "").lower() == "chunked":
            body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
        connection = self._take(origin) or await _connect(origin, timeouts, request)
        with _closing_on_error(connection, request, httpx.WriteError):
            await connection.write(_head(request) + body, timeouts.get("write"))
        with _closing_on_error(connection, request, httpx.ReadError):
            status, reason, headers = await _read_head(connection, timeouts.get("read"))
            empty = request.method == "HEAD" or status in (204, 304)
            stream = _ResponseBody(self, origin, connection, request, headers, empty)
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _take(self, origin: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _give_back(self, origin: tuple[str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class _ResponseBody(httpx.AsyncByteStream):
    """A response's body as it is read; the connection goes back to the pool after the last
    byte, or is closed when the body is left unread."""

    def __init__(
        self,
        transport: HTTP1Transport,
        origin: tuple[str, int],
        connection: _Connection,
        request: httpx.Request,
        headers: list[tuple[bytes, bytes]],
        empty: bool,
    ):
        """``empty``: the response has no body, whatever its headers say (HEAD, 204,
        304)."""
        self.transport, self.origin, self.connection = transport, origin, connection
        self.request = request
        self.timeout = request.extensions.get("timeout", {}).get("read")
        self.chunked = not empty and any(
            name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in headers
        )
        self.length = 0 if empty else None if self.chunked else _content_length(headers)
        keep_alive = not _closes(request.headers.get("connection", "").encode()) and not any(
            name.lower() == b"connection" and _closes(value) for name, value in headers
        )
        self.reusable = keep_alive and (self.chunked or self.length is not None)
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _closing_on_error(self.connection, self.request, httpx.ReadError):
            async for piece in self._chunks() if self.chunked else self._sized():
                yield piece
        self.done = True
        if self.reusable:
            self.transport._give_back(self.origin, self.connection)
        else:
            self.connection.close()

    async def _sized(self) -> AsyncIterator[bytes]:
        connection, remaining = self.connection, self.length
        while remaining is None or remaining > 0:
            size = READ_SIZE if remaining is None else min(READ_SIZE, remaining)
            data = await connection.read_some(size, self.timeout)
            if not data:
                if remaining is None:  # the body ends with the connection
                    return
                received = self.length - remaining
                raise httpx.RemoteProtocolError(
                    f"{INCOMPLETE}: received {received} bytes, expected {self.length}"
                )
            if remaining is not None:
                remaining -= len(data)
            yield data

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._read_chunks():
                yield piece
        except _Closed:  # said as httpcore (h11) says it
            raise httpx.RemoteProtocolError(f"{INCOMPLETE} (incomplete chunked read)") from None

    async def _read_chunks(self) -> AsyncIterator[bytes]:
        connection = self.connection
        while True:
            line = await connection.read_until(b"\r\n", self.timeout)
            size_field = line.split(b";", 1)[0].strip()
            if not size_field or size_field.strip(b"0123456789abcdefABCDEF"):
                raise httpx.RemoteProtocolError(f"Malformed chunk size line {line[:40]!r}.")
            size = int(size_field, 16)
            if size == 0:  # the last chunk; then trailer fields (dropped) and an empty line
                while await connection.read_until(b"\r\n", self.timeout) != b"\r\n":
                    pass
                return
            while size:  # read as it comes, however large the chunk
                data = await connection.read_some(min(size, READ_SIZE), self.timeout)
                if not data:
                    raise _Closed(b"")
                size -= len(data)
                yield data
            if await connection.read_exactly(2, self.timeout) != b"\r\n":
                raise httpx.RemoteProtocolError("A chunk is longer than its size line says.")

    async def aclose(self) -> None:
        if not self.done:
            self.done = True
            self.connection.close()


def _head(request: httpx.Request) -> bytes:
    """The request line and headers (httpx's client set Host, Content-Length and the
    others)."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [b"%s: %s" % (name, value) for name, value in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _connect(origin: tuple[str, int], timeouts: dict, request: httpx.Request):
    loop = asyncio.get_running_loop()
    seconds = timeouts.get("connect")
    try:
        async with asyncio.timeout(seconds):
            _, connection = await loop.create_connection(_Connection, *origin)
    except TimeoutError:
        raise httpx.ConnectTimeout(
            f"No connection within {seconds:g} s.", request=request
        ) from None
    except OSError as error:
        raise httpx.ConnectError(str(error), request=request) from error
    return connection


async def _read_head(connection: _Connection, timeout: float | None):
    """The response's status, reason and headers (informational responses skipped)."""
    while True:
        try:
            raw = await connection.read_until(b"\r\n\r\n", timeout)
        except _Closed as closed:
            if closed.partial:
                raise httpx.RemoteProtocolError(
                    "The server closed the connection in the middle of the response's headers."
                ) from None
            # A keep-alive connection the server closed: the request is sent again.
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response."
            ) from None
        status_line, *header_lines = raw[:-4].split(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or not code.isdigit() or len(code) != 3:
            raise httpx.RemoteProtocolError(f"Malformed status line {status_line[:60]!r}.")
        headers = []
        for line in header_lines:
            name, separator, value = line.partition(b":")
            if not separator or not name or name != name.strip():
                raise httpx.RemoteProtocolError(f"Malformed header line {line[:60]!r}.")
            headers.append((name, value.strip()))
        status = int(code)
        if 100 <= status < 200 and status != 101:
            continue
        if version == b"HTTP/1.0":
            headers.append((b"Connection", b"close"))  # no keep-alive with 1.0 servers here
        return status, reason, headers


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    values = {value for name, value in headers if name.lower() == b"content-length"}
    if not values:
        return None
    value = values.pop()
    if values or not value.isdigit():
        raise httpx.RemoteProtocolError(f"Malformed Content-Length {value[:40]!r}.")
    return int(value)


def _closes(value: bytes) -> bool:
    return b"close" in value.lower()


@contextlib.contextmanager
def _closing_on_error(
    connection: _Connection, request: httpx.Request, kind: type[httpx.TransportError]
):
    """Close ``connection`` when the block fails or is stopped (cancelled), and raise what
    failed as httpx raises it (its own errors given ``request``; the socket's as ``kind``)."""
    try:
        yield
    except BaseException as error:
        connection.close()
        if isinstance(error, httpx.RequestError):
            error.request = request
            raise
        if not isinstance(error, Exception):  # cancelled, or the generator closed
            raise
        if isinstance(error, _Closed):
            message = "The server closed the connection before the end of the response."
            raise httpx.RemoteProtocolError(message, request=request) from error
        raise kind(f"{type(error).__name__}: {error}", request=request) from error
