"""The network policy of a client, decided once and applied by both transports in ``_http``:

- :class:`Timeout`: whole-call deadline, connect timeout, read (idle) timeout;
- redirects: never followed unless ``follow_redirects=True``, and then only to the same origin
  (scheme, host, port), so credentials never reach another origin;
- proxies: ``proxy=`` or ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` (read
  once, when the client is made, with curl's and httpx's rules), decided once per target origin;
- TLS: ``verify=`` (a CA bundle, or False) and ``cert=`` (a client certificate), one
  ``ssl.SSLContext`` per client for both transports.

docs/security.md is the user's view of all of this.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError, RedirectError
from .types import Request

logger = logging.getLogger("gen_ai")

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
