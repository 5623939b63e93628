"""The public client: ``run_*`` methods, their defaults, and input validation.

Every method has an async twin with an ``a`` prefix (``arun_chat_completions``, ...). Both
build the same ``Call`` and run the same flow from ``_core``; only the driver differs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, TypeVar

from . import _core
from ._http import AsyncTransport, HTTPOptions, SyncTransport
from ._state import ServerState
from .errors import GenAIError, InvalidInputError, SchemaValidationError
from .types import Call, ChatResult, ChatResults, EmbeddingCall, StreamEvent, ToolCall, Usage, new_call

VALID_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
# Keywords the client owns; passing them through **extra would corrupt the request.
_RESERVED = frozenset({"stream", "messages", "prompt"})

Result = ChatResult | ChatResults


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad(field: str, message: str, suggestion: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {message}", suggestion=suggestion, field=field)


def validate_messages(messages: Any, allow_local_files: bool = False) -> list[dict[str, Any]]:
    """Check the chat messages (and prepare their images); the error names the index and the
    field that is wrong."""
    checked, has_images = _check_messages(messages)
    if has_images:
        from .images import prepare_messages

        checked = prepare_messages(checked, allow_local_files=allow_local_files)
    return checked


def _check_messages(messages: Any) -> tuple[list[dict[str, Any]], bool]:
    """The messages' shape checks; -> (messages, whether they hold image parts to prepare)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise _bad("messages", f"must be a list of message dicts, got {type(messages).__name__}",
                   'Pass [{"role": "user", "content": "..."}].')
    if not messages:
        raise _bad("messages", "is empty", 'Pass at least one message, e.g. [{"role": "user", "content": "Hi"}].')
    has_images = False
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}]", f"must be a dict, got {type(message).__name__}",
                       'Each message looks like {"role": "user", "content": "..."}.')
        role = message.get("role")
        if role not in VALID_ROLES:
            raise _bad(f"messages[{i}].role", f"{role!r} is not a known role",
                       f"Use one of: {', '.join(sorted(VALID_ROLES))}.")
        if role == "tool":
            from .tools import check_tool_message

            check_tool_message(message, i)
        elif role == "assistant" and "tool_calls" in message and message["tool_calls"] is not None:
            from .tools import check_assistant_tool_calls

            check_assistant_tool_calls(message["tool_calls"], i)
        content = message.get("content")
        if isinstance(content, str):
            continue
        if content is None:
            if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
                continue
            raise _bad(f"messages[{i}].content", "is missing" if "content" not in message else "is None",
                       "Give every message a string content (or a list of content parts).")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _bad(f"messages[{i}].content[{j}]", "must be a dict with a 'type' key",
                               'Use {"type": "text", "text": "..."} or '
                               '{"type": "image_url", "image_url": {"url": "..."}}.')
                if part["type"] in ("image_url", "image", "input_image"):
                    has_images = True
            continue
        raise _bad(f"messages[{i}].content", f"must be a string or a list of content parts, got "
                   f"{type(content).__name__}", "Convert it to a string.")
    return list(messages), has_images


_NUMBER_TYPES = (float, int)


def validate_params(max_tokens: Any, temperature: Any, top_p: Any, n: Any, timeout: Any) -> None:
    # The common call (plain ints and floats in range) in one expression; anything else gets
    # the checks below, which name what is wrong.
    if type(max_tokens) is int and max_tokens >= 1 and type(n) is int and n >= 1 \
            and type(temperature) in _NUMBER_TYPES and temperature >= 0 \
            and type(top_p) in _NUMBER_TYPES and 0 <= top_p <= 1 \
            and type(timeout) in _NUMBER_TYPES and timeout > 0:
        return
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens", f"must be a whole number >= 1, got {max_tokens!r}", "Pass e.g. max_tokens=256.")
    if not _is_number(temperature) or temperature < 0:
        raise _bad("temperature", f"must be a number >= 0, got {temperature!r}",
                   "Use 0 for deterministic answers, up to 1 (2 on OpenAI) for more varied ones.")
    if not _is_number(top_p) or not 0 <= top_p <= 1:
        raise _bad("top_p", f"must be a number from 0 to 1, got {top_p!r}", "Use top_p=1.0 to disable it.")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _bad("n", f"must be a whole number >= 1, got {n!r}", "Use n=1 for one answer.")
    if not _is_number(timeout) or timeout <= 0:
        raise _bad("timeout", f"must be a number of seconds > 0, got {timeout!r}", "Pass e.g. timeout=30.")


# Keywords that become typed Call fields (mapped by every codec) instead of body fields.
_CALL_OPTIONS = frozenset({"reasoning_effort", "logprobs", "top_logprobs"})


def _call_options(extra: dict[str, Any]) -> tuple[str | int | None, bool, int | None]:
    """Pop and check ``reasoning_effort``, ``logprobs`` and ``top_logprobs`` from the keywords."""
    effort = extra.pop("reasoning_effort", None)
    if effort is not None:
        if isinstance(effort, bool) or not isinstance(effort, (str, int)) or effort == "" or \
                (isinstance(effort, int) and effort < 0):
            raise _bad("reasoning_effort", f"must be a level name or a token budget >= 0, got {effort!r}",
                       'Use "none", "minimal", "low", "medium", "high", "xhigh" or "max" (or a provider\'s '
                       "own value), or a whole number of thinking tokens.")
        if isinstance(effort, str):
            effort = effort.strip().lower()
    logprobs = extra.pop("logprobs", False)
    top = extra.pop("top_logprobs", None)
    if isinstance(logprobs, int) and not isinstance(logprobs, bool) and top is None:
        top = logprobs  # the legacy completions spelling: logprobs=k alternatives
        logprobs = True
    if not isinstance(logprobs, bool):
        raise _bad("logprobs", f"must be True or False, got {logprobs!r}", "Pass logprobs=True.")
    if top is not None:
        if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20:
            raise _bad("top_logprobs", f"must be a whole number from 0 to 20, got {top!r}", "Pass e.g. top_logprobs=5.")
        logprobs = True
    return effort, logprobs, top


def _check_extra(extra: dict[str, Any], codec: Any, kind: str) -> dict[str, Any]:
    """Refuse reserved and unknown keywords; merge ``extra_body`` (passed through unchecked)."""
    clash = _RESERVED.intersection(extra)
    if clash:
        name = sorted(clash)[0]
        hint = "Use the *_stream method to stream." if name == "stream" else f"Pass {name} as the first argument."
        raise _bad(name, "is set by the client and cannot be passed as an extra keyword", hint)
    allowed = getattr(codec, "extra_keywords", None)
    if allowed is not None:
        from ._keywords import check_keywords

        check_keywords(extra, allowed[kind], str(codec.provider), kind)
    if "extra_body" not in extra:
        return extra
    body = extra["extra_body"]
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        raise _bad("extra_body", f"must be a dict of body fields, got {type(body).__name__}",
                   'Pass e.g. extra_body={"my_server_field": 1}.')
    merged = {k: v for k, v in extra.items() if k != "extra_body"}
    merged.update(body)
    return merged


