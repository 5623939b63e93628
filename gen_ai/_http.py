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

The network policies are decided once, in :class:`HTTPOptions`, and both transports apply them
the same way (docs/security.md):

- **timeouts** (:class:`Timeout`): whole-call deadline, connect timeout, read (idle) timeout;
- **redirects**: never followed unless ``follow_redirects=True``, and then only to the same
  origin (scheme, host, port), so credentials never reach another origin;
- **proxies**: ``proxy=`` or ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``
  (read once, when the client is made), decided once per target origin and cached;
- **TLS**: ``verify=`` (a CA bundle, or False) and ``cert=`` (a client certificate), one
  ``ssl.SSLContext`` per client shared by both transports.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from typing import Any

from .errors import APIConnectionError, APITimeoutError, ConfigurationError, RedirectError
from .types import RawResponse, Request

logger = logging.getLogger("gen_ai")

_USER_AGENT = "gen_ai/0.1"
_CHUNK = 65536
DEFAULT_TIMEOUT = 30.0  # seconds; the seed's documented per-call timeout
DEFAULT_CONNECT_TIMEOUT = 10.0
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


class Timeout:
    """How long a call may take, in seconds (an httpx-style value object).

    - ``total``: the whole-call deadline: connect, send, wait, read, retries and backoff sleeps
      included. For a stream it bounds opening it (dialect probe included) up to the response
      headers; after that the stream runs as long as text keeps arriving. A per-call
      ``timeout=`` replaces it for that call.
    - ``connect``: the longest a TCP connect (plus the TLS handshake and a proxy's CONNECT)
      may take, never more than the time left before the deadline.
    - ``read``: the longest wait for the next bytes of a response (idle timeout); ``None``:
      the call's own ``total``. A stream that goes quiet for this long fails with
      ``APITimeoutError``.
    """

    __slots__ = ("total", "connect", "read")

    def __init__(self, total: float = DEFAULT_TIMEOUT, *, connect: float = DEFAULT_CONNECT_TIMEOUT,
                 read: float | None = None) -> None:
        for name, value in (("total", total), ("connect", connect), ("read", read)):
            if not (value is None and name == "read") and not _positive(value):
                raise ConfigurationError(f"Timeout({name}={value!r}) is not valid", field="timeout",
                                         suggestion=f"Pass {name} as a positive number of seconds.")
        self.total = float(total)
        self.connect = float(connect)
        self.read = None if read is None else float(read)

    def __repr__(self) -> str:
        return f"Timeout(total={self.total:g}, connect={self.connect:g}, read={self.read!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timeout) and (self.total, self.connect, self.read) == (
            other.total, other.connect, other.read)

    def __hash__(self) -> int:
        return hash((self.total, self.connect, self.read))

    @classmethod
    def from_option(cls, value: Any) -> "Timeout":
        """``create_client(timeout=...)``: None (30 s), seconds, a ``Timeout``, or a legacy
        ``(connect, read)`` pair (the calls' total stays 30 s)."""
        if value is None:
            return cls()
        if isinstance(value, Timeout):
            return value
        if _positive(value):
            return cls(float(value), connect=min(DEFAULT_CONNECT_TIMEOUT, float(value)))
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(_positive(v) for v in value):
            return cls(connect=float(value[0]), read=float(value[1]))
        raise ConfigurationError(
            f"timeout={value!r} is not valid",
            suggestion="Pass seconds as a positive number, a gen_ai.Timeout(total, connect=, read=), "
                       "or a (connect, read) pair of positive numbers.",
            field="timeout",
        )


Timeouts = Timeout  # the name before the timeout model had a whole-call total


# --------------------------------------------------------------------------------------------
# Proxies: the environment (read once) or an explicit proxy=, decided once per target origin
# --------------------------------------------------------------------------------------------


