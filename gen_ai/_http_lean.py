"""A lean HTTP/1.1 client on asyncio protocols, for the event loops gen_ai owns.

The sync batch methods (``run_chat_completions_batch``, ``run_batch_file``, ... and
``gen-ai batch``) run a private event loop with a private connection pool
(``Client.new_async_transport``). There, every non-streaming request goes through
``LeanAsyncTransport``: keep-alive connections that are ``asyncio.Protocol`` objects, the request
written as one ``bytes``, the response parsed from the buffer (Content-Length, chunked, or until
close; gzip/deflate bodies decoded). aiohttp's ``ClientSession.request`` does much more per call
(tracing signals, cookie jar, multidicts, timers, a ClientResponse object): measured here, a
batch request cost about a third fewer CPU instructions this way (benchmarks/results.md).

Everything else stays on aiohttp (the parent class): streams, proxies (HTTP_PROXY & co. or
``proxy=``), and a transport used from a second event loop. Timeouts, redirect refusal, TLS
settings and error types are the same as ``AsyncTransport``'s. ``GEN_AI_LEAN_HTTP=0`` makes the
private pools plain ``AsyncTransport``s again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ._http import AsyncTransport, _connection_error
from ._speedups import switched_off
from .types import RawResponse, Request

_MAX_HEAD = 65536  # bytes of status line + headers before the response is refused
_MAX_IDLE = 256


def lean_allowed(options: Any) -> bool:
    return not options.uses_proxy and not switched_off("GEN_AI_LEAN_HTTP")


class _Headers(dict):  # type: ignore[type-arg]
    """Response headers: lower-case names, ``get`` case-insensitive (what RawResponse promises)."""

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> Any:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key.lower() if isinstance(key, str) else key)


class _ProtocolError(OSError):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: Any = None
        self.waiter: Any = None  # the future of the response being read
        self.closed = False
        self.buf = bytearray()
        self.received = False  # any byte of the current response
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: _Headers | None = None
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.body_parts: list[bytes] = []
        self.chunk_left = -1  # chunked: bytes left in the current chunk (+2 for its CRLF), -1: a size line

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():  # nothing asked: the server is closing, or broken
            self.closed = True
            self.transport.close()
            return
        self.received = True
        self.buf += data
        try:
            self._parse()
        except _ProtocolError as exc:
            self._fail(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.headers is not None and self.length is None and not self.chunked:
            self._complete(bytes(self.buf))  # a body delimited by the end of the connection
            return
        what = "the server closed the connection" + (" in the middle of the response" if self.received
                                                     else " before answering")
        waiter.set_exception(ConnectionResetError(what if exc is None else f"{what} ({exc})"))

    # -- parsing --------------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self.buf
        while self.headers is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise _ProtocolError(f"the response headers are larger than {_MAX_HEAD} bytes")
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[:end + 4]
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise _ProtocolError(f"not an HTTP response: {lines[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:  # 100 Continue and other interim answers: the real one follows
                continue
            headers = _Headers()
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    continue
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            self.status, self.headers = status, headers
            connection = headers.get("connection", "").lower()
            self.keep_alive = "close" not in connection and (parts[0] != "HTTP/1.0" or "keep-alive" in connection)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.chunked = True
            elif status == 204 or status == 304:
                self.length = 0
            else:
                length = headers.get("content-length")
                if length is not None:
                    try:
                        self.length = int(length.split(",")[0])
                    except ValueError:
                        raise _ProtocolError(f"bad Content-Length {length!r}") from None
                else:
                    self.keep_alive = False  # read until the server closes
        if self.chunked:
            self._parse_chunks()
        elif self.length is not None and len(buf) >= self.length:
            body = bytes(buf[:self.length])
            del buf[:self.length]
            self._complete(body)

    def _parse_chunks(self) -> None:
        buf = self.buf
        while True:
            if self.chunk_left < 0:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:  # the last chunk: then optional trailers and an empty line
                    trailer_end = buf.find(b"\r\n\r\n", end)
                    if buf[end:end + 4] == b"\r\n\r\n" or trailer_end >= 0:
                        stop = end + 4 if buf[end:end + 4] == b"\r\n\r\n" else trailer_end + 4
                        del buf[:stop]
                        self._complete(b"".join(self.body_parts))
                    return
                del buf[:end + 2]
                self.chunk_left = size + 2
            if len(buf) < self.chunk_left:
                return
            self.body_parts.append(bytes(buf[:self.chunk_left - 2]))
            del buf[:self.chunk_left]
            self.chunk_left = -1

    def _complete(self, body: bytes) -> None:
        headers = self.headers
        assert headers is not None
        encoding = headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            import zlib

            try:
                body = zlib.decompress(body, 47)  # gzip or zlib header, detected
            except zlib.error:
                if encoding != "deflate":
                    self._fail(_ProtocolError("the gzip body could not be decoded"))
                    return
                body = zlib.decompress(body, -15)  # raw deflate
        result = (self.status, headers, body, self.keep_alive)
        waiter = self.waiter
        self.waiter = None
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        self.waiter = None
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def _header_line(name: str, value: str) -> bytes:
    """The header's line, CRLF-terminated; a name or value that would end the line early (CR, LF,
    NUL) or a name with a colon or a space is refused, as http.client and aiohttp refuse them."""
    if any(c in name for c in "\r\n\0: \t") or any(c in value for c in "\r\n\0"):
        from .errors import InvalidInputError

        raise InvalidInputError(f"headers: invalid HTTP header {name!r}: names and values cannot hold line breaks",
                                field="headers", suggestion="Remove the CR/LF characters from the header.")
    return f"{name}: {value}\r\n".encode("latin-1")


def _expire(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no complete response within the timeout"))


class LeanAsyncTransport(AsyncTransport):
    """``AsyncTransport`` whose non-streaming requests on the loop it first ran on go through
    ``_Connection``s (see the module docstring); the rest is the parent's aiohttp."""

    def __init__(self, options: Any = None, max_connections: int = 256) -> None:
        super().__init__(options, max_connections)
        self._loop: Any = None
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._open_count = 0
        self._slots: Any = None  # a Semaphore of max_connections, made on the loop
        self._lines: dict[tuple[str, str], bytes] = {}  # (name, value) -> its checked header line

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        """(scheme, host, port) and the request target + Host line, for a URL (cached)."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or "localhost"
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        found = ((scheme, host, port), f" {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1"))
        if len(self._targets) < 64:
            self._targets[url] = found
        return found

    async def send(self, request: Request, timeout: float, follow: bool = True) -> RawResponse:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._slots = asyncio.Semaphore(self._max_connections)
        elif loop is not self._loop:
            return await super().send(request, timeout, follow)
        target = self._targets.get(request.url) or self._target(request.url)
        key, line = target
        if key[0] not in ("http", "https"):
            return await super().send(request, timeout, follow)
        body = request.body or b""
        head = [request.method.encode("latin-1"), line]
        lines = self._lines
        for pair in request.headers.items():
            encoded = lines.get(pair)
            if encoded is None:
                encoded = _header_line(*pair)
                if len(lines) < 256:
                    lines[pair] = encoded
            head.append(encoded)
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        data = b"".join(head) + body
        deadline = loop.time() + timeout
        async with self._slots:
            try:
                conn = await self._connection(key, loop, deadline)
                status, headers, content, keep = await self._exchange(conn, data, loop, deadline)
            except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
                error = _connection_error(exc if isinstance(exc, OSError) else TimeoutError(str(exc) or "timed out"),
                                          request, "sending", self._secrets)
                raise error from None
        if keep and not conn.closed:
            idle = self._idle.setdefault(key, deque())
            if len(idle) < _MAX_IDLE:
                idle.append(conn)
            else:
                conn.transport.close()
        else:
            conn.closed = True
            conn.transport.close()
        response = RawResponse(status, headers, content, request.url, request.method)
        if follow and 300 <= status < 400:
            return await self._redirected(request, response, timeout, False)  # type: ignore[return-value]
        return response

    async def _connection(self, key: tuple[str, str, int], loop: Any, deadline: float) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()  # the most recently used: least likely to have been closed by the server
            if not conn.closed and not conn.transport.is_closing():
                return conn
        scheme, host, port = key
        ssl: Any = None
        if scheme == "https":
            ssl = self._options.ssl_context()
        left = deadline - loop.time()
        connect = min(self._timeout.connect, left) if self._timeout.connect is not None else left
        if connect <= 0:
            raise TimeoutError("no time left to connect")
        conn = _Connection(key)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: conn, host, port, ssl=ssl,
                                                          server_hostname=host if ssl else None), connect)
        except asyncio.TimeoutError:
            raise TimeoutError(f"connecting to {host}:{port} took longer than {connect:.1f} s") from None
        return conn

    async def _exchange(self, conn: _Connection, data: bytes, loop: Any, deadline: float) -> Any:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError("no time left to send the request")
        waiter = conn.waiter = loop.create_future()
        conn.received = False
        conn.buf.clear()
        conn.transport.write(data)
        read = self._timeout.read
        handle = loop.call_later(min(left, read) if read is not None else left, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            conn.waiter = None
            conn.closed = True
            conn.transport.close()
            raise
        finally:
            handle.cancel()

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                conn = idle.pop()
                if conn.transport is not None:
                    conn.transport.close()
        await super().close()
