"""The public client: ``run_*`` methods, their defaults, and input validation.

Every method has an async twin with an ``a`` prefix (``arun_chat_completions``, ...). Both
build the same ``Call`` and run the same flow from ``_core``; only the driver differs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from . import _core
from ._http import AsyncTransport, SyncTransport, Timeouts
from .errors import GenAIError, InvalidInputError
from .types import Call, ChatResult, ChatResults, Usage

VALID_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
# Keywords the client owns; passing them through **extra would corrupt the request.
_RESERVED = frozenset({"stream", "messages", "prompt"})

Result = ChatResult | ChatResults


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad(field: str, message: str, suggestion: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {message}", suggestion=suggestion, field=field)


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """Check the chat messages; the error names the index and the field that is wrong."""
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
    checked: list[dict[str, Any]] = list(messages)
    if has_images:
        from .images import prepare_messages

        checked = prepare_messages(checked)
    return checked


def validate_params(max_tokens: Any, temperature: Any, top_p: Any, n: Any, timeout: Any) -> None:
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


def _check_extra(extra: dict[str, Any]) -> None:
    clash = _RESERVED.intersection(extra)
    if clash:
        name = sorted(clash)[0]
        hint = "Use the *_stream method to stream." if name == "stream" else f"Pass {name} as the first argument."
        raise _bad(name, "is set by the client and cannot be passed as an extra keyword", hint)


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
    ) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidInputError(f"max_retries must be a whole number >= 0, got {max_retries!r}",
                                    field="max_retries")
        if not isinstance(schema_retries, int) or isinstance(schema_retries, bool) or schema_retries < 0:
            raise InvalidInputError(f"schema_retries must be a whole number >= 0, got {schema_retries!r}",
                                    field="schema_retries")
        timeouts = Timeouts.from_option(timeout)
        self._codec = codec
        self.max_retries = max_retries
        self.schema_retries = schema_retries
        self._transport = transport if transport is not None else SyncTransport(timeouts)
        self._async_transport = (async_transport if async_transport is not None
                                 else AsyncTransport(timeouts, max_connections))

    # -- introspection ----------------------------------------------------------------------

    @property
    def _secrets(self) -> tuple[str, ...]:
        # Asked each time: some credentials change (token callables, refreshed AWS credentials).
        return tuple(self._codec.secrets())

    @property
    def provider(self) -> str:
        return str(self._codec.provider)

    @property
    def model_name(self) -> str | None:
        return getattr(self._codec, "model_name", None)

    @property
    def codec(self) -> Any:
        return self._codec

    def __repr__(self) -> str:
        return f"<gen_ai.Client provider={self.provider!r} model={self.model_name!r} codec={self._codec!r}>"

    # -- building calls ---------------------------------------------------------------------

    def _call(self, kind: str, source: Any, max_tokens: Any, temperature: Any, top_p: Any, n: Any,
              timeout: Any, guided_json: Any, schema_retries: Any, stream: bool,
              extra: dict[str, Any]) -> Call:
        validate_params(max_tokens, temperature, top_p, n, timeout)
        if extra:
            _check_extra(extra)
        messages = prompt = None
        if kind == "chat":
            messages = validate_messages(source)
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
        return Call(kind, messages=messages, prompt=prompt, max_tokens=max_tokens, temperature=temperature,
                    top_p=top_p, n=n, timeout=timeout, schema=schema, stream=stream, extra=extra,
                    schema_retries=schema_retries)

    def _run(self, build: Any, return_error: bool) -> Any:
        try:
            call = build()
            result = _core.run_sync(_core.call_flow(self._codec, call, self.max_retries),
                                    self._transport, self._codec.secrets)
        except GenAIError as exc:
            if return_error:
                return None, exc.redact(self._secrets).to_dict()
            raise exc.redact(self._secrets) from None
        return (result, None) if return_error else result

    async def _arun(self, build: Any, return_error: bool) -> Any:
        try:
            call = build()
            result = await _core.run_async(_core.call_flow(self._codec, call, self.max_retries),
                                           self._async_transport, self._codec.secrets)
        except GenAIError as exc:
            if return_error:
                return None, exc.redact(self._secrets).to_dict()
            raise exc.redact(self._secrets) from None
        return (result, None) if return_error else result

    def _stream(self, cls: type[_S], kind: str, source: Any, max_tokens: Any, temperature: Any, top_p: Any,
                n: Any, timeout: Any, guided_json: Any, return_error: bool, extra: dict[str, Any]) -> _S:
        def build() -> Call:
            return self._call(kind, source, max_tokens, temperature, top_p, n, timeout, guided_json, 0, True,
                              extra)

        # Bad input raises here, at the call, unless return_error asks for it in stream.error.
        return cls(self, None if return_error else build(), return_error, build)

    # -- chat -------------------------------------------------------------------------------

    def run_chat_completions(self, messages: list[dict[str, Any]], max_tokens: int = 256,
                             temperature: float = 0, top_p: float = 1.0, n: int = 1, timeout: float = 30,
                             guided_json: Any = None, return_error: bool = False,
                             schema_retries: int | None = None, **extra: Any) -> Any:
        """Chat completion. Returns the answer as a ``ChatResult`` (a ``str``); a ``ChatResults``
        list for ``n > 1``; ``(result, error_dict)`` with ``return_error=True``."""
        return self._run(lambda: self._call("chat", messages, max_tokens, temperature, top_p, n, timeout,
                                            guided_json, schema_retries, False, extra), return_error)

    async def arun_chat_completions(self, messages: list[dict[str, Any]], max_tokens: int = 256,
                                    temperature: float = 0, top_p: float = 1.0, n: int = 1,
                                    timeout: float = 30, guided_json: Any = None,
                                    return_error: bool = False, schema_retries: int | None = None,
                                    **extra: Any) -> Any:
        return await self._arun(lambda: self._call("chat", messages, max_tokens, temperature, top_p, n,
                                                   timeout, guided_json, schema_retries, False, extra),
                                return_error)

    def run_chat_completions_stream(self, messages: list[dict[str, Any]], max_tokens: int = 256,
                                    temperature: float = 0, top_p: float = 1.0, n: int = 1,
                                    timeout: float = 30, guided_json: Any = None,
                                    return_error: bool = False, **extra: Any) -> "TextStream":
        """Yields text deltas as they arrive; the returned stream has ``.usage``,
        ``.finish_reason``, ``.text`` once iteration ends."""
        return self._stream(TextStream, "chat", messages, max_tokens, temperature, top_p, n, timeout,
                            guided_json, return_error, extra)

    def arun_chat_completions_stream(self, messages: list[dict[str, Any]], max_tokens: int = 256,
                                     temperature: float = 0, top_p: float = 1.0, n: int = 1,
                                     timeout: float = 30, guided_json: Any = None,
                                     return_error: bool = False, **extra: Any) -> "AsyncTextStream":
        return self._stream(AsyncTextStream, "chat", messages, max_tokens, temperature, top_p, n, timeout,
                            guided_json, return_error, extra)

    # -- text completions -------------------------------------------------------------------

    def run_completions(self, prompt: str, max_tokens: int = 256, temperature: float = 0,
                        top_p: float = 1.0, n: int = 1, timeout: float = 30, guided_json: Any = None,
                        return_error: bool = False, schema_retries: int | None = None,
                        **extra: Any) -> Any:
        """Text completion of ``prompt``; same parameters and results as chat."""
        return self._run(lambda: self._call("completion", prompt, max_tokens, temperature, top_p, n,
                                            timeout, guided_json, schema_retries, False, extra), return_error)

    async def arun_completions(self, prompt: str, max_tokens: int = 256, temperature: float = 0,
                               top_p: float = 1.0, n: int = 1, timeout: float = 30,
                               guided_json: Any = None, return_error: bool = False,
                               schema_retries: int | None = None, **extra: Any) -> Any:
        return await self._arun(lambda: self._call("completion", prompt, max_tokens, temperature, top_p,
                                                   n, timeout, guided_json, schema_retries, False, extra),
                                return_error)

    def run_completions_stream(self, prompt: str, max_tokens: int = 256, temperature: float = 0,
                               top_p: float = 1.0, n: int = 1, timeout: float = 30,
                               guided_json: Any = None, return_error: bool = False,
                               **extra: Any) -> "TextStream":
        return self._stream(TextStream, "completion", prompt, max_tokens, temperature, top_p, n, timeout,
                            guided_json, return_error, extra)

    def arun_completions_stream(self, prompt: str, max_tokens: int = 256, temperature: float = 0,
                                top_p: float = 1.0, n: int = 1, timeout: float = 30,
                                guided_json: Any = None, return_error: bool = False,
                                **extra: Any) -> "AsyncTextStream":
        return self._stream(AsyncTextStream, "completion", prompt, max_tokens, temperature, top_p, n, timeout,
                            guided_json, return_error, extra)

    # -- vision -----------------------------------------------------------------------------

    def _vision_messages(self, prompt: Any, image_paths: Any, detail: Any, max_image_side: Any,
                         max_image_bytes: Any, stream: bool, return_error: bool,
                         stream_cls: Any) -> tuple[list[dict[str, Any]] | None, Any]:
        """-> (messages, None), or (None, what the call returns for bad input)."""
        from .images import vision_messages

        try:
            return vision_messages(prompt, image_paths, detail=detail, max_image_side=max_image_side,
                                   max_image_bytes=max_image_bytes), None
        except GenAIError as exc:
            error = exc.redact(self._secrets)
            if not return_error:
                raise error from None
            if stream:
                def fail() -> Call:
                    raise error

                return None, stream_cls(self, None, True, fail)  # the error lands in stream.error
            return None, (None, error.to_dict())

    def run_vision_request(self, prompt: Any, image_paths: Any, stream: bool = False, guided_json: Any = None,
                           return_error: bool = False, max_tokens: int = 256, temperature: float = 0,
                           top_p: float = 1.0, timeout: float = 30, max_image_side: int | None = None,
                           detail: str | None = None, max_image_bytes: int = 20 * 1024 * 1024,
                           **extra: Any) -> Any:
        """Ask about images. ``prompt`` is text or chat messages; ``image_paths`` a list of local
        paths, http(s) URLs, data URLs or bytes, attached to the last user message. Every bad
        image is reported in one InvalidInputError before anything is sent. Returns what
        ``run_chat_completions`` returns, or its ``TextStream`` with ``stream=True``."""
        messages, failed = self._vision_messages(prompt, image_paths, detail, max_image_side, max_image_bytes,
                                                 stream, return_error, TextStream)
        if messages is None:
            return failed
        if stream:
            return self.run_chat_completions_stream(messages, max_tokens, temperature, top_p, timeout=timeout,
                                                    guided_json=guided_json, return_error=return_error, **extra)
        return self.run_chat_completions(messages, max_tokens, temperature, top_p, timeout=timeout,
                                         guided_json=guided_json, return_error=return_error, **extra)

    async def arun_vision_request(self, prompt: Any, image_paths: Any, stream: bool = False,
                                  guided_json: Any = None, return_error: bool = False, max_tokens: int = 256,
                                  temperature: float = 0, top_p: float = 1.0, timeout: float = 30,
                                  max_image_side: int | None = None, detail: str | None = None,
                                  max_image_bytes: int = 20 * 1024 * 1024, **extra: Any) -> Any:
        """Async twin of ``run_vision_request``; with ``stream=True`` it returns an
        ``AsyncTextStream`` (``async for delta in await client.arun_vision_request(...)``)."""
        messages, failed = self._vision_messages(prompt, image_paths, detail, max_image_side, max_image_bytes,
                                                 stream, return_error, AsyncTextStream)
        if messages is None:
            return failed
        if stream:
            return self.arun_chat_completions_stream(messages, max_tokens, temperature, top_p, timeout=timeout,
                                                     guided_json=guided_json, return_error=return_error,
                                                     **extra)
        return await self.arun_chat_completions(messages, max_tokens, temperature, top_p, timeout=timeout,
                                                guided_json=guided_json, return_error=return_error, **extra)

    # -- batch ------------------------------------------------------------------------------
    # Thin delegations to gen_ai.batch (imported on first use); see docs/batch.md.

    def run_chat_completions_batch(self, messages_list: list[list[dict[str, Any]]], max_tokens: int = 256,
                                   temperature: float = 0, top_p: float = 1.0, n: int = 1,
                                   timeout: float = 60, guided_json: Any = None, concurrent: bool = True,
                                   max_concurrent: int = 5, return_error: bool = False, progress: Any = None,
                                   requests_per_minute: float | None = None,
                                   tokens_per_minute: float | None = None, **extra: Any) -> Any:
        """Many chat completions. Returns a ``BatchResults`` list in input order (``None`` for a
        failed item; ``.errors``, ``.stats``); ``(results, errors)`` with ``return_error=True``."""
        from .batch import run_batch

        return run_batch(self, "chat", messages_list, max_tokens=max_tokens, temperature=temperature,
                         top_p=top_p, n=n, timeout=timeout, guided_json=guided_json, concurrent=concurrent,
                         max_concurrent=max_concurrent, return_error=return_error, progress=progress,
                         requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                         **extra)

    async def arun_chat_completions_batch(self, messages_list: list[list[dict[str, Any]]],
                                          max_tokens: int = 256, temperature: float = 0, top_p: float = 1.0,
                                          n: int = 1, timeout: float = 60, guided_json: Any = None,
                                          concurrent: bool = True, max_concurrent: int = 5,
                                          return_error: bool = False, progress: Any = None,
                                          requests_per_minute: float | None = None,
                                          tokens_per_minute: float | None = None, **extra: Any) -> Any:
        from .batch import arun_batch

        return await arun_batch(self, "chat", messages_list, max_tokens=max_tokens, temperature=temperature,
                                top_p=top_p, n=n, timeout=timeout, guided_json=guided_json,
                                concurrent=concurrent, max_concurrent=max_concurrent,
                                return_error=return_error, progress=progress,
                                requests_per_minute=requests_per_minute,
                                tokens_per_minute=tokens_per_minute, **extra)

    def run_completions_batch(self, prompts: list[str], max_tokens: int = 256, temperature: float = 0,
                              top_p: float = 1.0, n: int = 1, timeout: float = 60, guided_json: Any = None,
                              concurrent: bool = True, max_concurrent: int = 5, return_error: bool = False,
                              progress: Any = None, requests_per_minute: float | None = None,
                              tokens_per_minute: float | None = None, **extra: Any) -> Any:
        """Many text completions; same parameters and results as ``run_chat_completions_batch``."""
        from .batch import run_batch

        return run_batch(self, "completion", prompts, max_tokens=max_tokens, temperature=temperature,
                         top_p=top_p, n=n, timeout=timeout, guided_json=guided_json, concurrent=concurrent,
                         max_concurrent=max_concurrent, return_error=return_error, progress=progress,
                         requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                         **extra)

    async def arun_completions_batch(self, prompts: list[str], max_tokens: int = 256, temperature: float = 0,
                                     top_p: float = 1.0, n: int = 1, timeout: float = 60,
                                     guided_json: Any = None, concurrent: bool = True, max_concurrent: int = 5,
                                     return_error: bool = False, progress: Any = None,
                                     requests_per_minute: float | None = None,
                                     tokens_per_minute: float | None = None, **extra: Any) -> Any:
        from .batch import arun_batch

        return await arun_batch(self, "completion", prompts, max_tokens=max_tokens, temperature=temperature,
                                top_p=top_p, n=n, timeout=timeout, guided_json=guided_json,
                                concurrent=concurrent, max_concurrent=max_concurrent,
                                return_error=return_error, progress=progress,
                                requests_per_minute=requests_per_minute,
                                tokens_per_minute=tokens_per_minute, **extra)

    # The name the original documentation used.
    generate_batch_response = run_completions_batch
    agenerate_batch_response = arun_completions_batch

    def run_batch_file(self, input: Any, output: Any, *, max_concurrent: int = 16, timeout: float = 60,
                       max_tokens: int = 256, progress: Any = None, requests_per_minute: float | None = None,
                       tokens_per_minute: float | None = None, retry_failed: bool = True,
                       use_body_model: bool = False, fsync: bool = False) -> Any:
        """Run an OpenAI Batch API JSONL file into an OpenAI batch output JSONL file; rerun the
        same call to resume after a crash. Returns the run's ``BatchStats``."""
        from .batch import run_batch_file

        return run_batch_file(self, input, output, max_concurrent=max_concurrent, timeout=timeout,
                              max_tokens=max_tokens, progress=progress, requests_per_minute=requests_per_minute,
                              tokens_per_minute=tokens_per_minute, retry_failed=retry_failed,
                              use_body_model=use_body_model, fsync=fsync)

    async def arun_batch_file(self, input: Any, output: Any, *, max_concurrent: int = 16, timeout: float = 60,
                              max_tokens: int = 256, progress: Any = None,
                              requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                              retry_failed: bool = True, use_body_model: bool = False,
                              fsync: bool = False) -> Any:
        from .batch import arun_batch_file

        return await arun_batch_file(self, input, output, max_concurrent=max_concurrent, timeout=timeout,
                                     max_tokens=max_tokens, progress=progress,
                                     requests_per_minute=requests_per_minute,
                                     tokens_per_minute=tokens_per_minute, retry_failed=retry_failed,
                                     use_body_model=use_body_model, fsync=fsync)

    # -- models -----------------------------------------------------------------------------

    def list_models(self, timeout: float = 30) -> list[dict[str, Any]]:
        """The models the endpoint serves (``GET /v1/models`` or the provider's equivalent), each a
        dict with an ``id`` plus what the provider tells (``owned_by``, ``display_name``, ...).
        An empty list for providers that cannot list (the in-process model)."""
        if not _is_number(timeout) or timeout <= 0:
            raise _bad("timeout", f"must be a number of seconds > 0, got {timeout!r}", "Pass e.g. timeout=30.")
        request = self._codec.models_request()
        if request is None:
            return []
        try:
            return list(_core.run_sync(_models_flow(self._codec, request, timeout), self._transport,
                                       self._codec.secrets))
        except GenAIError as exc:
            raise exc.redact(self._secrets) from None

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._transport.close()

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


