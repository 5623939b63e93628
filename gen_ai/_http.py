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

The network policies (timeouts, redirects, proxies, TLS) are decided once, in
``_http_policy.HTTPOptions``, and both transports apply them the same way (docs/security.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

from ._http_policy import HTTPOptions, Timeout, Timeouts, _options, _Proxy
from .errors import APIConnectionError, APITimeoutError
from .types import RawResponse, Request

__all__ = ["AsyncTransport", "HTTPOptions", "SyncTransport", "Timeout", "Timeouts"]

logger = logging.getLogger("gen_ai")

_USER_AGENT = "gen_ai/0.1"
_CHUNK = 65536


def _connection_error(exc: BaseException, request: Request, during: str,
                      secrets: tuple[str, ...] = ()) -> APIConnectionError:
    cls = APITimeoutError if isinstance(exc, TimeoutError) else APIConnectionError
    what = type(exc).__name__
    detail = str(exc) or what
    error = cls(
        f"{'Timed out' if cls is APITimeoutError else 'Connection failed'} while {during} "
        f"{request.method} {request.url}: {detail}",
        url=request.url,
        method=request.method,
    )
    if detail.startswith("Tunnel connection failed") or what == "ClientHttpProxyError":
        # The proxy refused the CONNECT (http.client / aiohttp): wrong proxy credentials or a
        # target the proxy does not allow; sending again will not help.
        error.retryable = False
        error.suggestion = ("The proxy refused the connection: check the credentials in proxy= or "
                            "HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, and that the proxy allows this host.")
    if secrets:
        error.redact(secrets)
    return error


# --------------------------------------------------------------------------------------------
# Sync transport: a keep-alive pool over http.client
# --------------------------------------------------------------------------------------------

# The pool's http.client connection classes (see _connection_classes), made on first use.
_CONNECTIONS: tuple[Any, Any] | None = None


def _connection_classes() -> tuple[Any, Any]:
    """(HTTPConnection, HTTPSConnection) subclasses that read a response's header block without
    the email package (``http.client.parse_headers`` costs about a third of a small call) and
    validate each distinct request header once rather than on every request. Both produce the
    same ``HTTPMessage`` and the same bytes on the wire as http.client; anything out of the
    ordinary (folded or odd header lines, multipart or message content types) takes http.client's
    own code."""
    global _CONNECTIONS
    if _CONNECTIONS is not None:
        return _CONNECTIONS
    import email.parser
    import http.client
    import re

    base = http.client.HTTPResponse
    read_headers: Any = getattr(http.client, "_read_headers", None)
    message_class = http.client.HTTPMessage
    # Header lines the email parser reads as exactly "name: value": a name of the characters
    # it accepts, a value without the characters str.splitlines() breaks on (it splits the block
    # there), then CRLF or LF; and the blank line that ends the block.
    simple_block = re.compile(rb"(?:[!-9;-~]+:[\t\x20-\x7e\x80-\x84\x86-\xff]*\r?\n)*\r?\n").fullmatch

    def parse_headers(fp: Any) -> tuple[Any, dict[str, str]]:
        """http.client.parse_headers(fp), and the first value of each header (lower-case names)."""
        lines = read_headers(fp)
        block = b"".join(lines)
        first: dict[str, str] = {}
        if simple_block(block) is not None:
            message = message_class()
            for line in lines[:-1]:
                name, _, value = line.decode("iso-8859-1").partition(":")
                value = value.lstrip(" \t").rstrip("\r\n")
                message.set_raw(name, value)
                lower = name.lower()
                if lower not in first:
                    first[lower] = value
            kind = first.get("content-type", "").lower()
            if not kind.startswith(("multipart/", "message/")):
                message.set_payload("")
                return message, first
        message = email.parser.Parser(_class=message_class).parsestr(block.decode("iso-8859-1"))
        for name, value in message.items():
            first.setdefault(name.lower(), value)
        return message, first

    class Response(base):  # type: ignore[misc, valid-type]
        """http.client.HTTPResponse with the header block read by ``parse_headers`` above; the
        rest of ``begin`` is CPython's, step by step."""

        def begin(self) -> None:
            if self.headers is not None:  # type: ignore[has-type]
                return
            while True:
                version, status, reason = self._read_status()
                if status != http.client.CONTINUE:
                    break
                read_headers(self.fp)  # the header block of the 100 response
            self.code = self.status = status
            self.reason = reason.strip()
            if version in ("HTTP/1.0", "HTTP/0.9"):
                self.version = 10
            elif version.startswith("HTTP/1."):
                self.version = 11
            else:
                raise http.client.UnknownProtocol(version)
            headers, first = parse_headers(self.fp)
            self.headers = self.msg = headers
            get = first.get
            transfer = get("transfer-encoding")
            if transfer and transfer.lower() == "chunked":
                self.chunked = True
                self.chunk_left = None
            else:
                self.chunked = False
            # _check_close()
            connection = get("connection")
            if self.version == 11:
                self.will_close = bool(connection and "close" in connection.lower())
            else:
                proxy_connection = get("proxy-connection")
                self.will_close = not (get("keep-alive") or (connection and "keep-alive" in connection.lower())
                                       or (proxy_connection and "keep-alive" in proxy_connection.lower()))
            self.length = None
            length = get("content-length")
            if length and not self.chunked:
                try:
                    self.length = int(length)
                except ValueError:
                    self.length = None
                else:
                    if self.length < 0:
                        self.length = None
            if status == http.client.NO_CONTENT or status == http.client.NOT_MODIFIED or 100 <= status < 200 \
                    or self._method == "HEAD":
                self.length = 0
            if not self.will_close and not self.chunked and self.length is None:
                self.will_close = True

    started = getattr(http.client, "_CS_REQ_STARTED", None)
    # Only where http.client has the two names used below (every CPython since 3.0).
    remember = started is not None and hasattr(http.client.HTTPConnection, "_output")

    class Headers:
        """``putheader`` that checks a (name, value) pair the first time a connection sends it,
        then sends the line http.client built for it. Kept per connection (credentials go when it
        closes), at most 64 lines."""

        _lines: dict[tuple[str, str], bytes] | None = None

        def putheader(self, header: Any, *values: Any) -> None:
            if remember and len(values) == 1 and type(header) is str and type(values[0]) is str \
                    and getattr(self, "_HTTPConnection__state", started) == started:
                value = values[0]
                lines = self._lines
                if lines is None:
                    lines = self._lines = {}
                line = lines.get((header, value))
                if line is not None:
                    self._output(line)  # type: ignore[attr-defined]
                    return
                if header == "Content-Length" and value.isdigit() and value.isascii():
                    # (a new value almost every request: sent, not kept)
                    self._output(b"Content-Length: " + value.encode("ascii"))  # type: ignore[attr-defined]
                    return
                super().putheader(header, value)  # type: ignore[misc]  # checks it; raises on a bad one
                if len(lines) < 64:
                    lines[(header, value)] = header.encode("ascii") + b": " + value.encode("latin-1")
                return
            super().putheader(header, *values)  # type: ignore[misc]

    if read_headers is None:  # an http.client without the helper: its own classes
        response_class = base
    else:
        response_class = Response

    class Connection(Headers, http.client.HTTPConnection):
        pass

    class TLSConnection(Headers, http.client.HTTPSConnection):
        pass

    Connection.response_class = response_class
    TLSConnection.response_class = response_class
    Response.parse_headers = staticmethod(parse_headers)  # (tests compare it with http.client's)
    classes = _CONNECTIONS = (Connection, TLSConnection)
    return classes



class SyncTransport:
    """A thread-safe pool of keep-alive ``http.client`` connections, per host."""

    def __init__(self, options: Any = None, max_idle: int = 16) -> None:
        self._options = options = _options(options)
        self._timeout = options.timeout
        self._secrets = options.secrets()
        self._max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[Any]] = {}
        self._lock = threading.Lock()
        self._closed = False
        # url -> (pool key, request target, proxy or None)
        self._targets: dict[str, tuple[tuple[str, str, int], str, _Proxy | None]] = {}

    @property
    def _timeouts(self) -> HTTPOptions:  # what batch copies to build a private transport
        return self._options

    # -- connection pool ------------------------------------------------------------------

    def _target(self, url: str) -> tuple[tuple[str, str, int], str, _Proxy | None]:
        # Cache of url -> (pool key, request target, proxy); a client talks to few distinct URLs.
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
        proxy = self._options.proxy_for(scheme, host, port) if self._options.uses_proxy else None  # once per URL
        if proxy is not None and scheme == "http":
            path = url.split("#", 1)[0]  # an http proxy wants the absolute URL
        target = ((scheme, host, port), path, proxy)
        if len(self._targets) < 256:
            self._targets[url] = target
        return target

    def _checkout(self, key: tuple[str, str, int], proxy: _Proxy | None) -> tuple[Any, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        http_connection, https_connection = _connection_classes()
        scheme, host, port = key
        connect = self._timeout.connect
        if proxy is None:
            if scheme == "https":
                conn: Any = https_connection(host, port, timeout=connect, context=self._options.ssl_context())
            else:
                conn = http_connection(host, port, timeout=connect)
        elif scheme == "https":
            # CONNECT tunnel through the proxy; TLS (SNI, certificate check) is with the target.
            conn = https_connection(proxy.host, proxy.port, timeout=connect, context=self._options.ssl_context())
            conn.set_tunnel(host, port, headers={"Proxy-Authorization": proxy.auth} if proxy.auth else None)
        else:
            conn = http_connection(proxy.host, proxy.port, timeout=connect)
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
        target = self._targets.get(request.url)
        key, path, proxy = target if target is not None else self._target(request.url)
        headers = request.headers
        if proxy is not None and proxy.auth is not None and key[0] == "http":
            headers = {**headers, "Proxy-Authorization": proxy.auth}
        read = self._timeout.read
        # Every wait is bounded by the time left before the call's deadline.
        wait = timeout if read is None or read > timeout else read
        for _ in range(2):
            conn, reused = self._checkout(key, proxy)
            try:
                if conn.sock is None:
                    if conn.timeout > timeout:
                        conn.timeout = timeout
                    conn.connect()
                conn.sock.settimeout(wait)
                conn.request(request.method, path, body=request.body, headers=headers)
                return conn, conn.getresponse(), key
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
                conn.close()
                if not reused:
                    raise _connection_error(exc, request, "sending", self._secrets) from None
            except Exception as exc:
                conn.close()
                import http.client

                # A keep-alive connection the server closed while idle: try once on a fresh one.
                if reused and isinstance(exc, http.client.RemoteDisconnected):
                    continue
                if isinstance(exc, (OSError, http.client.HTTPException)):
                    raise _connection_error(exc, request, "sending", self._secrets) from None
                raise
        raise APIConnectionError(  # pragma: no cover - the loop returns or raises
            f"Connection failed: {request.method} {request.url}", url=request.url, method=request.method
        )

    def send(self, request: Request, timeout: float, follow: bool = True) -> RawResponse:
        """The request's complete response; a 3xx is followed as the policy says unless
        ``follow`` is False (``_redirected``'s own hops)."""
        conn, resp, key = self._start(request, timeout)
        try:
            body = resp.read()
        except (OSError, Exception) as exc:
            conn.close()
            raise _connection_error(exc, request, "reading the response of", self._secrets) from None
        if resp.will_close:
            conn.close()
        else:
            self._checkin(key, conn)
        response = RawResponse(resp.status, resp.headers, body, request.url, request.method)
        if follow and 300 <= response.status < 400:
            return self._redirected(request, response, timeout, False)  # type: ignore[return-value]
        return response

    def _open(self, request: Request, timeout: float) -> "SyncStreamResponse | RawResponse":
        conn, resp, key = self._start(request, timeout)
        if resp.status >= 300:
            try:
                body = resp.read()
            except Exception:
                body = b""
            conn.close()
            return RawResponse(resp.status, resp.headers, body, request.url, request.method)
        read = self._timeout.read
        if read is not None and read > timeout:  # open within the deadline, then idle timeout
            # (a Connection: close response has taken the socket off conn: set it on the response's)
            sock = conn.sock if conn.sock is not None else getattr(getattr(resp.fp, "raw", None), "_sock", None)
            if sock is not None:
                sock.settimeout(read)
        return SyncStreamResponse(self, conn, resp, key, request, self._secrets)

    def open_stream(self, request: Request, timeout: float) -> "SyncStreamResponse | RawResponse":
        response = self._open(request, timeout)
        if type(response) is RawResponse and 300 <= response.status < 400:
            return self._redirected(request, response, timeout, True)
        return response

    def _redirected(self, request: Request, response: RawResponse, timeout: float,
                    stream: bool) -> "SyncStreamResponse | RawResponse":
        import time

        deadline = time.monotonic() + timeout
        hops = 0
        while True:
            following = self._options.redirect(request, response.status, response.headers, hops)
            if following is None:
                return response
            hops += 1
            request = following
            left = deadline - time.monotonic()
            if left <= 0:
                raise APITimeoutError(f"Timed out following redirects to {request.url}", url=request.url,
                                      method=request.method)
            opened = self._open(request, left) if stream else self.send(request, left, False)
            if type(opened) is not RawResponse or not 300 <= opened.status < 400:
                return opened
            response = opened


class SyncStreamResponse:
    """A 2xx streaming response; iterate ``iter_bytes()`` then ``close()``."""

    def __init__(self, transport: SyncTransport, conn: Any, resp: Any, key: Any, request: Request,
                 secrets: tuple[str, ...] = ()) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.url = request.url
        self.method = request.method
        self._transport = transport
        self._conn = conn
        self._resp = resp
        self._key = key
        self._request = request
        self._secrets = secrets
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
            raise _connection_error(exc, self._request, "reading the stream of", self._secrets) from None

    def close(self) -> None:
        if self._done and not self._resp.will_close:
            self._transport._checkin(self._key, self._conn)
        else:
            self._conn.close()
        self._done = True


# --------------------------------------------------------------------------------------------
# Async transport: aiohttp, one session per event loop, closed with its loop
# --------------------------------------------------------------------------------------------


def _async_error(exc: BaseException, request: Request, during: str,
                 secrets: tuple[str, ...] = ()) -> APIConnectionError | None:
    """The gen_ai error for an aiohttp/socket failure, or None for anything else (re-raised as is).

    The imports live here, on the failure path, not in every call's hot path.
    """
    import asyncio

    import aiohttp

    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return _connection_error(TimeoutError(str(exc) or "timed out"), request, during, secrets)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return _connection_error(exc, request, during, secrets)
    return None


async def _close_with_loop(sessions: dict[Any, Any], lock: Any, loop: Any,
                           session: Any) -> AsyncGenerator[None, None]:
    """Closes ``session`` when its event loop shuts down.

    An async generator started inside the loop is registered with it, and ``asyncio.run`` (like
    every well-behaved runner) calls ``loop.shutdown_asyncgens()`` before closing the loop: this
    ``finally`` then runs, inside the loop, while the session can still be closed cleanly. It
    holds the transport's session table, not the transport, so a dropped client is still freed.
    """
    try:
        yield
    finally:
        _forget(sessions, lock, loop, session)
        if not session.closed:
            await session.close()


def _forget(sessions: dict[Any, Any], lock: Any, loop: Any, session: Any) -> None:
    with lock:
        entry = sessions.get(loop)
        if entry is not None and entry[0] is session:
            del sessions[loop]


def _close_sessions(sessions: dict[Any, Any], lock: Any, timeout: float = 5.0) -> None:
    """Close every session of a table from sync code, whatever state its loop is in: the
    ``Client.close()`` path, and the finalizer that runs when a transport is dropped or the
    interpreter exits (a notebook's loop never ends, so no guard would run)."""
    with lock:
        entries = list(sessions.items())
        sessions.clear()
    if not entries:  # no async call was ever made: nothing to close, asyncio not needed
        return
    import asyncio

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, (session, _guard) in entries:
        if session.closed or loop.is_closed():
            continue
        try:
            if running is not None and loop is running:  # called from a coroutine (a notebook cell): schedule the close
                task = loop.create_task(session.close())
                _PENDING.add(task)
                task.add_done_callback(_PENDING.discard)
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout)
            else:
                loop.run_until_complete(session.close())
        except Exception as exc:  # closing must not raise; the loop may be going away
            logger.debug("gen_ai: closing an aiohttp session failed: %r", exc)


