"""What a client learns about its server at run time, kept beside the codecs (which stay pure).

A codec turns calls into requests and bytes into results; what it learns about the server it
talks to (the structured-output dialect that is enforced, whether streams may ask for usage,
the largest ``n`` taken, request fields that are rejected) is data about *that server*. It lives
here, in one ``ServerState`` per client (one per replica, once a client has several), which the
flow in ``_core`` passes into the codec's methods:

    codec.build_request(call, state)               reads facts (plain reads, no lock)
    codec.probe_request(call, state)               -> Request | None   (one-time detection)
    codec.learn(call, request, response, found)    -> Request | None   (a follow-up probe)
    codec.fallback(call, request, error, state)    -> changes | None

and updates only through ``ServerState.apply`` / ``ServerState.learn``: every change is a
compare-and-set from the value *the failed request was built with* (the codec records it in
``Request.facts``) to the next one. Two concurrent calls that fail with the same dialect
therefore move the state one step, never two, and a call that failed with an older value does
not undo what another learned. Reads need no lock: every fact is one immutable value.

Detection runs once per state even when many threads or tasks start at the same moment:
``SingleFlight`` lets the first caller run the probe while the others wait for its answer
(threads on an Event, asyncio tasks on a future of their own loop), so both drivers share it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

# Facts a codec may learn, with their initial value. A new learned fact gets a slot here.
_INITIAL: dict[str, Any] = {
    "server": None,              # detected server kind ("vllm", "llama.cpp", ...), None until probed
    "version": None,             # the server's version string when it tells (vLLM's /version)
    "chat_dialect": None,        # structured-output dialect for chat; None: the codec's first choice
    "completion_dialect": None,  # the same for text completions
    "stream_usage": True,        # False once the server rejected stream_options
    "max_n": None,               # the largest n the server takes, once a 400 named n
    "rejected_fields": frozenset(),  # request fields the server (model) rejects, e.g. temperature
    "tool_choice_string": False,  # True once the server refused an object tool_choice (llama.cpp's server)
    "max_tokens_field": None,    # "max_completion_tokens" once a 400 asked for it (OpenAI reasoning models)
    "thinking_mode": None,       # Anthropic: "adaptive" or "enabled" once a 400 named the other form
    "embedding_base64": True,    # False once the server rejected encoding_format "base64" (embeddings)
}

Changes = Mapping[str, tuple[Any, Any]]  # fact -> (value the failed request used, new value)


class ServerState:
    """Learned facts about one server. Safe to share between threads and event loops."""

    __slots__ = (*_INITIAL, "probe", "_lock")

    server: str | None
    version: str | None
    chat_dialect: str | None
    completion_dialect: str | None
    stream_usage: bool
    max_n: int | None
    rejected_fields: frozenset[str]
    tool_choice_string: bool
    max_tokens_field: str | None
    thinking_mode: str | None
    embedding_base64: bool

    def __init__(self, **known: Any) -> None:
        for name, value in _INITIAL.items():
            object.__setattr__(self, name, known.pop(name, value))
        if known:
            raise TypeError(f"unknown server facts: {', '.join(sorted(known))}")
        self.probe = SingleFlight()
        self._lock = threading.Lock()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _INITIAL:
            raise AttributeError(f"ServerState.{name} changes only through apply() or learn()")
        object.__setattr__(self, name, value)

    def dialect(self, kind: str) -> str | None:
        return self.chat_dialect if kind == "chat" else self.completion_dialect

    def apply(self, changes: Changes) -> bool:
        """Compare-and-set each fact from the value a failed request used to its new value.
        A fact that already moved on (another call learned it first) is left alone. Returns
        True when anything changed."""
        changed = False
        with self._lock:
            for name, (old, new) in changes.items():
                if name not in _INITIAL:
                    raise KeyError(f"unknown server fact {name!r}")
                if getattr(self, name) == old:
                    object.__setattr__(self, name, new)
                    changed = True
        return changed

    def learn(self, facts: Mapping[str, Any]) -> None:
        """Set facts found by detection (or by an answer that states them, like an n limit)."""
        with self._lock:
            for name, value in facts.items():
                if name not in _INITIAL:
                    raise KeyError(f"unknown server fact {name!r}")
                object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _INITIAL}

    def __repr__(self) -> str:
        known = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if v != _INITIAL[k])
        return f"ServerState({known})"


class _Fresh(ServerState):
    """The state of a client that has learned nothing; read-only (the default for codec methods
    called outside a client, e.g. in tests)."""

    __slots__ = ()

    def apply(self, changes: Changes) -> bool:
        raise TypeError("FRESH is read-only; give each client its own ServerState()")

    def learn(self, facts: Mapping[str, Any]) -> None:
        raise TypeError("FRESH is read-only; give each client its own ServerState()")


class SingleFlight:
    """Run a piece of work once among concurrent callers, sync or async.

    The first caller becomes the leader and runs it; callers arriving while it runs wait (up to
    ``timeout``) and then go on. When the leader's work reports success (returns true), the
    flight is ``done`` and later callers skip it; otherwise the next caller to come runs it again
    (a probe that met a dead server is retried by a later call, not by the waiting ones).
    """

    __slots__ = ("done", "runs", "_lock", "_running", "_event", "_waiters")

    def __init__(self) -> None:
        self.done = False
        self.runs = 0  # how many times the work was started (tests assert single flight with it)
        self._lock = threading.Lock()
        self._running = False
        self._event = threading.Event()
        self._waiters: list[tuple[Any, Any]] = []

    def _enter(self) -> threading.Event | None:
        """None: the caller leads; else the Event to wait on (already set when done)."""
        with self._lock:
            if self.done:
                return _SET
            if self._running:
                return self._event
            self._running = True
            self.runs += 1
            self._event = threading.Event()
            return None

    def _finish(self, ok: bool) -> None:
        with self._lock:
            self._running = False
            self.done = ok
            event, waiters, self._waiters = self._event, self._waiters, []
        event.set()
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody is waiting there any more
                pass

    def run_sync(self, work: Callable[[], Any], timeout: float) -> None:
        event = self._enter()
        if event is None:
            ok = False
            try:
                ok = bool(work())
            finally:
                self._finish(ok)
            return
        event.wait(timeout)

    async def run_async(self, work: Callable[[], Awaitable[Any]], timeout: float) -> None:
        import asyncio

        with self._lock:
            if self.done:
                return
            if self._running:
                future = asyncio.get_running_loop().create_future()
                self._waiters.append((asyncio.get_running_loop(), future))
            else:
                future = None
                self._running = True
                self.runs += 1
                self._event = threading.Event()
        if future is None:
            ok = False
            try:
                ok = bool(await work())
            finally:
                self._finish(ok)
            return
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            pass


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


_SET = threading.Event()
_SET.set()


FRESH: ServerState = _Fresh()
