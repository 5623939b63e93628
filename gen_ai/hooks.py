"""Hooks: watch every call a client makes without wrapping its methods.

    class Costs(gen_ai.Hooks):
        def on_call_end(self, call, result, error):
            if call.usage is not None:
                ledger.add(call.model, call.usage.prompt_tokens, call.usage.completion_tokens)

    client = create_client(..., hooks=[Costs()])

One ``CallInfo`` describes one logical call (a chat or text completion, a stream, an embeddings
request, one tool run, one batch) from start to end. The HTTP requests it makes (first send,
retries, dialect probes, ``n`` top-ups, guided_json re-asks) are reported with ``on_request`` /
``on_response`` / ``on_retry`` / ``on_event``. Hooks see no credentials: requests are described
by method and URL only, and errors have already been scrubbed of secrets.

Hooks run synchronously on the thread (or event loop) that makes the call, so they must be
quick. An exception raised by a hook is logged and swallowed: observing a call never breaks it.
The OpenTelemetry integration (``gen_ai.telemetry``) is one of these hooks.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ._core import Observer

logger = logging.getLogger("gen_ai")

# gen_ai's Call.kind -> the operation name of the OpenTelemetry GenAI conventions.
OPERATIONS = {"chat": "chat", "completion": "text_completion", "embeddings": "embeddings"}


class CallInfo:
    """One logical call, as hooks see it. ``state`` is free for hooks to keep per-call data in.

    Set at the start: ``operation`` (``chat``, ``text_completion``, ``embeddings``,
    ``execute_tool``, ``batch``), ``provider``, ``model``, ``server_address``, ``server_port``,
    ``params`` (request parameters: ``max_tokens``, ``temperature``, ``top_p``, ``n``,
    ``stream``, and ``stop``/``seed`` when given), ``messages`` or ``prompt`` (contents: record
    them only where your users opted in), ``parent`` (the batch or tool loop this call belongs
    to). Set by the end: ``latency``, ``first_chunk_latency`` (streams), ``usage``,
    ``response_id``, ``response_model``, ``finish_reasons``, ``error`` (a scrubbed GenAIError).
    """

    __slots__ = (
        "operation", "provider", "model", "server_address", "server_port", "params", "messages",
        "prompt", "parent", "start", "latency", "first_chunk_latency", "usage", "response_id",
        "response_model", "finish_reasons", "error", "output", "state", "attempts",
    )

    def __init__(self, operation: str, provider: str, model: str | None, *, server_address: str | None = None,
                 server_port: int | None = None, params: dict[str, Any] | None = None,
                 messages: Any = None, prompt: str | None = None, parent: "CallInfo | None" = None) -> None:
        self.operation = operation
        self.provider = provider
        self.model = model
        self.server_address = server_address
        self.server_port = server_port
        self.params = params or {}
        self.messages = messages
        self.prompt = prompt
        self.parent = parent
        self.start = time.perf_counter()
        self.latency: float | None = None
        self.first_chunk_latency: float | None = None
        self.usage: Any = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] = []
        self.error: Any = None
        self.output: Any = None  # the answer text(s) or tool result, for hooks that record contents
        self.state: dict[Any, Any] = {}
        self.attempts = 0

    def __repr__(self) -> str:
        return f"<CallInfo {self.operation} {self.provider}/{self.model}>"


class RequestInfo:
    """One HTTP request of a call: method, URL (never headers or body) and attempt number."""

    __slots__ = ("method", "url", "attempt", "purpose")

    def __init__(self, method: str, url: str, attempt: int, purpose: str) -> None:
        self.method = method
        self.url = url
        self.attempt = attempt
        self.purpose = purpose  # "call", "probe", "retry", "top_up", "reask"


class ResponseInfo:
    __slots__ = ("status", "url", "latency")

    def __init__(self, status: int, url: str, latency: float) -> None:
        self.status = status
        self.url = url
        self.latency = latency


class Hooks:
    """Override the methods you need; every one is optional."""

    def enabled(self) -> bool:
        """Asked once per call: False skips this hook for the call (cheap when tracing is off)."""
        return True

    def on_call_start(self, call: CallInfo) -> None:
        pass

    def on_request(self, call: CallInfo, request: RequestInfo) -> None:
        pass

    def on_response(self, call: CallInfo, response: ResponseInfo) -> None:
        pass

    def on_retry(self, call: CallInfo, error: Any, delay: float, attempt: int) -> None:
        pass

    def on_event(self, call: CallInfo, name: str, attributes: dict[str, Any]) -> None:
        """Something in the call's flow worth recording: ``dialect_probe``, ``request_adapted``
        (the server rejected a field and the request was changed), ``schema_reask``."""

    def on_first_chunk(self, call: CallInfo, latency: float) -> None:
        pass

    def on_call_end(self, call: CallInfo, result: Any, error: Any) -> None:
        pass


class HookSet:
    """The hooks of one client. ``begin`` returns None (no hook wants this call) or the
    ``CallObserver`` that reports it."""

    __slots__ = ("hooks", "provider", "model", "server_address", "server_port")

    def __init__(self, hooks: list[Hooks], codec: Any) -> None:
        self.hooks = tuple(hooks)
        self.provider = str(codec.provider)
        self.model = getattr(codec, "model_name", None)
        self.server_address, self.server_port = server_of(codec)

    def begin_call(self, call: Any, inner: Any = None, parent: CallInfo | None = None) -> "CallObserver | None":
        """Start reporting one ``Call`` (chat, completion, embeddings, stream)."""
        hooks: tuple[Hooks, ...] = self.hooks
        active: tuple[Hooks, ...]
        if len(hooks) == 1:  # the usual set (OpenTelemetry alone, idle): _active() inlined, once per call
            try:
                on = hooks[0].enabled()
            except Exception:  # a broken hook must never break the call
                enabled = hooks[0].enabled
                logger.exception("gen_ai: hook %r raised; ignored", getattr(enabled, "__qualname__", enabled))
                on = False
            if not on:
                return None
            active = hooks
        else:
            active = self._active()
            if not active:
                return None
        return self._begin(active, call_info(self, call, parent), inner)

    def begin(self, operation: str, *, model: str | None = None, params: dict[str, Any] | None = None,
              parent: CallInfo | None = None) -> "CallObserver | None":
        """Start reporting an operation that is not one request (``batch``, ``execute_tool``)."""
        active = self._active()
        if not active:
            return None
        info = CallInfo(operation, self.provider, model or self.model, server_address=self.server_address,
                        server_port=self.server_port, params=params, parent=parent)
        return self._begin(active, info, None)

    def _active(self) -> tuple[Hooks, ...]:
        hooks = self.hooks
        if len(hooks) == 1:  # the usual set (OpenTelemetry alone): no generator per call
            return hooks if _safe(hooks[0].enabled, False) else ()
        return tuple(h for h in self.hooks if _safe(h.enabled, False))

    def _begin(self, active: tuple[Hooks, ...], info: CallInfo, inner: Any) -> "CallObserver":
        observer = CallObserver(active, info, inner)
        for hook in active:
            _safe(hook.on_call_start, None, info)
        return observer


def _safe(fn: Any, default: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # a broken hook must never break the call
        logger.exception("gen_ai: hook %r raised; ignored", getattr(fn, "__qualname__", fn))
        return default


class CallObserver(Observer):
    """Bridges the call flow (``_core.Observer`` methods) to the hooks of one call, and passes
    retries on to ``inner`` (the batch's gate) when there is one."""

    __slots__ = ("hooks", "info", "inner", "_sent_at", "_ended")
    traces = True

    def __init__(self, hooks: tuple[Hooks, ...], info: CallInfo, inner: Any = None) -> None:
        self.hooks = hooks
        self.info = info
        self.inner = inner
        self._sent_at = 0.0
        self._ended = False

    # -- called by _core's flows --------------------------------------------------------------

    def on_request(self, request: Any, purpose: str = "call") -> None:
        info = self.info
        info.attempts += 1
        self._sent_at = time.perf_counter()
        req = RequestInfo(request.method, request.url, info.attempts, purpose)
        for hook in self.hooks:
            _safe(hook.on_request, None, info, req)

    def on_response(self, response: Any) -> None:
        resp = ResponseInfo(getattr(response, "status", 0), getattr(response, "url", ""),
                            time.perf_counter() - self._sent_at)
        for hook in self.hooks:
            _safe(hook.on_response, None, self.info, resp)

    def on_retry(self, error: Any, delay: float) -> None:
        if self.inner is not None:
            self.inner.on_retry(error, delay)
        for hook in self.hooks:
            _safe(hook.on_retry, None, self.info, error, delay, self.info.attempts)

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        for hook in self.hooks:
            _safe(hook.on_event, None, self.info, name, attributes)

    # -- called by the client / stream / batch -------------------------------------------------

    def first_chunk(self) -> None:
        info = self.info
        if info.first_chunk_latency is None:
            info.first_chunk_latency = latency = time.perf_counter() - info.start
            for hook in self.hooks:
                _safe(hook.on_first_chunk, None, info, latency)

    def end(self, result: Any = None, error: Any = None) -> None:
        if self._ended:
            return
        self._ended = True
        info = self.info
        info.latency = time.perf_counter() - info.start
        if error is not None:
            info.error = error
        elif result is not None:
            describe_result(info, result)
        for hook in self.hooks:
            _safe(hook.on_call_end, None, info, result, error)


def describe_result(info: CallInfo, result: Any) -> None:
    """Copy what hooks report (usage, ids, finish reasons, output) from a result onto ``info``."""
    info.usage = getattr(result, "usage", None)
    info.response_model = getattr(result, "model", None)
    if info.operation not in ("chat", "text_completion"):
        return  # embeddings (a list of vectors), tool runs, batches: usage and model only
    if isinstance(result, list):  # ChatResults (n > 1)
        info.response_id = getattr(result[0], "id", None) if result else None
        info.finish_reasons = [r.finish_reason for r in result if getattr(r, "finish_reason", None)]
        info.output = [str(r) for r in result]
    else:
        info.response_id = getattr(result, "id", None)
        reason = getattr(result, "finish_reason", None)
        info.finish_reasons = [reason] if reason else []
        info.output = [str(result)] if isinstance(result, str) else None


def call_info(hooks: HookSet, call: Any, parent: CallInfo | None = None) -> CallInfo:
    """The CallInfo of a ``Call`` about to run on the client of ``hooks``."""
    params: dict[str, Any] = {"max_tokens": call.max_tokens, "temperature": call.temperature,
                              "top_p": call.top_p, "n": call.n, "stream": call.stream}
    extra = call.extra
    if extra:
        for name in ("stop", "seed", "frequency_penalty", "presence_penalty", "top_k"):
            if extra.get(name) is not None:
                params[name] = extra[name]
    return CallInfo(OPERATIONS.get(call.kind, call.kind), hooks.provider, hooks.model,
                    server_address=hooks.server_address, server_port=hooks.server_port, params=params,
                    messages=call.messages, prompt=call.prompt, parent=parent)


def server_of(codec: Any) -> tuple[str | None, int | None]:
    """(host, port) of the codec's endpoint (asked once per client)."""
    base = getattr(codec, "base_url", None)
    result: tuple[str | None, int | None] = (None, None)
    if isinstance(base, str) and "://" in base:
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = None
        result = (parts.hostname, port)
    return result
