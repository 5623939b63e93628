"""Several endpoints behind one client: ``create_client(endpoint=[url1, url2, ...])``.

Every request goes to the replica with the fewest requests outstanding (ties: the one picked
least recently). A replica that refuses connections, drops them, or answers 5xx is taken out for
``replica_cooldown`` seconds (default 5); the request fails like any other, so the call flow
retries it (counted in ``max_retries``, with the usual backoff) and the retry goes to another
replica. When every replica is cooling down, the one that comes back first is used.

Each replica has its own codec (same options, its own URL) and its own ``ServerState``, so what is
learned about one server (a structured-output dialect, a rejected field, no base64 embeddings)
never changes the requests sent to another. The parts:

- ``ReplicaCodec`` looks like one codec to the client and the flow: ``build_request`` picks the
  replica and builds the request with that replica's codec and state, tagging the request with
  the replica (``request.facts = (replica, inner facts)``); ``fallback`` unwraps it and applies
  the changes to that replica's state. Pure routing, no I/O.
- ``ReplicaTransport`` wraps the client's transport: it counts each replica's outstanding
  requests and results, and marks a replica down on a connection failure or a 5xx.

Per-replica counts (``requests``, ``errors``, ``outstanding``, ``down``) are in
``client.codec.replica_stats()``; batch statistics report the counts of their own run under
``stats.replicas``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ._state import ServerState
from .errors import APIConnectionError, APITimeoutError, ConfigurationError, GenAIError
from .types import Request

DEFAULT_COOLDOWN = 5.0


class Replica:
    """One endpoint: its codec, its learned state and its counters."""

    __slots__ = ("codec", "down_until", "errors", "index", "last_pick", "outstanding", "requests", "state", "url")

    def __init__(self, index: int, codec: Any) -> None:
        self.index = index
        self.codec = codec
        self.url = str(getattr(codec, "base_url", index))
        self.state = ServerState()
        self.outstanding = 0
        self.requests = 0
        self.errors = 0
        self.down_until = 0.0
        self.last_pick = 0

    def __repr__(self) -> str:
        return f"<Replica {self.url} outstanding={self.outstanding} requests={self.requests} errors={self.errors}>"


class ReplicaCodec:
    """A codec made of one codec per endpoint; see the module docstring."""

    def __init__(self, codecs: list[Any], cooldown: float = DEFAULT_COOLDOWN) -> None:
        if not codecs:
            raise ConfigurationError("endpoint=[] holds no URL", suggestion="Pass at least one endpoint URL.",
                                     field="endpoint")
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or cooldown < 0:
            raise ConfigurationError(f"replica_cooldown must be a number of seconds >= 0, got {cooldown!r}",
                                     field="replica_cooldown")
        self.replicas = [Replica(i, codec) for i, codec in enumerate(codecs)]
        self.cooldown = float(cooldown)
        self._lock = threading.Lock()
        self._picks = 0
        first = codecs[0]
        self.provider = first.provider
        self.model_name = getattr(first, "model_name", None)
        self.base_url = [r.url for r in self.replicas]

    def __getattr__(self, name: str) -> Any:
        # Configuration (embedding_batch_size, dialect, ...) is the same on every replica.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["replicas"][0].codec, name)

    def __repr__(self) -> str:
        return f"<ReplicaCodec {self.provider} x{len(self.replicas)}: {', '.join(self.base_url)}>"

    # -- routing ------------------------------------------------------------------------------

    def pick(self) -> Replica:
        """The replica for the next request (and count it as outstanding)."""
        with self._lock:
            now = time.monotonic()
            up = [r for r in self.replicas if r.down_until <= now]
            if up:
                best = min(up, key=lambda r: (r.outstanding, r.last_pick))
            else:
                best = min(self.replicas, key=lambda r: r.down_until)
            self._picks += 1
            best.last_pick = self._picks
            best.outstanding += 1
            best.requests += 1
            return best

    def done(self, replica: Replica, failed: bool) -> None:
        with self._lock:
            replica.outstanding -= 1
            if failed:
                replica.errors += 1
                replica.down_until = time.monotonic() + self.cooldown

    def replica_stats(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: requests sent, errors (connection failures and 5xx), outstanding now,
        and whether it is cooling down."""
        now = time.monotonic()
        with self._lock:
            return {r.url: {"requests": r.requests, "errors": r.errors, "outstanding": r.outstanding,
                            "down": r.down_until > now} for r in self.replicas}

    # -- the codec interface ----------------------------------------------------------------

    @property
    def blocking_credentials(self) -> bool:
        return any(r.codec.blocking_credentials for r in self.replicas)

    def refresh_credentials(self) -> None:
        for r in self.replicas:
            if r.codec.blocking_credentials:
                r.codec.refresh_credentials()

    def secrets(self) -> tuple[str, ...]:
        out: list[str] = []
        for r in self.replicas:
            out.extend(r.codec.secrets())
        return tuple(out)

    def _tag(self, replica: Replica, request: Request) -> Request:
        request.facts = (replica, request.facts)
        return request

    def build_request(self, call: Any, state: ServerState | None = None) -> Request:
        replica = self.pick()
        return self._tag(replica, replica.codec.build_request(call, replica.state))

    def build_embedding_request(self, call: Any, state: ServerState | None = None) -> Request:
        replica = self.pick()
        return self._tag(replica, replica.codec.build_embedding_request(call, replica.state))

    def probe_request(self, call: Any, state: ServerState) -> None:
        # No client-wide probe: each replica starts from its codec's first choice and adapts on
        # its own (fallback below), since the replicas may be different servers.
        return None

    def learn(self, *args: Any) -> None:
        return None

    def _fallback(self, method: str, call: Any, request: Request, error: GenAIError) -> Any:
        facts = request.facts
        if not (isinstance(facts, tuple) and len(facts) == 2 and isinstance(facts[0], Replica)):
            return None
        replica, inner = facts
        plain = Request(request.method, request.url, request.headers, request.body, request.stream, inner)
        changes = getattr(replica.codec, method)(call, plain, error, replica.state)
        if changes is None:
            return None
        replica.state.apply(changes)
        return {}  # applied to that replica's state; the client's state stays as it is

    def fallback(self, call: Any, request: Request, error: GenAIError, state: ServerState) -> Any:
        return self._fallback("fallback", call, request, error)

    def embedding_fallback(self, call: Any, request: Request, error: GenAIError, state: ServerState) -> Any:
        return self._fallback("embedding_fallback", call, request, error)

    def parse_response(self, call: Any, response: Any) -> Any:
        return self.replicas[0].codec.parse_response(call, response)

    def parse_embedding_response(self, call: Any, response: Any) -> Any:
        return self.replicas[0].codec.parse_embedding_response(call, response)

    def parse_error(self, response: Any) -> GenAIError:
        error: GenAIError = self.replicas[0].codec.parse_error(response)
        return error

    def stream_parser(self, call: Any, headers: Any) -> Any:
        return self.replicas[0].codec.stream_parser(call, headers)

    def wrap_transport(self, transport: Any, is_async: bool) -> Any:
        return AsyncReplicaTransport(self, transport) if is_async else ReplicaTransport(self, transport)