class _Proxy:
    """An HTTP proxy: where it is, and the Proxy-Authorization its URL's credentials give."""

    __slots__ = ("url", "host", "port", "auth", "user", "password", "shown")

    def __init__(self, raw: str, source: str) -> None:
        from urllib.parse import unquote, urlsplit

        text = raw.strip()
        if "://" not in text:
            text = "http://" + text  # curl's default for a proxy given as host:port
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = -1
        if scheme != "http" or not parts.hostname or port == -1:
            hint = ("TLS to the proxy itself (https://) and SOCKS proxies are not supported; "
                    "use the proxy's http:// address (https targets still go through a CONNECT tunnel)"
                    if scheme not in ("http", "") else "Give it as http://[user:password@]host:port")
            raise ConfigurationError(f"{source}: {_hide_userinfo(raw)!r} is not a usable proxy URL",
                                     suggestion=hint + ".", field="proxy")
        self.host = parts.hostname
        self.port = port or 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.auth: str | None = None
        if self.user is not None:
            import base64

            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode("ascii")
            self.auth = f"Basic {token}"
        self.shown = f"http://***@{host}:{self.port}" if self.user is not None else self.url

    def secrets(self) -> tuple[str, ...]:
        out = []
        if self.auth is not None:
            out.append(self.auth.split(" ", 1)[1])
        if self.password:
            out.append(self.password)
            from urllib.parse import quote

            out.append(quote(self.password, safe=""))
        return tuple(out)

    def __repr__(self) -> str:
        return f"<proxy {self.shown}>"