_PENDING: set[Any] = set()


# asyncio.get_running_loop, bound by the first async request. A `from asyncio import ...` in the
# request path ran importlib's _handle_fromlist (a Python frame) on every request.
_get_running_loop: Any = None


class AsyncTransport:
    """``aiohttp.ClientSession``s, one per event loop, each closed with its loop (see
    ``_close_with_loop``), by ``close()`` / ``close_sync()``, when the transport is dropped, or
    at interpreter exit."""

    def __init__(self, options: Any = None, max_connections: int = 256) -> None:
        import weakref

        self._options = options = _options(options)
        self._timeout = options.timeout
        self._secrets = options.secrets()
        self._max_connections = max_connections
        # (loop, session) of the last loop used: the hot path is one tuple read and two checks.
        self._current: tuple[Any, Any] = (None, None)
        self._sessions: dict[Any, tuple[Any, Any]] = {}  # loop -> (session, guard)
        self._lock = threading.Lock()
        self._timeout_cache: dict[tuple[float, bool], Any] = {}
        self._uses_proxy = options.uses_proxy
        # Runs when the transport is garbage collected, or at exit if it is still alive.
        self._finalizer = weakref.finalize(self, _close_sessions, self._sessions, self._lock, 1.0)

    @property
    def _timeouts(self) -> HTTPOptions:  # what batch copies to build a private transport
        return self._options

    @property
    def _session(self) -> Any:  # the session of the last loop used (tests, introspection)
        return self._current[1]

    async def _open_session(self, loop: Any) -> Any:
        with self._lock:
            entry = self._sessions.get(loop)
        if entry is not None and not entry[0].closed:
            self._current = (loop, entry[0])
            return entry[0]
        import aiohttp

        options = self._options
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300,
                                         ssl=options._ssl if options._custom_tls else True)
        session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",),
                                        auto_decompress=True)
        guard = _close_with_loop(self._sessions, self._lock, loop, session)
        with self._lock:
            self._sessions[loop] = (session, guard)
        self._current = (loop, session)
        await guard.asend(None)  # runs to its yield without suspending: now the loop knows it
        return session

    def set_max_connections(self, value: int) -> None:
        """Size the pool before the first async call (the batch API sizes it to max_concurrent)."""
        if not self._sessions and value > self._max_connections:
            self._max_connections = value

    def _client_timeout(self, timeout: float, stream: bool) -> Any:
        # The flow passes the time left before the call's deadline, a new float almost every call:
        # rounded to 0.1 s the first attempt of every call hits the cache.
        timeout = max(0.1, round(timeout, 1))
        key = (timeout, stream)
        cached = self._timeout_cache.get(key)
        if cached is None:
            import aiohttp

            t = self._timeout
            connect = min(t.connect, timeout)
            read = t.read if t.read is not None else timeout
            if stream:  # a stream is bounded by its idle time between reads, not its total ...
                # ... once open: the wait for its headers stays within the deadline (see _open)
                cached = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=min(read, timeout))
            else:
                # sock_read only when it is tighter than the total: aiohttp re-arms a timer on every
                # received chunk for it, which cost about 15% of async throughput (benchmarks/).
                cached = aiohttp.ClientTimeout(total=timeout, sock_connect=connect,
                                               sock_read=read if read < timeout else None)
            # Bounded: retries ask for odd remainders, which must not grow the cache forever.
            if len(self._timeout_cache) < 32:
                self._timeout_cache[key] = cached
        return cached

    async def _start(self, request: Request, timeout: float) -> Any:
        global _get_running_loop
        get_loop = _get_running_loop
        if get_loop is None:  # the first async request: asyncio is not imported with gen_ai
            from asyncio import get_running_loop as get_loop

            _get_running_loop = get_loop
        loop = get_loop()
        current_loop, session = self._current
        if current_loop is not loop or session.closed:
            session = await self._open_session(loop)
        try:
            if not self._uses_proxy:
                return await session.request(request.method, request.url, data=request.body,
                                             headers=request.headers, allow_redirects=False,
                                             timeout=self._client_timeout(timeout, request.stream))
            return await self._start_proxied(session, request, timeout)
        except Exception as exc:
            error = _async_error(exc, request, "sending", self._secrets)
            if error is None:
                raise
            raise error from None

    async def _start_proxied(self, session: Any, request: Request, timeout: float) -> Any:
        from urllib.parse import urlsplit

        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        proxy = self._options.proxy_for(scheme, parts.hostname or "localhost",
                                        parts.port or (443 if scheme == "https" else 80))
        kwargs: dict[str, Any] = {}
        headers = request.headers
        if proxy is not None:
            kwargs["proxy"] = proxy.url
            if proxy.auth is not None:
                if scheme == "https":  # sent on the CONNECT only, never to the target
                    kwargs["proxy_headers"] = {"Proxy-Authorization": proxy.auth}
                else:  # a plain-http request goes to the proxy itself
                    headers = {**headers, "Proxy-Authorization": proxy.auth}
        return await session.request(request.method, request.url, data=request.body, headers=headers,
                                     allow_redirects=False, timeout=self._client_timeout(timeout, request.stream),
                                     **kwargs)

    async def send(self, request: Request, timeout: float, follow: bool = True) -> RawResponse:
        """The request's complete response; a 3xx is followed as the policy says unless
        ``follow`` is False (``_redirected``'s own hops)."""
        resp = await self._start(request, timeout)
        try:
            body = await resp.read()
        except Exception as exc:
            error = _async_error(exc, request, "reading the response of", self._secrets)
            if error is None:
                raise
            resp.close()
            raise error from None
        resp.release()
        response = RawResponse(resp.status, resp.headers, body, request.url, request.method)
        if follow and 300 <= response.status < 400:
            return await self._redirected(request, response, timeout, False)  # type: ignore[return-value]
        return response

    async def _open(self, request: Request, timeout: float) -> "AsyncStreamResponse | RawResponse":
        resp = await self._start(request, timeout)
        if resp.status >= 300:
            try:
                body = await resp.read()
            except Exception:
                body = b""
            resp.release()
            return RawResponse(resp.status, resp.headers, body, request.url, request.method)
        read = self._timeout.read
        if read is not None and read > timeout:  # open within the deadline, then the idle timeout
            connection = resp.connection
            protocol = connection.protocol if connection is not None else None
            if protocol is not None:
                protocol.read_timeout = read
                restart = getattr(protocol, "start_timeout", None)  # re-arm: the running timer has
                if restart is not None:                              # the open's shorter limit
                    restart()
        return AsyncStreamResponse(resp, request, self._secrets)

    async def open_stream(self, request: Request, timeout: float) -> "AsyncStreamResponse | RawResponse":
        response = await self._open(request, timeout)
        if type(response) is RawResponse and 300 <= response.status < 400:
            return await self._redirected(request, response, timeout, True)
        return response

    async def _redirected(self, request: Request, response: RawResponse, timeout: float,
                          stream: bool) -> "AsyncStreamResponse | RawResponse":
        import time

        deadline = time.monotonic() + timeout
        hops = 0
        while True:
            following = self._options.redirect(request, response.status, response.headers, hops)
            if following is None:
                return response
            hops += 1
            request = following
            left = deadline - time.monotonic()
            if left <= 0:
                raise APITimeoutError(f"Timed out following redirects to {request.url}", url=request.url,
                                      method=request.method)
            opened = await (self._open(request, left) if stream else self.send(request, left, False))
            if type(opened) is not RawResponse or not 300 <= opened.status < 400:
                return opened
            response = opened

    # -- lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the running loop's session now, and have loops running in other threads close
        theirs."""
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            entries = list(self._sessions.items())
        waits = []
        for other, (session, _guard) in entries:
            if other is loop or session.closed or other.is_closed():
                _forget(self._sessions, self._lock, other, session)
                if not session.closed and other is loop:
                    await session.close()
            elif other.is_running():
                _forget(self._sessions, self._lock, other, session)
                waits.append(asyncio.wrap_future(asyncio.run_coroutine_threadsafe(session.close(), other)))
            # a loop that is not running is closed by its guard or by close_sync()/the finalizer
        if waits:
            await asyncio.wait(waits, timeout=5)

    def close_sync(self, timeout: float = 5.0) -> None:
        """Close every session from sync code (``Client.close()``)."""
        _close_sessions(self._sessions, self._lock, timeout)


class AsyncStreamResponse:
    def __init__(self, resp: Any, request: Request, secrets: tuple[str, ...] = ()) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.url = request.url
        self.method = request.method
        self._resp = resp
        self._request = request
        self._secrets = secrets

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
                                    "reading the stream of", self._secrets) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _connection_error(exc, self._request, "reading the stream of", self._secrets) from None

    def close(self) -> None:
        self._resp.release()