def _marks_down(exc: GenAIError) -> bool:
    """A refused or dropped connection takes the replica out; a timeout (a slow answer) or a
    local error says nothing about its health."""
    return isinstance(exc, APIConnectionError) and not isinstance(exc, APITimeoutError)


def _replica_of(request: Request) -> Replica | None:
    facts = request.facts
    if isinstance(facts, tuple) and len(facts) == 2 and isinstance(facts[0], Replica):
        return facts[0]
    return None


class ReplicaTransport:
    """The sync transport: counts per replica, marks a replica down on a failure."""

    def __init__(self, router: ReplicaCodec, inner: Any) -> None:
        self.router = router
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def send(self, request: Request, timeout: float) -> Any:
        replica = _replica_of(request)
        failed = True
        try:
            response = self.inner.send(request, timeout)
            failed = response.status >= 500
            return response
        except GenAIError as exc:
            failed = _marks_down(exc)
            raise
        finally:
            if replica is not None:
                self.router.done(replica, failed)

    def open_stream(self, request: Request, timeout: float) -> Any:
        replica = _replica_of(request)
        failed = True
        try:
            response = self.inner.open_stream(request, timeout)
            failed = getattr(response, "status", 200) >= 500
            return response
        except GenAIError as exc:
            failed = _marks_down(exc)
            raise
        finally:
            if replica is not None:
                self.router.done(replica, failed)

    def close(self) -> None:
        self.inner.close()


class AsyncReplicaTransport(ReplicaTransport):
    async def send(self, request: Request, timeout: float) -> Any:
        replica = _replica_of(request)
        failed = True
        try:
            response = await self.inner.send(request, timeout)
            failed = response.status >= 500
            return response
        except GenAIError as exc:
            failed = _marks_down(exc)
            raise
        finally:
            if replica is not None:
                self.router.done(replica, failed)

    async def open_stream(self, request: Request, timeout: float) -> Any:
        replica = _replica_of(request)
        failed = True
        try:
            response = await self.inner.open_stream(request, timeout)
            failed = getattr(response, "status", 200) >= 500
            return response
        except GenAIError as exc:
            failed = _marks_down(exc)
            raise
        finally:
            if replica is not None:
                self.router.done(replica, failed)

    async def close(self) -> None:  # type: ignore[override]
        await self.inner.close()