def _tool_options(tools: Any, tool_choice: Any, parallel: Any, kind: str) -> tuple[Any, str | None, bool | None]:
    """tools=, tool_choice=, parallel_tool_calls= checked and normalised (gen_ai.tools)."""
    from .tools import check_parallel, normalize_tool_choice, normalize_tools

    if kind != "chat" and (tools or tool_choice is not None):
        raise _bad("tools", "is only for chat calls", "Use run_chat_completions (or its stream, batch, vision twins).")
    normalized = normalize_tools(tools) if tools is not None else None
    return normalized or None, normalize_tool_choice(tool_choice, normalized), check_parallel(parallel)


def _embedding_call(codec: Any, texts: Any, dimensions: Any, timeout: Any, as_numpy: Any, batch_size: Any,
                    max_concurrent: Any, extra: dict[str, Any]) -> EmbeddingCall:
    if not getattr(codec, "embedding_batch_size", 0):
        raise InvalidInputError(f"provider {codec.provider!r} has no embeddings endpoint",
                                suggestion="Use a provider that serves embeddings: openai (and compatible servers), "
                                           "azure, gemini, bedrock or local.", field="provider")
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
        raise _bad("texts", f"must be a list of strings, got {type(texts).__name__}",
                   "Pass [\"first text\", \"second text\"] (a single text as a one-item list).")
    if not texts:
        raise _bad("texts", "is empty", "Pass at least one text to embed.")
    rejects_empty = codec.embedding_rejects_empty
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise _bad(f"texts[{i}]", f"must be a string, got {type(text).__name__}", "Convert it with str().")
        if rejects_empty and not text:
            raise _bad(f"texts[{i}]", f"is an empty string, which provider {codec.provider!r} rejects",
                       "Drop empty texts (or replace them with a placeholder such as ' ').")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)
                                   or dimensions < 1):
        raise _bad("dimensions", f"must be a whole number >= 1 or None, got {dimensions!r}", "Pass e.g. 256.")
    if not _is_number(timeout) or timeout <= 0:
        raise _bad("timeout", f"must be a number of seconds > 0, got {timeout!r}", "Pass e.g. timeout=30.")
    for name, value in (("batch_size", batch_size), ("max_concurrent", max_concurrent)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise _bad(name, f"must be a whole number >= 1, got {value!r}", f"Pass e.g. {name}=64.")
    if extra:
        clash = {"input", "model", "encoding_format"}.intersection(extra)
        if clash:
            name = sorted(clash)[0]
            raise _bad(name, "is set by the client and cannot be passed as an extra keyword",
                       "Pass the texts as the first argument; the model is the client's.")
    if as_numpy:
        try:
            import numpy  # noqa: F401
        except ImportError:
            raise _bad("as_numpy", "needs numpy, which is not installed", "pip install numpy, or drop as_numpy.") \
                from None
    return EmbeddingCall(list(texts), dimensions=dimensions, timeout=timeout, extra=extra, as_numpy=bool(as_numpy),
                         batch_size=batch_size, max_concurrent=max_concurrent or 4)


def _make_hooks(hooks: Any, telemetry: Any, codec: Any) -> Any:
    """The client's HookSet, or None when nothing observes calls (the common, fastest case).

    ``telemetry="auto"`` adds the OpenTelemetry hooks when ``opentelemetry`` is importable
    (looked up, not imported: with the extra not installed this costs one path lookup per
    client and nothing per call); ``True`` requires it, ``False`` leaves it out."""
    chosen: list[Any] = []
    if hooks is not None:  # gen_ai.hooks is imported only when something observes calls
        from .hooks import Hooks

        chosen = [hooks] if isinstance(hooks, Hooks) else list(hooks)
        for i, hook in enumerate(chosen):
            if not isinstance(hook, Hooks):
                raise InvalidInputError(f"hooks[{i}]: {type(hook).__name__} is not a gen_ai.Hooks",
                                        suggestion="Subclass gen_ai.Hooks and override the methods you need.",
                                        field=f"hooks[{i}]")
    if telemetry not in (True, False, "auto"):
        raise InvalidInputError(f"telemetry: must be True, False or 'auto', got {telemetry!r}",
                                suggestion="Leave it at 'auto' to trace when OpenTelemetry is installed.",
                                field="telemetry")
    if telemetry is True or (telemetry == "auto" and _otel_installed()):
        from .telemetry import OpenTelemetryHooks

        chosen.append(OpenTelemetryHooks())
    if not chosen:
        return None
    from .hooks import HookSet

    return HookSet(chosen, codec)


def _otel_installed() -> bool:
    import importlib.util

    from ._speedups import switched_off

    if switched_off("GEN_AI_TELEMETRY"):
        return False
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False


class Client:
    """A client for one provider and model. Thread-safe; share one per process.

    Made by ``gen_ai.factory.create_client``. Holds one connection pool for sync calls and one
    (per event loop) for async calls; ``close()`` / ``aclose()`` or a ``with`` block frees them.
    """

    def __init__(
        self,
        codec: Any,
        *,
        max_retries: int = 2,
        timeout: Any = None,
        schema_retries: int = 1,
        max_connections: int = 256,
        transport: Any = None,
        async_transport: Any = None,
        allow_local_files: bool = False,
        hooks: Any = None,
        telemetry: Any = "auto",
        follow_redirects: bool = False,
        proxy: str | None = None,
        trust_env: bool = True,
        verify: Any = True,
        cert: Any = None,
    ) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidInputError(f"max_retries must be a whole number >= 0, got {max_retries!r}",
                                    field="max_retries")
        if not isinstance(schema_retries, int) or isinstance(schema_retries, bool) or schema_retries < 0:
            raise InvalidInputError(f"schema_retries must be a whole number >= 0, got {schema_retries!r}",
                                    field="schema_retries")
        if not isinstance(allow_local_files, bool):
            raise InvalidInputError(f"allow_local_files must be True or False, got {allow_local_files!r}",
                                    field="allow_local_files")
        # The network policy (docs/security.md), shared by both transports.
        options = HTTPOptions(timeout, follow_redirects=follow_redirects, proxy=proxy, trust_env=trust_env,
                              verify=verify, cert=cert)
        self._timeouts = options  # what new_async_transport() copies: the whole policy, not just timeouts
        self._codec = codec
        # Image parts inside messages may name local files only when the caller opts in.
        self.allow_local_files = allow_local_files
        # What this client learns about its server (dialect, n limit, ...): never in the codec.
        self._state = ServerState()
        self.max_retries = max_retries
        self.schema_retries = schema_retries
        self.timeout = options.timeout
        self._default_timeout = options.timeout.total  # a call's timeout when it passes none
        self._net_secrets = options.secrets()
        self._transport = transport if transport is not None else SyncTransport(options)
        self._async_transport = (async_transport if async_transport is not None
                                 else AsyncTransport(options, max_connections))
        wrap = getattr(codec, "wrap_transport", None)
        if wrap is not None:  # several endpoints (gen_ai.replicas): count and route per replica
            self._transport = wrap(self._transport, False)
            self._async_transport = wrap(self._async_transport, True)
        self._hooks = _make_hooks(hooks, telemetry, codec)

    # -- introspection ----------------------------------------------------------------------

    @property
    def _secrets(self) -> tuple[str, ...]:
        # Asked each time: some credentials change (token callables, refreshed AWS credentials).
        return tuple(self._codec.secrets()) + self._net_secrets

    @property
    def provider(self) -> str:
        return str(self._codec.provider)

    @property
    def model_name(self) -> str | None:
        return getattr(self._codec, "model_name", None)

    @property
    def codec(self) -> Any:
        return self._codec

    @property
    def server_state(self) -> ServerState:
        """What this client has learned about its server (detected kind, structured-output
        dialect, n limit, ...); see gen_ai/_state.py. Runners pass it to ``_core`` flows."""
        return self._state

    # -- the seam runners (gen_ai.batch, gen_ai.ray_data) use instead of private attributes --

    def secrets(self) -> tuple[str, ...]:
        """The credential values to scrub from errors and logs, as of now."""
        return self._secrets

    @property
    def transport(self) -> Any:
        """The sync transport (connection pool) the client's calls go through."""
        return self._transport

    @property
    def async_transport(self) -> Any:
        """The async transport (aiohttp pool, per event loop) of the ``arun_*`` calls."""
        return self._async_transport

    def new_async_transport(self, max_connections: int) -> Any:
        """A fresh async pool with this client's network policy, for a private event loop (the caller
        closes it); None when the client's async transport is not an HTTP pool."""
        inner = getattr(self._async_transport, "inner", self._async_transport)
        if not isinstance(inner, AsyncTransport):
            return None
        from ._http_lean import LeanAsyncTransport, lean_allowed

        cls = LeanAsyncTransport if lean_allowed(self._timeouts) else AsyncTransport
        fresh = cls(self._timeouts, max_connections=max_connections)
        wrap = getattr(self._codec, "wrap_transport", None)
        return fresh if wrap is None else wrap(fresh, True)

    @property
    def hooks(self) -> Any:
        """The client's ``gen_ai.hooks.HookSet``, or None when nothing observes its calls."""
        return self._hooks

    validate_params = staticmethod(validate_params)

    def build_call(self, kind: str, source: Any, max_tokens: Any, temperature: Any, top_p: Any, n: Any,
                   timeout: Any, guided_json: Any, schema_retries: Any, stream: bool,
                   extra: dict[str, Any]) -> Call:
        """Validate one call's input and build its ``Call`` (what every ``run_*`` method sends).
        ``kind`` is "chat" (``source`` = messages) or "completion" (``source`` = prompt)."""
        return self._call(kind, source, max_tokens, temperature, top_p, n, timeout, guided_json,
                          schema_retries, stream, extra)

    def __repr__(self) -> str:
        return f"<gen_ai.Client provider={self.provider!r} model={self.model_name!r} codec={self._codec!r}>"

    # -- building calls ---------------------------------------------------------------------

    def _call(self, kind: str, source: Any, max_tokens: Any, temperature: Any, top_p: Any, n: Any,
              timeout: Any, guided_json: Any, schema_retries: Any, stream: bool,
              extra: dict[str, Any]) -> Call:
        call, images = self._make_call(kind, source, max_tokens, temperature, top_p, n, timeout, guided_json,
                                       schema_retries, stream, extra)
        if images:
            self._prepare_images(call)
        return call

    def _prepare_images(self, call: Call) -> Call:
        """Read, check and embed the images of the call's messages (may read files: blocking)."""
        from .images import prepare_messages

        call.messages = prepare_messages(call.messages or [], allow_local_files=self.allow_local_files)
        return call

    def _make_call(self, kind: str, source: Any, max_tokens: Any, temperature: Any, top_p: Any, n: Any,
                   timeout: Any, guided_json: Any, schema_retries: Any, stream: bool,
                   extra: dict[str, Any]) -> tuple[Call, bool]:
        """The validated Call, and whether its messages still hold images to prepare (the part
        that may block: async callers run ``_prepare_images`` off the event loop)."""
        if timeout is None:
            timeout = self._default_timeout
        validate_params(max_tokens, temperature, top_p, n, timeout)
        tools = tool_choice = parallel = None
        effort = None
        logprobs = False
        top_logprobs = None
        if extra:
            extra = dict(extra)
            if "tools" in extra or "tool_choice" in extra or "parallel_tool_calls" in extra:
                tools, tool_choice, parallel = _tool_options(extra.pop("tools", None), extra.pop("tool_choice", None),
                                                             extra.pop("parallel_tool_calls", None), kind)
            extra = _check_extra(extra, self._codec, kind)
            if not _CALL_OPTIONS.isdisjoint(extra):
                effort, logprobs, top_logprobs = _call_options(extra)
        messages = prompt = None
        images = False
        if kind == "chat":
            messages, images = _check_messages(source)
        else:
            if not isinstance(source, str) or not source:
                raise _bad("prompt", f"must be a non-empty string, got {type(source).__name__}"
                           f"{'' if source else ' (empty)'}", "Pass the text to complete as a string.")
            prompt = source
        schema = None
        if guided_json is not None:
            from .structured import Schema

            schema = Schema.from_user(guided_json)
        if schema_retries is None:
            schema_retries = self.schema_retries
        elif not isinstance(schema_retries, int) or isinstance(schema_retries, bool) or schema_retries < 0:
            raise _bad("schema_retries", f"must be a whole number >= 0, got {schema_retries!r}", "Pass e.g. 1.")
        return new_call(kind, messages, prompt, max_tokens, temperature, top_p, n, timeout, schema, stream, extra,
                        schema_retries, tools, tool_choice, parallel, effort, logprobs, top_logprobs), images

    def _failed_call(self, exc: GenAIError, observer: Any, return_error: bool) -> Any:
        """A call's error: scrubbed, reported to the hooks, then returned as a dict or raised."""
        exc.redact(self._secrets)
        if observer is not None:
            observer.end(error=exc)
        if return_error:
            return None, exc.to_dict()
        raise exc from None

    @staticmethod
    def _done_call(result: Any, observer: Any, return_error: bool) -> Any:
        if observer is not None:
            observer.end(result)
        return (result, None) if return_error else result

    def _run(self, build: Any, return_error: bool) -> Any:
        observer = None
        try:
            call = build()
            if self._hooks is not None:
                observer = self._hooks.begin_call(call)
            result = _core.call_sync(self._codec, call, self.max_retries, observer, self._state, self._transport,
                                     self._codec.secrets)
        except GenAIError as exc:
            return self._failed_call(exc, observer, return_error)
        return self._done_call(result, observer, return_error)

    async def _arun(self, build: Any, return_error: bool, offload_build: bool = False) -> Any:
        """``build`` returns ``(call, images)`` (see ``_make_call``); with ``offload_build`` it
        runs in the worker pool (it reads files)."""
        observer = None
        try:
            if offload_build:
                from ._offload import offload

                call, images = await offload(build)
            else:
                call, images = build()
            if images:
                from ._offload import offload

                call = await offload(self._prepare_images, call)
            if self._hooks is not None:
                observer = self._hooks.begin_call(call)
            result = await _core.call_async(self._codec, call, self.max_retries, observer, self._state,
                                            self._async_transport, self._codec.secrets)
        except GenAIError as exc:
            return self._failed_call(exc, observer, return_error)
        return self._done_call(result, observer, return_error)

    def _stream(self, cls: type[_S], kind: str, source: Any, max_tokens: Any, temperature: Any, top_p: Any,
                n: Any, timeout: Any, guided_json: Any, return_error: bool, extra: dict[str, Any]) -> _S:
        def build() -> tuple[Call, bool]:
            return self._make_call(kind, source, max_tokens, temperature, top_p, n, timeout, guided_json, 0, True,
                                   extra)

        # Bad input raises here, at the call, unless return_error asks for it in stream.error.
        # Images are prepared when the stream starts (off the event loop for async streams).
        return cls(self, None if return_error else build(), return_error, build)

    # -- chat -------------------------------------------------------------------------------

    def run_chat_completions(self, messages: list[dict[str, Any]], max_tokens: int = 256,
                             temperature: float = 0, top_p: float = 1.0, n: int = 1, timeout: float | None = None,
                             guided_json: Any = None, return_error: bool = False,
                             schema_retries: int | None = None, **extra: Any) -> Any:
        """Chat completion. Returns the answer as a ``ChatResult`` (a ``str``); a ``ChatResults``
        list for ``n > 1``; ``(result, error_dict)`` with ``return_error=True``."""
        return self._run(lambda: self._call("chat", messages, max_tokens, temperature, top_p, n, timeout,
                                            guided_json, schema_retries, False, extra), return_error)

    async def arun_chat_completions(self, messages: list[dict[str, Any]], max_tokens: int = 256,
                                    temperature: float = 0, top_p: float = 1.0, n: int = 1,
                                    timeout: float | None = None, guided_json: Any = None,
                                    return_error: bool = False, schema_retries: int | None = None,
                                    **extra: Any) -> Any:
        return await self._arun(lambda: self._make_call("chat", messages, max_tokens, temperature, top_p, n,
                                                        timeout, guided_json, schema_retries, False, extra),
                                return_error)

    def run_chat_completions_stream(self, messages: list[dict[str, Any]], max_tokens: int = 256,
                                    temperature: float = 0, top_p: float = 1.0, n: int = 1,
                                    timeout: float | None = None, guided_json: Any = None,
                                    return_error: bool = False, **extra: Any) -> "TextStream":
        """Yields text deltas as they arrive; the returned stream has ``.usage``,
        ``.finish_reason``, ``.text`` once iteration ends."""
        return self._stream(TextStream, "chat", messages, max_tokens, temperature, top_p, n, timeout,
                            guided_json, return_error, extra)

    def arun_chat_completions_stream(self, messages: list[dict[str, Any]], max_tokens: int = 256,
                                     temperature: float = 0, top_p: float = 1.0, n: int = 1,
                                     timeout: float | None = None, guided_json: Any = None,
                                     return_error: bool = False, **extra: Any) -> "AsyncTextStream":
        return self._stream(AsyncTextStream, "chat", messages, max_tokens, temperature, top_p, n, timeout,
                            guided_json, return_error, extra)

    # -- the tool loop ----------------------------------------------------------------------

    def run_tools(self, messages: list[dict[str, Any]], tools: list[Any], max_turns: int = 8,
                  timeout: float = 120, tool_choice: Any = None, parallel_tool_calls: bool | None = None,
                  raise_errors: bool = False, **options: Any) -> ChatResult:
        """Ask the model, run the Python functions it calls, send back the results, until it
        answers (at most ``max_turns`` model calls; ``timeout`` bounds the whole loop). Returns
        the final ChatResult with ``.transcript``, ``.tool_runs``, ``.total_usage``, ``.turns``.
        A tool that raises is reported to the model as an error result unless ``raise_errors``.
        Other keywords (max_tokens, temperature, ...) go to every model call. See docs/tools.md."""
        from .tool_loop import run_tools

        try:
            return run_tools(self, messages, tools, max_turns=max_turns, timeout=timeout, tool_choice=tool_choice,
                             parallel_tool_calls=parallel_tool_calls, raise_errors=raise_errors, **options)
        except GenAIError as exc:
            raise exc.redact(self._secrets) from exc.__cause__

    async def arun_tools(self, messages: list[dict[str, Any]], tools: list[Any], max_turns: int = 8,
                         timeout: float = 120, tool_choice: Any = None, parallel_tool_calls: bool | None = None,
                         raise_errors: bool = False, **options: Any) -> ChatResult:
        """The async twin of ``run_tools``: async tools are awaited, sync ones run in threads."""
        from .tool_loop import arun_tools

        try:
            return await arun_tools(self, messages, tools, max_turns=max_turns, timeout=timeout,
                                    tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                                    raise_errors=raise_errors, **options)
        except GenAIError as exc:
            raise exc.redact(self._secrets) from exc.__cause__

    # -- text completions -------------------------------------------------------------------

    def run_completions(self, prompt: str, max_tokens: int = 256, temperature: float = 0,
                        top_p: float = 1.0, n: int = 1, timeout: float | None = None, guided_json: Any = None,
                        return_error: bool = False, schema_retries: int | None = None,
                        **extra: Any) -> Any:
        """Text completion of ``prompt``; same parameters and results as chat."""
        return self._run(lambda: self._call("completion", prompt, max_tokens, temperature, top_p, n,
                                            timeout, guided_json, schema_retries, False, extra), return_error)

    async def arun_completions(self, prompt: str, max_tokens: int = 256, temperature: float = 0,
                               top_p: float = 1.0, n: int = 1, timeout: float | None = None,
                               guided_json: Any = None, return_error: bool = False,
                               schema_retries: int | None = None, **extra: Any) -> Any:
        return await self._arun(lambda: self._make_call("completion", prompt, max_tokens, temperature, top_p,
                                                        n, timeout, guided_json, schema_retries, False, extra),
                                return_error)

    def run_completions_stream(self, prompt: str, max_tokens: int = 256, temperature: float = 0,
                               top_p: float = 1.0, n: int = 1, timeout: float | None = None,
                               guided_json: Any = None, return_error: bool = False,
                               **extra: Any) -> "TextStream":
        return self._stream(TextStream, "completion", prompt, max_tokens, temperature, top_p, n, timeout,
                            guided_json, return_error, extra)

    def arun_completions_stream(self, prompt: str, max_tokens: int = 256, temperature: float = 0,
                                top_p: float = 1.0, n: int = 1, timeout: float | None = None,
                                guided_json: Any = None, return_error: bool = False,
                                **extra: Any) -> "AsyncTextStream":
        return self._stream(AsyncTextStream, "completion", prompt, max_tokens, temperature, top_p, n, timeout,
                            guided_json, return_error, extra)

    # -- vision -----------------------------------------------------------------------------

    def _vision_messages(self, prompt: Any, image_paths: Any, detail: Any, max_image_side: Any,
                         max_image_bytes: Any) -> list[dict[str, Any]]:
        from .images import vision_messages

        try:
            return vision_messages(prompt, image_paths, detail=detail, max_image_side=max_image_side,
                                   max_image_bytes=max_image_bytes, allow_local_files=self.allow_local_files)
        except GenAIError as exc:
            raise exc.redact(self._secrets) from None

    def run_vision_request(self, prompt: Any, image_paths: Any, stream: bool = False, guided_json: Any = None,
                           return_error: bool = False, max_tokens: int = 256, temperature: float = 0,
                           top_p: float = 1.0, timeout: float | None = None, max_image_side: int | None = None,
                           detail: str | None = None, max_image_bytes: int = 20 * 1024 * 1024,
                           **extra: Any) -> Any:
        """Ask about images. ``prompt`` is text or chat messages; ``image_paths`` a list of local
        paths, http(s) URLs, data URLs or bytes, attached to the last user message. Every bad
        image is reported in one InvalidInputError before anything is sent. Returns what
        ``run_chat_completions`` returns, or its ``TextStream`` with ``stream=True``."""
        n, schema_retries = extra.pop("n", 1), extra.pop("schema_retries", 0 if stream else None)

        def build() -> tuple[Call, bool]:
            messages = self._vision_messages(prompt, image_paths, detail, max_image_side, max_image_bytes)
            return self._make_call("chat", messages, max_tokens, temperature, top_p, n, timeout, guided_json,
                                   schema_retries, stream, extra)

        if stream:
            return TextStream(self, None if return_error else build(), return_error, build)
        return self._run(lambda: self._call_of(build), return_error)

    def arun_vision_request(self, prompt: Any, image_paths: Any, stream: bool = False,
                            guided_json: Any = None, return_error: bool = False, max_tokens: int = 256,
                            temperature: float = 0, top_p: float = 1.0, timeout: float | None = None,
                            max_image_side: int | None = None, detail: str | None = None,
                            max_image_bytes: int = 20 * 1024 * 1024, **extra: Any) -> Any:
        """Async twin of ``run_vision_request``: ``await`` it for the answer. With ``stream=True``
        it returns an ``AsyncTextStream``, like every ``arun_*_stream`` method: iterate it with
        ``async for`` (awaiting it first is allowed, and raises bad input there). Images are read
        and resized in a worker thread, never on the event loop."""
        n, schema_retries = extra.pop("n", 1), extra.pop("schema_retries", 0 if stream else None)

        def build() -> tuple[Call, bool]:
            messages = self._vision_messages(prompt, image_paths, detail, max_image_side, max_image_bytes)
            call, images = self._make_call("chat", messages, max_tokens, temperature, top_p, n, timeout,
                                           guided_json, schema_retries, stream, extra)
            return (self._prepare_images(call) if images else call), False

        if stream:
            return AsyncTextStream(self, None, return_error, build, offload_build=True)

        return self._arun(build, return_error, offload_build=True)

    def _call_of(self, build: Any) -> Call:
        call, images = build()
        return self._prepare_images(call) if images else call

    # -- embeddings -------------------------------------------------------------------------

    def embedding_call(self, texts: Any, dimensions: Any = None, timeout: Any = None, as_numpy: bool = False,
                       batch_size: Any = None, max_concurrent: Any = 4,
                       extra: dict[str, Any] | None = None) -> EmbeddingCall:
        """Validate an embeddings call and build it (raises ``InvalidInputError`` naming the bad
        index before anything is sent)."""
        return _embedding_call(self._codec, texts, dimensions, self._timeout_for(timeout), as_numpy, batch_size,
                               max_concurrent, extra or {})

    def run_embeddings(self, texts: list[str], dimensions: int | None = None, timeout: float | None = None,
                       return_error: bool = False, *, as_numpy: bool = False, batch_size: int | None = None,
                       max_concurrent: int = 4, **extra: Any) -> Any:
        """Embed ``texts``: returns ``Embeddings``, a list of vectors in input order (lists of
        floats, or float32 numpy arrays with ``as_numpy=True``) with ``.usage``, ``.model``,
        ``.latency``. Long lists are sent as requests of ``batch_size`` texts (default: the
        provider's), ``max_concurrent`` at a time. ``(result, error_dict)`` with
        ``return_error=True``. See docs/embeddings.md."""
        observer = None
        try:
            call = self.embedding_call(texts, dimensions, timeout, as_numpy, batch_size, max_concurrent, extra)
            if self._hooks is not None:
                observer = self._embedding_observer(call)
            result = _core.run_sync(_core.embedding_flow(self._codec, call, self.max_retries, observer,
                                                         self._state),
                                    self._transport, self._codec.secrets)
        except GenAIError as exc:
            return self._failed_call(exc, observer, return_error)
        return self._done_call(result, observer, return_error)

    def _embedding_observer(self, call: EmbeddingCall) -> Any:
        params = {"dimensions": call.dimensions, "inputs": len(call.inputs),
                  "encoding_format": call.extra.get("encoding_format") or getattr(self._codec, "embedding_encoding",
                                                                                   None)}
        return self._hooks.begin("embeddings", params=params)

    async def arun_embeddings(self, texts: list[str], dimensions: int | None = None, timeout: float | None = None,
                              return_error: bool = False, *, as_numpy: bool = False,
                              batch_size: int | None = None, max_concurrent: int = 4, **extra: Any) -> Any:
        """Async twin of ``run_embeddings``."""
        observer = None
        try:
            call = self.embedding_call(texts, dimensions, timeout, as_numpy, batch_size, max_concurrent, extra)
            if self._hooks is not None:
                observer = self._embedding_observer(call)
            result = await _core.run_async(_core.embedding_flow(self._codec, call, self.max_retries, observer,
                                                                self._state),
                                           self._async_transport, self._codec.secrets)
        except GenAIError as exc:
            return self._failed_call(exc, observer, return_error)
        return self._done_call(result, observer, return_error)

    # -- batch ------------------------------------------------------------------------------
    # Thin delegations to gen_ai.batch (imported on first use); see docs/batch.md.

    def run_chat_completions_batch(self, messages_list: list[list[dict[str, Any]]], max_tokens: int = 256,
                                   temperature: float = 0, top_p: float = 1.0, n: int = 1,
                                   timeout: float | None = None, guided_json: Any = None, concurrent: bool = True,
                                   max_concurrent: int = 5, return_error: bool = False, progress: Any = None,
                                   requests_per_minute: float | None = None,
                                   tokens_per_minute: float | None = None, **extra: Any) -> Any:
        """Many chat completions. Returns a ``BatchResults`` list in input order (``None`` for a
        failed item; ``.errors``, ``.stats``); ``(results, errors)`` with ``return_error=True``."""
        from .batch import run_batch

        return run_batch(self, "chat", messages_list, max_tokens=max_tokens, temperature=temperature,
                         top_p=top_p, n=n, timeout=self._timeout_for(timeout), guided_json=guided_json,
                         concurrent=concurrent, max_concurrent=max_concurrent, return_error=return_error,
                         progress=progress,
                         requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                         **extra)

    async def arun_chat_completions_batch(self, messages_list: list[list[dict[str, Any]]],
                                          max_tokens: int = 256, temperature: float = 0, top_p: float = 1.0,
                                          n: int = 1, timeout: float | None = None, guided_json: Any = None,
                                          concurrent: bool = True, max_concurrent: int = 5,
                                          return_error: bool = False, progress: Any = None,
                                          requests_per_minute: float | None = None,
                                          tokens_per_minute: float | None = None, **extra: Any) -> Any:
        from .batch import arun_batch

        return await arun_batch(self, "chat", messages_list, max_tokens=max_tokens, temperature=temperature,
                                top_p=top_p, n=n, timeout=self._timeout_for(timeout), guided_json=guided_json,
                                concurrent=concurrent, max_concurrent=max_concurrent,
                                return_error=return_error, progress=progress,
                                requests_per_minute=requests_per_minute,
                                tokens_per_minute=tokens_per_minute, **extra)

    def run_completions_batch(self, prompts: list[str], max_tokens: int = 256, temperature: float = 0,
                              top_p: float = 1.0, n: int = 1, timeout: float | None = None, guided_json: Any = None,
                              concurrent: bool = True, max_concurrent: int = 5, return_error: bool = False,
                              progress: Any = None, requests_per_minute: float | None = None,
                              tokens_per_minute: float | None = None, **extra: Any) -> Any:
        """Many text completions; same parameters and results as ``run_chat_completions_batch``."""
        from .batch import run_batch

        return run_batch(self, "completion", prompts, max_tokens=max_tokens, temperature=temperature,
                         top_p=top_p, n=n, timeout=self._timeout_for(timeout), guided_json=guided_json,
                         concurrent=concurrent, max_concurrent=max_concurrent, return_error=return_error,
                         progress=progress,
                         requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                         **extra)

    async def arun_completions_batch(self, prompts: list[str], max_tokens: int = 256, temperature: float = 0,
                                     top_p: float = 1.0, n: int = 1, timeout: float | None = None,
                                     guided_json: Any = None, concurrent: bool = True, max_concurrent: int = 5,
                                     return_error: bool = False, progress: Any = None,
                                     requests_per_minute: float | None = None,
                                     tokens_per_minute: float | None = None, **extra: Any) -> Any:
        from .batch import arun_batch

        return await arun_batch(self, "completion", prompts, max_tokens=max_tokens, temperature=temperature,
                                top_p=top_p, n=n, timeout=self._timeout_for(timeout), guided_json=guided_json,
                                concurrent=concurrent, max_concurrent=max_concurrent,
                                return_error=return_error, progress=progress,
                                requests_per_minute=requests_per_minute,
                                tokens_per_minute=tokens_per_minute, **extra)

    def run_embeddings_batch(self, texts: list[str], dimensions: int | None = None, timeout: float | None = None,
                             batch_size: int | None = None, max_concurrent: int = 8, return_error: bool = False,
                             progress: Any = None, requests_per_minute: float | None = None,
                             tokens_per_minute: float | None = None, as_numpy: bool = False,
                             **extra: Any) -> Any:
        """Embed many texts as a batch: requests of ``batch_size`` texts under the batch's rate
        limits, pause and progress. Returns a ``BatchResults`` with one vector per text (None
        where its request failed; ``.errors`` per text; ``.stats`` per request)."""
        from .batch import run_embeddings_batch

        return run_embeddings_batch(self, texts, dimensions=dimensions, timeout=timeout, batch_size=batch_size,
                                    max_concurrent=max_concurrent, return_error=return_error, progress=progress,
                                    requests_per_minute=requests_per_minute,
                                    tokens_per_minute=tokens_per_minute, as_numpy=as_numpy, **extra)

    async def arun_embeddings_batch(self, texts: list[str], dimensions: int | None = None, timeout: float | None = None,
                                    batch_size: int | None = None, max_concurrent: int = 8,
                                    return_error: bool = False, progress: Any = None,
                                    requests_per_minute: float | None = None,
                                    tokens_per_minute: float | None = None, as_numpy: bool = False,
                                    **extra: Any) -> Any:
        from .batch import arun_embeddings_batch

        return await arun_embeddings_batch(self, texts, dimensions=dimensions, timeout=timeout,
                                           batch_size=batch_size, max_concurrent=max_concurrent,
                                           return_error=return_error, progress=progress,
                                           requests_per_minute=requests_per_minute,
                                           tokens_per_minute=tokens_per_minute, as_numpy=as_numpy, **extra)

    # The name the original documentation used.
    generate_batch_response = run_completions_batch
    agenerate_batch_response = arun_completions_batch

    def run_batch_file(self, input: Any, output: Any, *, max_concurrent: int = 16, timeout: float | None = None,
                       max_tokens: int = 256, progress: Any = None, requests_per_minute: float | None = None,
                       tokens_per_minute: float | None = None, retry_failed: bool = True,
                       use_body_model: bool = False, fsync: bool = False) -> Any:
        """Run an OpenAI Batch API JSONL file into an OpenAI batch output JSONL file; rerun the
        same call to resume after a crash. Returns the run's ``BatchStats``."""
        from .batch import run_batch_file

        return run_batch_file(self, input, output, max_concurrent=max_concurrent,
                              timeout=self._timeout_for(timeout),
                              max_tokens=max_tokens, progress=progress, requests_per_minute=requests_per_minute,
                              tokens_per_minute=tokens_per_minute, retry_failed=retry_failed,
                              use_body_model=use_body_model, fsync=fsync)

    async def arun_batch_file(self, input: Any, output: Any, *, max_concurrent: int = 16, timeout: float | None = None,
                              max_tokens: int = 256, progress: Any = None,
                              requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                              retry_failed: bool = True, use_body_model: bool = False,
                              fsync: bool = False) -> Any:
        from .batch import arun_batch_file

        return await arun_batch_file(self, input, output, max_concurrent=max_concurrent,
                                     timeout=self._timeout_for(timeout),
                                     max_tokens=max_tokens, progress=progress,
                                     requests_per_minute=requests_per_minute,
                                     tokens_per_minute=tokens_per_minute, retry_failed=retry_failed,
                                     use_body_model=use_body_model, fsync=fsync)

    def _timeout_for(self, timeout: Any) -> Any:
        return self._default_timeout if timeout is None else timeout

    # -- models -----------------------------------------------------------------------------

    def list_models(self, timeout: float = 30) -> list[dict[str, Any]]:
        """The models the endpoint serves (``GET /v1/models`` or the provider's equivalent), each a
        dict with an ``id`` plus what the provider tells (``owned_by``, ``display_name``, ...).
        An empty list for providers that cannot list (the in-process model)."""
        if not _is_number(timeout) or timeout <= 0:
            raise _bad("timeout", f"must be a number of seconds > 0, got {timeout!r}", "Pass e.g. timeout=30.")
        models_request = getattr(self._codec, "models_request", None)  # replicas: none
        request = models_request() if models_request is not None else None
        if request is None:
            return []
        try:
            return list(_core.run_sync(_models_flow(self._codec, request, timeout), self._transport,
                                       self._codec.secrets))
        except GenAIError as exc:
            raise exc.redact(self._secrets) from None

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync pool and every async session (of any event loop); safe to call twice."""
        self._transport.close()
        close_async = getattr(self._async_transport, "close_sync", None)
        if close_async is not None:
            close_async()

    async def aclose(self) -> None:
        await self._async_transport.close()
        self._transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _models_flow(codec: Any, request: Any, timeout: float) -> _core.Flow:
    response = yield _core.Send(request, timeout)
    if response.status >= 300:
        error = codec.parse_error(response)
        if error.provider is None:
            error.provider = codec.provider
        raise error.redact(codec.secrets())
    return codec.parse_models(response)


_S = TypeVar("_S", bound="_StreamBase")


def _stream_reused(kind: str) -> InvalidInputError:
    return InvalidInputError(
        f"this stream was already {kind}; a stream is read once and never sends its request again",
        suggestion="Call the *_stream method again for a new request; after the loop, read .text, .usage "
                   "and .finish_reason from this stream.",
        field="stream",
    )


class _StreamBase:
    """What sync and async streams share: the result attributes and the end-of-stream checks.

    A stream sends its request when iteration starts, once: iterating it a second time, or
    after ``close()``, raises InvalidInputError instead of sending the request again."""

    def __init__(self, client: Client, built: tuple[Call, bool] | None, return_error: bool, build: Any) -> None:
        self._client = client
        self._call: Call | None = None
        self._images = False
        if built is not None:
            self._call, self._images = built
        self._build = build
        self._return_error = return_error
        self._parser: Any = None
        self._response: Any = None
        self._observer: Any = None  # the hooks' view of this stream (gen_ai.hooks), when traced
        self._started = False
        self._closed = False
        self._start = time.perf_counter()
        self.first_token_latency: float | None = None  # to the first answer-text delta
        self.first_reasoning_latency: float | None = None  # to the first thinking-text delta
        self.latency: float | None = None
        self.error: dict[str, Any] | None = None
        self.parsed: Any = None

    @property
    def text(self) -> str:
        return self._parser.text if self._parser is not None else ""

    @property
    def texts(self) -> list[str]:
        parser = self._parser
        return getattr(parser, "texts", [self.text]) if parser is not None else []

    @property
    def usage(self) -> Usage | None:
        return self._parser.usage if self._parser is not None else None

    @property
    def finish_reason(self) -> str | None:
        return self._parser.finish_reason if self._parser is not None else None

    @property
    def reasoning(self) -> str | None:
        """The thinking text that streamed (never part of the iterated answer text), or None."""
        return self._parser.reasoning if self._parser is not None else None

    @property
    def reasoning_details(self) -> list[dict[str, Any]] | None:
        return self._parser.reasoning_details if self._parser is not None else None

    @property
    def logprobs(self) -> Any:
        return self._parser.logprobs if self._parser is not None else None

    @property
    def model(self) -> str | None:
        return self._parser.model if self._parser is not None else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls of the answer, complete once iteration has ended (empty if none)."""
        return self._parser.tool_calls if self._parser is not None else []

    @property
    def closed(self) -> bool:
        return self._closed

    def _claim(self) -> None:
        if self._closed:
            raise _stream_reused("closed")
        if self._started:
            raise _stream_reused("iterated")
        self._started = True

    def _finish(self) -> None:
        self.latency = time.perf_counter() - self._start
        parser = self._parser
        if parser._tools is not None:
            parser.check_tool_calls(self._client._codec.provider)
        call = self._call
        if call is not None and call.schema is not None:
            try:
                self.parsed = call.schema.validate(self.text)
            except SchemaValidationError as exc:
                if self.finish_reason != "length":
                    raise
                from .structured import cut_off

                raise cut_off(exc, call.max_tokens, self._client.provider) from None

    def _done_event(self) -> StreamEvent:
        return StreamEvent("done", finish_reason=self.finish_reason, usage=self.usage,
                           tool_calls=self.tool_calls)

    def _failed(self, exc: GenAIError) -> bool:
        """Scrub the error and keep the text that arrived before it on ``exc.partial_text``;
        True when it should be kept in ``.error`` instead of raised."""
        if exc.partial_text is None and self._parser is not None:
            exc.partial_text = self._parser.text
        exc.redact(self._client._secrets)
        if self._return_error:
            self.error = exc.to_dict()
            return True
        return False

    def _end_observer(self, error: GenAIError | None = None) -> None:
        """End the stream's trace (hooks): with the error, or with what arrived (whole, or up
        to where the caller closed the stream). Only the first call counts."""
        observer, self._observer = self._observer, None
        if observer is not None:
            if error is not None:
                observer.end(error=error)
            else:
                observer.end(self.to_result() if self._parser is not None else None)

    def _release(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    def to_result(self) -> ChatResult:
        """The whole streamed answer as a ChatResult (after iteration)."""
        result = ChatResult(self.text, finish_reason=self.finish_reason, usage=self.usage, model=self.model,
                            latency=self.latency or 0.0, parsed=self.parsed, tool_calls=self.tool_calls or None)
        for name in ("reasoning", "reasoning_details", "logprobs"):
            value = getattr(self, name)
            if value is not None:
                setattr(result, name, value)
        return result


class TextStream(_StreamBase):
    """Iterate once for text deltas. After the loop: ``.text``, ``.usage``, ``.finish_reason``,
    ``.latency``, ``.first_token_latency``, ``.parsed`` (guided_json) and, with
    ``return_error=True``, ``.error`` (None on success) instead of an exception.

    ``close()`` (or leaving a ``with`` block) ends the stream early and frees its connection."""

    _iterator: Any = None

    def __iter__(self) -> Iterator[str]:
        self._claim()
        self._iterator = self._iterate()
        return self._iterator  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop reading and free the connection; safe to call at any time, more than once."""
        self._closed = True
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            iterator.close()
        self._release()

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def events(self) -> Iterator[StreamEvent]:
        """Iterate typed events instead of text: "text", "tool_call_start", "tool_call_delta",
        ("reasoning" where the provider sends thinking text) and a final "done". Read once, like
        the text iteration (the two share the one request)."""
        self._claim()
        self._iterator = self._iterate(True)
        return self._iterator  # type: ignore[no-any-return]

    def _iterate(self, events: bool = False) -> Iterator[Any]:
        client = self._client
        try:
            if self._call is None:
                self._call, self._images = self._build()
            if self._images:
                client._prepare_images(self._call)
                self._images = False
            call = self._call
            codec = client._codec
            if client._hooks is not None:
                self._observer = client._hooks.begin_call(call)
            self._response = response = _core.run_sync(
                _core.stream_open_flow(codec, call, client.max_retries, client._state, self._observer),
                client._transport, client._codec.secrets)
            self._parser = parser = codec.stream_parser(call, response.headers)
            if events:
                parser.want_events = True
                queue = parser.events
                for chunk in response.iter_bytes():
                    got_text = parser.feed(chunk)
                    if self.first_reasoning_latency is None and parser.reasoning_parts:
                        self.first_reasoning_latency = time.perf_counter() - self._start
                    if got_text and self.first_token_latency is None:
                        self.first_token_latency = time.perf_counter() - self._start
                        if self._observer is not None:
                            self._observer.first_chunk()
                    if queue:
                        yield from queue
                        queue.clear()
                parser.close()
                yield from queue
                queue.clear()
                self._finish()
                yield self._done_event()
                return
            for chunk in response.iter_bytes():
                deltas = parser.feed(chunk)
                if self.first_reasoning_latency is None and parser.reasoning_parts:
                    self.first_reasoning_latency = time.perf_counter() - self._start
                for delta in deltas:
                    if self.first_token_latency is None:
                        self.first_token_latency = time.perf_counter() - self._start
                        if self._observer is not None:
                            self._observer.first_chunk()
                    yield delta
            yield from parser.close()
            self._finish()
        except GenAIError as exc:
            if self._closed:  # closed by the caller while reading: not an error
                return
            failed = self._failed(exc)
            self._end_observer(exc)
            if not failed:
                raise exc from None
        finally:
            self._release()
            self._end_observer()


class AsyncTextStream(_StreamBase):
    """The async twin of TextStream, returned by every async streaming call
    (``arun_chat_completions_stream``, ``arun_completions_stream``,
    ``arun_vision_request(stream=True)``): ``async for delta in stream``. Awaiting the stream
    first (``stream = await client.arun_...``) is allowed and returns the same stream, with bad
    input raised there. ``await stream.aclose()``, ``close()`` or ``async with`` ends it early."""

    _iterator: Any = None

    def __init__(self, client: Client, built: tuple[Call, bool] | None, return_error: bool, build: Any,
                 offload_build: bool = False) -> None:
        super().__init__(client, built, return_error, build)
        self._offload_build = offload_build

    async def _ready(self) -> None:
        """Build the call (off the event loop when that reads files) and prepare its images."""
        if self._call is None:
            if self._offload_build:
                from ._offload import offload

                self._call, self._images = await offload(self._build)
            else:
                self._call, self._images = self._build()
        if self._images:
            from ._offload import offload

            await offload(self._client._prepare_images, self._call)
            self._images = False

    async def _prepared(self) -> "AsyncTextStream":
        try:
            await self._ready()
        except GenAIError as exc:
            if not self._failed(exc):
                raise exc from None
        return self

    def __await__(self) -> Generator[Any, None, "AsyncTextStream"]:
        return self._prepared().__await__()

    def __aiter__(self) -> AsyncIterator[str]:
        self._claim()
        self._iterator = self._iterate()
        return self._iterator  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Stop reading and free the connection; safe to call at any time, more than once."""
        self._closed = True
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            await iterator.aclose()
        self._release()

    def close(self) -> None:
        """Like ``aclose()``, callable without ``await``: frees the connection now; the loop
        reading the stream (if any) ends at its next step."""
        self._closed = True
        self._release()

    async def __aenter__(self) -> "AsyncTextStream":
        return await self._prepared()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def events(self) -> AsyncIterator[StreamEvent]:
        """``async for event in stream.events()``: the typed events of TextStream.events()."""
        self._claim()
        self._iterator = self._iterate(True)
        return self._iterator  # type: ignore[no-any-return]

    async def _iterate(self, events: bool = False) -> AsyncIterator[Any]:
        client = self._client
        try:
            if self.error is not None:  # bad input already reported by ``await``
                return
            await self._ready()
            call = self._call
            assert call is not None
            codec = client._codec
            if client._hooks is not None:
                self._observer = client._hooks.begin_call(call)
            self._response = response = await _core.run_async(
                _core.stream_open_flow(codec, call, client.max_retries, client._state, self._observer),
                client._async_transport, client._codec.secrets)
            self._parser = parser = codec.stream_parser(call, response.headers)
            if events:
                parser.want_events = True
                queue = parser.events
                async for chunk in response.iter_bytes():
                    got_text = parser.feed(chunk)
                    if self.first_reasoning_latency is None and parser.reasoning_parts:
                        self.first_reasoning_latency = time.perf_counter() - self._start
                    if got_text and self.first_token_latency is None:
                        self.first_token_latency = time.perf_counter() - self._start
                        if self._observer is not None:
                            self._observer.first_chunk()
                    for event in queue:
                        yield event
                    queue.clear()
                parser.close()
                for event in queue:
                    yield event
                queue.clear()
                self._finish()
                yield self._done_event()
                return
            async for chunk in response.iter_bytes():
                if self._closed:
                    return
                deltas = parser.feed(chunk)
                if self.first_reasoning_latency is None and parser.reasoning_parts:
                    self.first_reasoning_latency = time.perf_counter() - self._start
                for delta in deltas:
                    if self.first_token_latency is None:
                        self.first_token_latency = time.perf_counter() - self._start
                        if self._observer is not None:
                            self._observer.first_chunk()
                    yield delta
            for delta in parser.close():
                yield delta
            self._finish()
        except GenAIError as exc:
            if self._closed:
                return
            failed = self._failed(exc)
            self._end_observer(exc)
            if not failed:
                raise exc from None
        finally:
            self._release()
            self._end_observer()