def _hide_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest.split("/", 1)[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _env(name: str, env: Mapping[str, str]) -> str | None:
    # Lower-case wins (and an empty lower-case value unsets), as in urllib, httpx and curl. The
    # upper-case HTTP_PROXY is ignored under CGI (REQUEST_METHOD set): it can come from a
    # request's "Proxy:" header (httpoxy, CVE-2016-5385).
    if name in env:
        return env[name].strip() or None
    upper = name.upper()
    if upper == "HTTP_PROXY" and "REQUEST_METHOD" in env:
        return None
    value = env.get(upper)
    return value.strip() or None if value is not None else None


class _NoProxy:
    """``NO_PROXY`` as curl reads it: ``*``, host names (a leading dot optional) matching the
    host and its subdomains, ``host:port``, IP addresses and CIDR ranges."""

    def __init__(self, value: str) -> None:
        self.everything = False
        self.names: list[tuple[str, int | None]] = []
        self.networks: list[Any] = []
        for raw in value.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.everything = True
                continue
            port: int | None = None
            if entry.startswith("["):  # [ipv6]:port
                host, _, rest = entry[1:].partition("]")
                if rest.startswith(":") and rest[1:].isdigit():
                    port = int(rest[1:])
                entry = host
            elif entry.count(":") == 1:
                host, _, p = entry.partition(":")
                if p.isdigit():
                    entry, port = host, int(p)
            try:
                import ipaddress

                self.networks.append((ipaddress.ip_network(entry, strict=False), port))
                continue
            except ValueError:
                pass
            self.names.append((entry.lstrip("."), port))

    def bypass(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        host = host.lower().strip("[]")
        for name, want in self.names:
            if (want is None or want == port) and (host == name or host.endswith("." + name)):
                return True
        if self.networks:
            import ipaddress

            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            for network, want in self.networks:
                if (want is None or want == port) and address.version == network.version and address in network:
                    return True
        return False


# --------------------------------------------------------------------------------------------
# Options: one policy for both transports
# --------------------------------------------------------------------------------------------


class HTTPOptions:
    """A client's network policy, shared by its sync and async transports (see module docstring).

    Everything here is decided when the client is made or once per target origin; nothing is
    read from the environment per call.
    """

    def __init__(self, timeout: Any = None, *, follow_redirects: bool = False, proxy: Any = None,
                 trust_env: bool = True, verify: Any = True, cert: Any = None,
                 max_redirects: int = _MAX_REDIRECTS) -> None:
        self.timeout = Timeout.from_option(timeout)
        if not isinstance(follow_redirects, bool):
            raise ConfigurationError(f"follow_redirects must be True or False, got {follow_redirects!r}",
                                     field="follow_redirects")
        if not isinstance(trust_env, bool):
            raise ConfigurationError(f"trust_env must be True or False, got {trust_env!r}", field="trust_env")
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.trust_env = trust_env
        # proxy: None -> the environment (when trust_env); a URL -> every request; False/"" -> none.
        self._explicit_proxy: _Proxy | None = None
        self._no_proxy: _NoProxy | None = None
        self._env_proxies: dict[str, str] | None = None
        if proxy is not None and proxy is not False and proxy != "":
            if not isinstance(proxy, str):
                raise ConfigurationError(f"proxy must be a URL string, got {type(proxy).__name__}",
                                         suggestion="Pass proxy='http://[user:password@]host:port'.",
                                         field="proxy")
            self._explicit_proxy = _Proxy(proxy, "proxy")
        elif proxy is None and trust_env:
            self._read_env(os.environ)
        self.uses_proxy = self._explicit_proxy is not None or bool(self._env_proxies)
        self._routes: dict[tuple[str, str, int], _Proxy | None] = {}
        self._routes_lock = threading.Lock()
        self.verify = verify
        self.cert = cert
        self._ssl: Any = None
        self._custom_tls = verify is not True or cert is not None
        if self._custom_tls:
            self._ssl = self._make_ssl_context()  # bad paths fail here, before any network call

    # -- proxies --------------------------------------------------------------------------

    def _read_env(self, env: Mapping[str, str]) -> None:
        found = {}
        for scheme in ("https", "http", "all"):
            value = _env(f"{scheme}_proxy", env)
            if value:
                found[scheme] = value
        if found:
            self._env_proxies = found
            no_proxy = _env("no_proxy", env)
            self._no_proxy = _NoProxy(no_proxy) if no_proxy else None

    def proxy_for(self, scheme: str, host: str, port: int) -> _Proxy | None:
        """The proxy for requests to this origin, or None for a direct connection (cached)."""
        key = (scheme, host, port)
        try:
            return self._routes[key]
        except KeyError:
            pass
        route: _Proxy | None = self._explicit_proxy
        env = self._env_proxies
        if route is None and env:
            raw = env.get(scheme) or env.get("all")
            if raw and not (self._no_proxy is not None and self._no_proxy.bypass(host, port)):
                source = f"{scheme.upper()}_PROXY" if env.get(scheme) else "ALL_PROXY"
                route = _Proxy(raw, f"{source} (environment)")
        if route is not None:
            logger.debug("gen_ai: %s://%s:%d via proxy %s", scheme, host, port, route.shown)
        with self._routes_lock:
            if len(self._routes) < 256:
                self._routes[key] = route
        return route

    def secrets(self) -> tuple[str, ...]:
        """Proxy credentials, scrubbed from errors like every other secret."""
        out: list[str] = []
        if self._explicit_proxy is not None:
            out.extend(self._explicit_proxy.secrets())
        for raw in (self._env_proxies or {}).values():
            try:
                out.extend(_Proxy(raw, "environment").secrets())
            except ConfigurationError:
                pass
        return tuple(out)

    # -- TLS ------------------------------------------------------------------------------

    def _make_ssl_context(self) -> Any:
        import ssl

        verify, cert = self.verify, self.cert
        if isinstance(verify, ssl.SSLContext):
            context = verify
        elif verify is True or verify is False:
            context = ssl.create_default_context()
        elif isinstance(verify, (str, os.PathLike)):
            path = os.fspath(verify)
            if os.path.isdir(path):
                context = ssl.create_default_context(capath=path)
            elif os.path.isfile(path):
                try:
                    context = ssl.create_default_context(cafile=path)
                except (ssl.SSLError, OSError) as exc:
                    raise ConfigurationError(f"verify={path!r}: not a PEM CA bundle ({exc})", field="verify",
                                             suggestion="Pass the path of a PEM file of CA certificates.") from None
            else:
                raise ConfigurationError(f"verify={path!r}: no such file or directory", field="verify",
                                         suggestion="Pass the path of a PEM CA bundle, True, or False.")
        else:
            raise ConfigurationError(f"verify must be True, False, a CA bundle path or an ssl.SSLContext, "
                                     f"got {type(verify).__name__}", field="verify")
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            logger.warning("gen_ai: TLS certificate verification is OFF (verify=False): anyone on the network "
                           "path can read and change the traffic, credentials included")
        if cert is not None:
            if isinstance(cert, (str, os.PathLike)):
                certfile, keyfile, password = os.fspath(cert), None, None
            elif isinstance(cert, (tuple, list)) and len(cert) in (2, 3):
                certfile, keyfile = os.fspath(cert[0]), os.fspath(cert[1])
                password = cert[2] if len(cert) == 3 else None
            else:
                raise ConfigurationError("cert must be a path or a (cert, key) / (cert, key, password) tuple",
                                         field="cert")
            try:
                context.load_cert_chain(certfile, keyfile, password)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigurationError(f"cert={certfile!r}: cannot load the client certificate "
                                         f"({type(exc).__name__}: {exc})", field="cert",
                                         suggestion="Pass a PEM certificate (and its key) the process can read.") \
                    from None
        return context

    def ssl_context(self) -> Any:
        """The client's one SSLContext (made on the first https connection)."""
        context = self._ssl
        if context is None:
            context = self._ssl = self._make_ssl_context()
        return context

    # -- redirects ------------------------------------------------------------------------

    def redirect(self, request: Request, status: int, headers: Any, hops: int) -> Request | None:
        """The request to send for a redirect response, None when it is not a redirect (no
        Location), or a ``RedirectError`` when the policy does not follow it."""
        location = headers.get("Location") if status in _REDIRECT_STATUSES else None
        if not location:
            return None
        from urllib.parse import urljoin

        target = urljoin(request.url, location.strip())
        same = _origin(target) == _origin(request.url)
        where = f"{request.method} {request.url} answered {status} redirecting to {target}"
        if not self.follow_redirects:
            raise RedirectError(
                f"{where}: redirects are not followed",
                suggestion=("Point endpoint at the new URL; create_client(..., follow_redirects=True) follows "
                            "same-origin redirects" if same else
                            "Point endpoint at the new URL if you trust it; redirects to another origin are never "
                            "followed, so credentials are not sent there"),
                status_code=status, url=request.url, method=request.method, location=target)
        if not same:
            raise RedirectError(
                f"{where}: a redirect to another origin is never followed (credentials stay with the origin "
                "they were configured for)",
                suggestion="Point endpoint at the new URL if you trust it.",
                status_code=status, url=request.url, method=request.method, location=target)
        if status == 303:
            raise RedirectError(f"{where}: 303 See Other turns the request into a GET without its body; "
                                "not followed", suggestion="Point endpoint at the new URL.",
                                status_code=status, url=request.url, method=request.method, location=target)
        if hops >= self.max_redirects:
            raise RedirectError(f"{where}: more than {self.max_redirects} redirects",
                                suggestion="Point endpoint at the final URL.", status_code=status,
                                url=request.url, method=request.method, location=target)
        logger.info("gen_ai: following same-origin %d redirect to %s", status, target)
        # 301/302/307/308 are re-sent with their method and body: an LLM API wants the POST.
        return Request(request.method, target, request.headers, request.body, request.stream)


def _origin(url: str) -> tuple[str, str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def _options(value: Any) -> HTTPOptions:
    if isinstance(value, HTTPOptions):
        return value
    return HTTPOptions(value)


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
        proxy = self._options.proxy_for(scheme, host, port) if self._options.uses_proxy else None
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
        import http.client

        scheme, host, port = key
        connect = self._timeout.connect
        if proxy is None:
            if scheme == "https":
                conn: Any = http.client.HTTPSConnection(host, port, timeout=connect,
                                                        context=self._options.ssl_context())
            else:
                conn = http.client.HTTPConnection(host, port, timeout=connect)
        elif scheme == "https":
            # CONNECT tunnel through the proxy; TLS (SNI, certificate check) is with the target.
            conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=connect,
                                               context=self._options.ssl_context())
            conn.set_tunnel(host, port, headers={"Proxy-Authorization": proxy.auth} if proxy.auth else None)
        else:
            conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=connect)
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
        key, path, proxy = self._target(request.url)
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

    def _send(self, request: Request, timeout: float) -> RawResponse:
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
        return RawResponse(resp.status, resp.headers, body, request.url, request.method)

    def send(self, request: Request, timeout: float) -> RawResponse:
        response = self._send(request, timeout)
        if 300 <= response.status < 400:
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
            conn.sock.settimeout(read)
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
            opened = self._open(request, left) if stream else self._send(request, left)
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
    import asyncio

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    with lock:
        entries = list(sessions.items())
        sessions.clear()
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
            if stream:  # a stream is bounded by its idle time between reads, not its total
                cached = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
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
        from asyncio import get_running_loop  # a sys.modules lookup after the first call

        loop = get_running_loop()
        current_loop, session = self._current
        if current_loop is not loop or session.closed:
            session = await self._open_session(loop)
        try:
            if not self._options.uses_proxy:
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

    async def _send(self, request: Request, timeout: float) -> RawResponse:
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
        return RawResponse(resp.status, resp.headers, body, request.url, request.method)

    async def send(self, request: Request, timeout: float) -> RawResponse:
        response = await self._send(request, timeout)
        if 300 <= response.status < 400:
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
            opened = await (self._open(request, left) if stream else self._send(request, left))
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