class _StreamBase:
    """What sync and async streams share: the result attributes and the end-of-stream checks."""

    def __init__(self, client: Client, call: Call | None, return_error: bool, build: Any) -> None:
        self._client = client
        self._call = call
        self._build = build
        self._return_error = return_error
        self._parser: Any = None
        self._start = time.perf_counter()
        self.first_token_latency: float | None = None
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
    def model(self) -> str | None:
        return self._parser.model if self._parser is not None else None

    def _finish(self) -> None:
        self.latency = time.perf_counter() - self._start
        call = self._call
        if call is not None and call.schema is not None:
            self.parsed = call.schema.validate(self.text)

    def _failed(self, exc: GenAIError) -> bool:
        """Scrub the error; True when it should be kept in ``.error`` instead of raised."""
        exc.redact(self._client._secrets)
        if self._return_error:
            self.error = exc.to_dict()
            return True
        return False

    def to_result(self) -> ChatResult:
        """The whole streamed answer as a ChatResult (after iteration)."""
        return ChatResult(self.text, finish_reason=self.finish_reason, usage=self.usage, model=self.model,
                          latency=self.latency or 0.0, parsed=self.parsed)


class TextStream(_StreamBase):
    """Iterate for text deltas. After the loop: ``.text``, ``.usage``, ``.finish_reason``,
    ``.latency``, ``.first_token_latency``, ``.parsed`` (guided_json) and, with
    ``return_error=True``, ``.error`` (None on success) instead of an exception."""

    def __iter__(self) -> Iterator[str]:
        return self._iterate()

    def _iterate(self) -> Iterator[str]:
        client = self._client
        response = None
        try:
            if self._call is None:
                self._call = self._build()
            call = self._call
            codec = client._codec
            response = _core.run_sync(_core.stream_open_flow(codec, call, client.max_retries),
                                      client._transport, client._codec.secrets)
            self._parser = parser = codec.stream_parser(call, response.headers)
            for chunk in response.iter_bytes():
                for delta in parser.feed(chunk):
                    if self.first_token_latency is None:
                        self.first_token_latency = time.perf_counter() - self._start
                    yield delta
            yield from parser.close()
            self._finish()
        except GenAIError as exc:
            if not self._failed(exc):
                raise exc from None
        finally:
            if response is not None:
                response.close()


class AsyncTextStream(_StreamBase):
    """The async twin of TextStream: ``async for delta in client.arun_chat_completions_stream(...)``."""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        client = self._client
        response = None
        try:
            if self._call is None:
                self._call = self._build()
            call = self._call
            codec = client._codec
            response = await _core.run_async(_core.stream_open_flow(codec, call, client.max_retries),
                                             client._async_transport, client._codec.secrets)
            self._parser = parser = codec.stream_parser(call, response.headers)
            async for chunk in response.iter_bytes():
                for delta in parser.feed(chunk):
                    if self.first_token_latency is None:
                        self.first_token_latency = time.perf_counter() - self._start
                    yield delta
            for delta in parser.close():
                yield delta
            self._finish()
        except GenAIError as exc:
            if not self._failed(exc):
                raise exc from None
        finally:
            if response is not None:
                response.close()
