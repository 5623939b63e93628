"""The only module that touches sockets: a sync transport and an async transport.

Both expose the same two operations, used by the call flow in ``_core``:

    send(request, timeout)         -> RawResponse (body read completely)
    open_stream(request, timeout)  -> StreamResponse (2xx, body unread) or RawResponse (error status)

Measured on the project's machines (see benchmarks/): raw ``http.client`` does about 2.5x the
sequential calls per second of ``httpx.Client``, and ``aiohttp`` about 15x ``httpx.AsyncClient``
at concurrency 256. So the sync transport is a small thread-safe keep-alive pool over
``http.client`` and the async one is ``aiohttp``. Both are imported on first use, not at
``import gen_ai``. Socket errors become ``APIConnectionError`` / ``APITimeoutError`` here, so
everything above this module sees only gen_ai errors.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .errors import APIConnectionError, APITimeoutError
from .types import RawResponse, Request

_USER_AGENT = "gen_ai/0.1"
_CHUNK = 65536


class Timeouts:
    """Connect timeout and read (idle) timeout of a client, in seconds.

    ``read=None`` means each call's own ``timeout`` bounds the reads as well.
    """

    __slots__ = ("connect", "read")

    def __init__(self, connect: float = 10.0, read: float | None = None) -> None:
        self.connect = connect
        self.read = read

    @classmethod
    def from_option(cls, value: Any) -> "Timeouts":
        from .errors import ConfigurationError

        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return cls(connect=min(10.0, float(value)), read=float(value))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            connect, read = value
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
                return cls(float(connect), float(read))
        raise ConfigurationError(
            f"timeout={value!r} is not valid",
            suggestion="Pass seconds as a positive number, or a (connect, read) pair of positive numbers.",
            field="timeout",
        )


def _connection_error(exc: BaseException, request: Request, during: str) -> APIConnectionError:
    cls = APITimeoutError if isinstance(exc, TimeoutError) else APIConnectionError
    what = type(exc).__name__
    detail = str(exc) or what
    return cls(
        f"{'Timed out' if cls is APITimeoutError else 'Connection failed'} while {during} "
        f"{request.method} {request.url}: {detail}",
        url=request.url,
        method=request.method,
    )


# --------------------------------------------------------------------------------------------
# Sync transport: a keep-alive pool over http.client
# --------------------------------------------------------------------------------------------


class SyncTransport:
    """A thread-safe pool of keep-alive ``http.client`` connections, per host."""

    def __init__(self, timeouts: Timeouts, max_idle: int = 16) -> None:
        self._timeouts = timeouts
        self._max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[Any]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._targets: dict[str, tuple[tuple[str, str, int], str]] = {}

    # -- connection pool ------------------------------------------------------------------

    def _target(self, url: str) -> tuple[tuple[str, str, int], str]:
        # Cache of url -> (pool key, request path); a client talks to few distinct URLs.
        cached = self._targets.get(url)
        if cached is not None:
            return cached
        from urllib.parse import urlsplit  # once per distinct URL; ~3 ms off `import gen_ai`

        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or "localhost"
        port = parts.port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        target = ((scheme, host, port), path)
        if len(self._targets) < 256:
            self._targets[url] = target
        return target

    def _checkout(self, key: tuple[str, str, int]) -> tuple[Any, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        import http.client

        scheme, host, port = key
        if scheme == "https":
            import ssl

            conn: Any = http.client.HTTPSConnection(
                host, port, timeout=self._timeouts.connect, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeouts.connect)
        return conn, False

    def _checkin(self, key: tuple[str, str, int], conn: Any) -> None:
        with self._lock:
            if not self._closed:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self._max_idle:
                    idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools = list(self._idle.values())
            self._idle.clear()
        for idle in pools:
            for conn in idle:
                conn.close()

    # -- requests -------------------------------------------------------------------------

    def _start(self, request: Request, timeout: float) -> tuple[Any, Any, tuple[str, str, int]]:
        """Send the request and read the status line and headers; return (conn, response, key)."""
        key, path = self._target(request.url)
        headers = request.headers
        read_timeout = self._timeouts.read if self._timeouts.read is not None else timeout
        read_timeout = min(read_timeout, timeout) if not request.stream else read_timeout
        for _ in range(2):
            conn, reused = self._checkout(key)
            try:
                if conn.sock is None:
                    conn.connect()
                conn.sock.settimeout(read_timeout)
                conn.request(request.method, path, body=request.body, headers=headers)
                return conn, conn.getresponse(), key
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
                conn.close()
                if not reused:
                    raise _connection_error(exc, request, "sending") from None
            except Exception as exc:
                conn.close()
                import http.client

                # A keep-alive connection the server closed while idle: try once on a fresh one.
                if reused and isinstance(exc, http.client.RemoteDisconnected):
                    continue
                if isinstance(exc, (OSError, http.client.HTTPException)):
                    raise _connection_error(exc, request, "sending") from None
                raise
        raise APIConnectionError(  # pragma: no cover - the loop returns or raises
            f"Connection failed: {request.method} {request.url}", url=request.url, method=request.method
        )

    def send(self, request: Request, timeout: float) -> RawResponse:
        conn, resp, key = self._start(request, timeout)
        try:
            body = resp.read()
        except (OSError, Exception) as exc:
            conn.close()
            raise _connection_error(exc, request, "reading the response of") from None
        if resp.will_close:
            conn.close()
        else:
            self._checkin(key, conn)
        return RawResponse(resp.status, resp.headers, body, request.url, request.method)

    def open_stream(self, request: Request, timeout: float) -> "SyncStreamResponse | RawResponse":
        conn, resp, key = self._start(request, timeout)
        if resp.status >= 300:
            try:
                body = resp.read()
            except Exception:
                body = b""
            conn.close()
            return RawResponse(resp.status, resp.headers, body, request.url, request.method)
        return SyncStreamResponse(self, conn, resp, key, request)


class SyncStreamResponse:
    """A 2xx streaming response; iterate ``iter_bytes()`` then ``close()``."""

    def __init__(self, transport: SyncTransport, conn: Any, resp: Any, key: Any, request: Request) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.url = request.url
        self.method = request.method
        self._transport = transport
        self._conn = conn
        self._resp = resp
        self._key = key
        self._request = request
        self._done = False

    def iter_bytes(self) -> Iterator[bytes]:
        read = self._resp.read1
        try:
            while True:
                chunk = read(_CHUNK)
                if not chunk:
                    # read1 leaves a fully read Content-Length body "open" (CPython only closes it
                    # on a read past the end), and the next request on this pooled connection
                    # would then fail with ResponseNotReady: mark the response finished.
                    self._resp.close()
                    self._done = True
                    return
                yield chunk
        except GeneratorExit:
            raise
        except Exception as exc:
            self._conn.close()
            raise _connection_error(exc, self._request, "reading the stream of") from None

    def close(self) -> None:
        if self._done and not self._resp.will_close:
            self._transport._checkin(self._key, self._conn)
        else:
            self._conn.close()
        self._done = True


# --------------------------------------------------------------------------------------------
# Async transport: aiohttp
# --------------------------------------------------------------------------------------------


def _async_error(exc: BaseException, request: Request, during: str) -> APIConnectionError | None:
    """The gen_ai error for an aiohttp/socket failure, or None for anything else (re-raised as is).

    The imports live here, on the failure path, not in every call's hot path.
    """
    import asyncio

    import aiohttp

    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return _connection_error(TimeoutError(str(exc) or "timed out"), request, during)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return _connection_error(exc, request, during)
    return None


class AsyncTransport:
    """One ``aiohttp.ClientSession`` per event loop, created on first use."""

    def __init__(self, timeouts: Timeouts, max_connections: int = 256) -> None:
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._session: Any = None
        self._loop: Any = None
        self._timeout_cache: dict[tuple[float | None, bool], Any] = {}

    def _get_session(self) -> Any:
        from asyncio import get_running_loop  # a sys.modules lookup after the first call

        loop = get_running_loop()
        session = self._session
        if session is not None and self._loop is loop and not session.closed:
            return session
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent",), auto_decompress=True
        )
        self._loop = loop
        self._timeout_cache.clear()
        return self._session

    def set_max_connections(self, value: int) -> None:
        """Size the pool before the first async call (the batch API sizes it to max_concurrent)."""
        if self._session is None and value > self._max_connections:
            self._max_connections = value

    def _client_timeout(self, timeout: float, stream: bool) -> Any:
        # The flow passes the time left before the call's deadline, a new float almost every call:
        # rounded to 0.1 s the first attempt of every call hits the cache.
        timeout = max(0.1, round(timeout, 1))
        key = (timeout, stream)
        cached = self._timeout_cache.get(key)
        if cached is None:
            import aiohttp

            read = self._timeouts.read if self._timeouts.read is not None else timeout
            if stream:  # a stream is bounded by its idle time between reads, not its total
                cached = aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect, sock_read=read)
            else:
                # sock_read only when it is tighter than the total: aiohttp re-arms a timer on every
                # received chunk for it, which cost about 15% of async throughput (benchmarks/).
                cached = aiohttp.ClientTimeout(
                    total=timeout, sock_connect=self._timeouts.connect, sock_read=read if read < timeout else None
                )
            # Bounded: retries ask for odd remainders, which must not grow the cache forever.
            if len(self._timeout_cache) < 32:
                self._timeout_cache[key] = cached
        return cached

    async def _start(self, request: Request, timeout: float) -> Any:
        session = self._get_session()
        try:
            return await session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=self._client_timeout(timeout, request.stream),
            )
        except Exception as exc:
            error = _async_error(exc, request, "sending")
            if error is None:
                raise
            raise error from None

    async def send(self, request: Request, timeout: float) -> RawResponse:
        resp = await self._start(request, timeout)
        try:
            body = await resp.read()
        except Exception as exc:
            error = _async_error(exc, request, "reading the response of")
            if error is None:
                raise
            resp.close()
            raise error from None
        resp.release()
        return RawResponse(resp.status, resp.headers, body, request.url, request.method)

    async def open_stream(self, request: Request, timeout: float) -> "AsyncStreamResponse | RawResponse":
        resp = await self._start(request, timeout)
        if resp.status >= 300:
            try:
                body = await resp.read()
            except Exception:
                body = b""
            resp.release()
            return RawResponse(resp.status, resp.headers, body, request.url, request.method)
        return AsyncStreamResponse(resp, request)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class AsyncStreamResponse:
    def __init__(self, resp: Any, request: Request) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.url = request.url
        self.method = request.method
        self._resp = resp
        self._request = request

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        import asyncio

        import aiohttp

        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise _connection_error(TimeoutError(str(exc) or "timed out"), self._request,
                                    "reading the stream of") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _connection_error(exc, self._request, "reading the stream of") from None

    def close(self) -> None:
        self._resp.release()
