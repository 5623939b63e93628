"""Values that cross gen_ai's layers: calls, wire requests and responses, and results.

Plain classes with ``__slots__`` rather than dataclasses: importing ``dataclasses`` drags in
``inspect`` and would cost several milliseconds of ``import gen_ai``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Usage:
    """Token counts of one call (or the sum over several, for retries, n top-ups and batches).

    One meaning for every provider: ``prompt_tokens`` counts every input token, cached ones
    included (Anthropic's and Bedrock's ``input_tokens`` exclude them: the codecs add them back);
    ``completion_tokens`` counts every output token, reasoning ones included;
    ``total_tokens = prompt_tokens + completion_tokens``. The details are subsets:
    ``cached_tokens`` (input read from the provider's prompt cache), ``cache_write_tokens``
    (input written to it: Anthropic, Bedrock) and ``reasoning_tokens`` (output spent thinking).
    """

    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cache_write_tokens",
                 "reasoning_tokens")

    def __init__(self, prompt_tokens: int = 0, completion_tokens: int = 0, total_tokens: int | None = None,
                 cached_tokens: int = 0, cache_write_tokens: int = 0, reasoning_tokens: int = 0) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.total_tokens = prompt_tokens + completion_tokens if total_tokens is None else total_tokens
        self.cached_tokens = cached_tokens
        self.cache_write_tokens = cache_write_tokens
        self.reasoning_tokens = reasoning_tokens

    def __add__(self, other: "Usage | None") -> "Usage":
        if other is None:
            return self
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Usage) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    def __repr__(self) -> str:
        details = "".join(f", {name}={getattr(self, name)}" for name in
                          ("cached_tokens", "cache_write_tokens", "reasoning_tokens") if getattr(self, name))
        return (f"Usage(prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens}, "
                f"total_tokens={self.total_tokens}{details})")

    def __reduce__(self) -> Any:
        return (Usage, (self.prompt_tokens, self.completion_tokens, self.total_tokens, self.cached_tokens,
                        self.cache_write_tokens, self.reasoning_tokens))


class Request:
    """One HTTP request, as a provider codec builds it. ``body`` is already encoded.

    ``facts`` is what the codec read from the learned server state to build it (for example
    the structured-output dialect), handed back to ``codec.fallback`` when the request fails:
    a fallback is decided from what the failed request used, not from the state as it is now."""

    __slots__ = ("method", "url", "headers", "body", "stream", "facts")

    def __init__(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
        stream: bool = False,
        facts: Any = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.stream = stream
        self.facts = facts

    def __repr__(self) -> str:  # headers hold credentials: never show them
        return f"Request({self.method} {self.url}, stream={self.stream})"


class RawResponse:
    """A complete HTTP response. ``headers`` is any mapping with a case-insensitive ``get``."""

    __slots__ = ("status", "headers", "body", "url", "method")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes, url: str, method: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url
        self.method = method

    def __repr__(self) -> str:
        return f"RawResponse({self.status}, {len(self.body)} bytes from {self.method} {self.url})"


class Call:
    """One normalized user call, after validation: what codecs turn into a request.

    ``tools`` is None or a list of ``gen_ai.tools.Tool`` (normalised, validated); ``tool_choice``
    is None, "auto", "none", "required" or a tool name; ``parallel_tool_calls`` None or a bool.
    """

    __slots__ = (
        "kind", "messages", "prompt", "max_tokens", "temperature", "top_p", "n",
        "timeout", "schema", "stream", "extra", "schema_retries",
        "tools", "tool_choice", "parallel_tool_calls", "reasoning_effort", "logprobs", "top_logprobs",
    )

    def __init__(
        self,
        kind: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0,
        top_p: float = 1.0,
        n: int = 1,
        timeout: float = 30,
        schema: Any = None,
        stream: bool = False,
        extra: dict[str, Any] | None = None,
        schema_retries: int = 1,
        tools: list[Any] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        reasoning_effort: str | int | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
    ) -> None:
        self.kind = kind  # "chat" or "completion"
        self.messages = messages
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.n = n
        self.timeout = timeout
        self.schema = schema  # a gen_ai.structured.Schema or None
        self.stream = stream
        self.extra = extra or {}
        self.schema_retries = schema_retries
        self.tools = tools
        self.tool_choice = tool_choice
        self.parallel_tool_calls = parallel_tool_calls
        # "none" | "minimal" | "low" | "medium" | "high" | "xhigh" | "max" | a provider's own
        # value, or an int: a thinking budget in tokens. None: the provider's default.
        self.reasoning_effort = reasoning_effort
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs

    def replace(self, **changes: Any) -> "Call":
        new = Call.__new__(Call)
        for name in Call.__slots__:
            setattr(new, name, changes[name] if name in changes else getattr(self, name))
        return new


def new_call(kind: str, messages: list[dict[str, Any]] | None, prompt: str | None, max_tokens: int,
             temperature: float, top_p: float, n: int, timeout: float, schema: Any, stream: bool,
             extra: dict[str, Any] | None, schema_retries: int, tools: list[Any] | None, tool_choice: str | None,
             parallel_tool_calls: bool | None, reasoning_effort: str | int | None, logprobs: bool,
             top_logprobs: int | None) -> Call:
    """``Call(kind, messages=..., ...)`` for the per-call path: every field, positionally (calling
    the class with 17 keywords costs about three times as much)."""
    call = Call.__new__(Call)
    call.kind = kind
    call.messages = messages
    call.prompt = prompt
    call.max_tokens = max_tokens
    call.temperature = temperature
    call.top_p = top_p
    call.n = n
    call.timeout = timeout
    call.schema = schema
    call.stream = stream
    call.extra = extra or {}
    call.schema_retries = schema_retries
    call.tools = tools
    call.tool_choice = tool_choice
    call.parallel_tool_calls = parallel_tool_calls
    call.reasoning_effort = reasoning_effort
    call.logprobs = logprobs
    call.top_logprobs = top_logprobs
    return call


def new_call_id() -> str:
    """An id for a tool call whose server sent none (the tool result must name it)."""
    import uuid

    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCall:
    """One function call the model asked for.

    ``arguments`` is the raw JSON text the model wrote (kept as sent, so a bad call can be shown
    and sent back as it was); ``parsed_arguments`` decodes it, or raises
    ``InvalidToolArgumentsError`` naming the tool and the JSON problem. ``index`` is the call's
    position in the answer (streams merge fragments by it).
    """

    __slots__ = ("id", "name", "arguments", "index")

    def __init__(self, id: str, name: str, arguments: str = "{}", index: int = 0) -> None:
        self.id = id
        self.name = name
        self.arguments = arguments
        self.index = index

    @property
    def parsed_arguments(self) -> dict[str, Any]:
        import json

        from .errors import InvalidToolArgumentsError

        text = self.arguments
        if not text or not text.strip():
            return {}  # some servers send "" for a call without parameters
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidToolArgumentsError(
                f"tool call {self.name!r} (id {self.id!r}): the arguments are not valid JSON ({exc}): "
                f"{text[:200]!r}", tool_name=self.name) from None
        if not isinstance(value, dict):
            raise InvalidToolArgumentsError(
                f"tool call {self.name!r} (id {self.id!r}): the arguments must be a JSON object, got "
                f"{type(value).__name__}: {text[:200]!r}", tool_name=self.name)
        return value

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI wire shape (as in an assistant message's ``tool_calls``)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_dict(cls, data: Any, index: int = 0) -> "ToolCall":
        """From the OpenAI wire shape; tolerant of servers that send arguments as an object."""
        function = data.get("function") if isinstance(data, dict) else None
        if not isinstance(function, dict):
            function = {}
        arguments = function.get("arguments")
        if arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            import json

            arguments = json.dumps(arguments, ensure_ascii=False)
        call_id = data.get("id") if isinstance(data, dict) else None
        return cls(str(call_id) if call_id else new_call_id(), str(function.get("name") or ""), arguments, index)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ToolCall) and self.id == other.id and self.name == other.name
                and self.arguments == other.arguments and self.index == other.index)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ToolCall(id={self.id!r}, name={self.name!r}, arguments={self.arguments!r}, index={self.index})"

    def __reduce__(self) -> Any:
        return (ToolCall, (self.id, self.name, self.arguments, self.index))


class StreamEvent:
    """One typed stream event, from ``stream.events()``:

        "text"             text: the answer's next piece
        "tool_call_start"  index, id, name: a tool call begins
        "tool_call_delta"  index, arguments: the next fragment of that call's JSON arguments
        "reasoning"        text: the next piece of thinking text (where the provider sends it)
        "done"             finish_reason, usage, tool_calls: the stream ended cleanly
    """

    __slots__ = ("type", "text", "index", "id", "name", "arguments", "finish_reason", "usage", "tool_calls")

    def __init__(self, type: str, *, text: str | None = None, index: int | None = None, id: str | None = None,
                 name: str | None = None, arguments: str | None = None, finish_reason: str | None = None,
                 usage: Usage | None = None, tool_calls: list[ToolCall] | None = None) -> None:
        self.type = type
        self.text = text
        self.index = index
        self.id = id
        self.name = name
        self.arguments = arguments
        self.finish_reason = finish_reason
        self.usage = usage
        self.tool_calls = tool_calls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StreamEvent) and all(
            getattr(self, name) == getattr(other, name) for name in StreamEvent.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in StreamEvent.__slots__[1:]
                           if getattr(self, name) is not None)
        return f"StreamEvent({self.type!r}{', ' if fields else ''}{fields})"


def _lazy_json(holder: Any) -> Any:
    """``raw`` may be kept as the response's bytes and parsed on first access: a batch of
    thousands of results then holds no dict trees for the garbage collector to walk (measured:
    35% more batch throughput) and a third of the memory."""
    raw = holder.__dict__.get("_raw")
    if isinstance(raw, (bytes, bytearray)):
        import json

        raw = holder.__dict__["_raw"] = json.loads(raw)
    return raw


class Completion:
    """What a codec parses out of one response: the choices and their metadata.

    ``raw`` is the parsed body, or the body's bytes (parsed when a user reads ``result.raw``).
    ``tool_calls`` is None when no choice has tool calls (the common case: no allocation), else
    one entry per choice: a list of ToolCall or None."""

    __slots__ = ("texts", "finish_reasons", "usage", "model", "raw", "id", "tool_calls", "reasonings",
                 "reasoning_details", "logprobs")

    def __init__(
        self,
        texts: list[str],
        finish_reasons: list[str | None],
        usage: Usage | None,
        model: str | None,
        raw: Any,
        id: str | None = None,
        tool_calls: list[list[ToolCall] | None] | None = None,
        reasonings: list[str | None] | None = None,
        reasoning_details: list[list[dict[str, Any]] | None] | None = None,
        logprobs: list[Any] | None = None,
    ) -> None:
        self.texts = texts
        self.finish_reasons = finish_reasons
        self.usage = usage
        self.model = model
        self.raw = raw
        self.id = id
        self.tool_calls = tool_calls
        # Per choice, or None when no choice has any (the common case: nothing allocated).
        self.reasonings = reasonings  # the thinking text
        self.reasoning_details = reasoning_details  # opaque items to send back next turn
        self.logprobs = logprobs  # a list of TokenLogprob per choice

    def tool_calls_of(self, i: int) -> list[ToolCall] | None:
        calls = self.tool_calls
        return calls[i] if calls is not None and i < len(calls) else None


class ChatResult(str):
    """The text of one answer, as a ``str``, with the call's metadata as attributes.

    Being a ``str`` keeps the seed's ``messages.append({"role": "assistant", "content": response})``
    working; ``response.usage``, ``.finish_reason``, ``.model``, ``.latency``, ``.raw`` and
    ``.parsed`` (the validated guided_json object) and ``.tool_calls`` (a list of ToolCall,
    empty when the model called none) carry the rest; ``to_message()`` is the assistant message
    to append to the history. Each result owns its metadata, so results from concurrent calls
    never mix.
    """

    finish_reason: str | None
    usage: Usage | None
    model: str | None
    latency: float
    id: str | None
    _raw: Any
    choice_index: int
    parsed: Any
    _tool_calls: list[ToolCall] | None
    # Set on the instance only when the provider sent them (no cost for the plain answer).
    reasoning: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None
    logprobs: "list[TokenLogprob] | None" = None

    def __new__(
        cls,
        text: str,
        *,
        finish_reason: str | None = None,
        usage: Usage | None = None,
        model: str | None = None,
        raw: Any = None,
        latency: float = 0.0,
        id: str | None = None,
        choice_index: int = 0,
        parsed: Any = None,
        tool_calls: list[ToolCall] | None = None,
    ) -> "ChatResult":
        self = _str_new(cls, text)
        # One dict, built whole: nine attribute stores on a str subclass cost more.
        self.__dict__ = {"finish_reason": finish_reason, "usage": usage, "model": model, "_raw": raw,
                         "latency": latency, "id": id, "choice_index": choice_index, "parsed": parsed,
                         "_tool_calls": tool_calls or None}
        return self

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls of this answer, in order; an empty list when there are none."""
        calls = self._tool_calls
        return list(calls) if calls else []

    @property
    def text(self) -> str:
        return str.__str__(self)

    def to_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation: OpenAI-shaped (``role``,
        ``content`` and, when the model called tools, ``tool_calls``), plus under
        ``reasoning_details`` what the provider needs back next turn (Anthropic thinking blocks
        with their signatures, Gemini thought signatures, Bedrock reasoning blocks, Responses
        reasoning items). Every provider's codec accepts it back in ``messages`` and skips the
        items that are not its own."""
        # content stays a string ("" when the answer is only calls): llama-cpp-python's server
        # answers 500 to content null, and every other server and provider takes "".
        message: dict[str, Any] = {"role": "assistant", "content": str.__str__(self)}
        calls = self._tool_calls
        if calls:
            message["tool_calls"] = [c.to_dict() for c in calls]
        details = self.reasoning_details
        if details:
            message["reasoning_details"] = list(details)
        return message

    @property
    def raw(self) -> Any:
        """The response body as JSON (parsed on first access)."""
        return _lazy_json(self)

    def __reduce__(self) -> Any:
        return (_rebuild_result, (str.__str__(self), self.__dict__.copy()))

    def to_dict(self) -> dict[str, Any]:
        parsed = self.parsed
        if parsed is not None and hasattr(parsed, "model_dump"):
            parsed = parsed.model_dump()
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_dict() if self.usage else None,
            "model": self.model,
            "latency": self.latency,
            "id": self.id,
            "parsed": parsed,
            "tool_calls": [c.to_dict() for c in self._tool_calls] if self._tool_calls else [],
            "reasoning": self.reasoning,
            "logprobs": [lp.to_dict() for lp in self.logprobs] if self.logprobs is not None else None,
        }


_str_new = str.__new__


def chat_result(text: str, finish_reason: str | None, usage: Usage | None, model: str | None, raw: Any,
                latency: float, id: str | None, tool_calls: list[ToolCall] | None) -> ChatResult:
    """``ChatResult(text, finish_reason=..., ...)`` of the common answer (choice 0, nothing parsed),
    for the per-call path: positional (a keyword call of the class costs twice as much)."""
    self = _str_new(ChatResult, text)
    self.__dict__ = {"finish_reason": finish_reason, "usage": usage, "model": model, "_raw": raw,
                     "latency": latency, "id": id, "choice_index": 0, "parsed": None,
                     "_tool_calls": tool_calls or None}
    return self


class TokenLogprob:
    """One generated token's log probability, with the most likely alternatives at that position
    (``top``: a list of ``(token, logprob)`` pairs, most likely first)."""

    __slots__ = ("token", "logprob", "top", "bytes")

    def __init__(self, token: str, logprob: float, top: list[tuple[str, float]] | None = None,
                 bytes: list[int] | None = None) -> None:
        self.token = token
        self.logprob = logprob
        self.top = top if top is not None else []
        self.bytes = bytes

    @property
    def prob(self) -> float:
        import math

        return math.exp(self.logprob)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenLogprob) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "top": [list(t) for t in self.top],
                "bytes": self.bytes}

    def __repr__(self) -> str:
        return f"TokenLogprob({self.token!r}, {self.logprob:.4f}, top={self.top!r})"

    def __reduce__(self) -> Any:
        return (TokenLogprob, (self.token, self.logprob, self.top, self.bytes))


def _rebuild_result(text: str, state: dict[str, Any]) -> ChatResult:
    result = ChatResult(text)
    result.__dict__.update(state)
    return result


class ChatResults(list):  # type: ignore[type-arg]
    """The ``n > 1`` answer: a list of ``ChatResult`` plus the call's totals."""

    usage: Usage | None
    model: str | None
    latency: float
    _raw: Any

    def __init__(self, results: list[ChatResult], usage: Usage | None, model: str | None,
                 latency: float, raw: Any) -> None:
        super().__init__(results)
        self.usage = usage
        self.model = model
        self.latency = latency
        self._raw = raw

    @property
    def raw(self) -> Any:
        return _lazy_json(self)

    def __iter__(self) -> Iterator[ChatResult]:
        return super().__iter__()


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class EmbeddingCall:
    """One validated embeddings call (or one request-sized slice of it): what codecs turn into
    a request with ``build_embedding_request``. ``inputs`` are non-empty-checked strings."""

    __slots__ = ("inputs", "dimensions", "timeout", "extra", "as_numpy", "batch_size", "max_concurrent",
                 "kind", "stream", "n")

    def __init__(self, inputs: list[str], *, dimensions: int | None = None, timeout: float = 30,
                 extra: dict[str, Any] | None = None, as_numpy: bool = False, batch_size: int | None = None,
                 max_concurrent: int = 4) -> None:
        self.kind = "embedding"
        self.inputs = inputs
        self.dimensions = dimensions
        self.timeout = timeout
        self.extra = extra or {}
        self.as_numpy = as_numpy
        self.batch_size = batch_size  # None: the codec's default request size
        self.max_concurrent = max_concurrent
        self.stream = False  # what the shared request flow reads
        self.n = 1

    def replace(self, **changes: Any) -> "EmbeddingCall":
        new = EmbeddingCall.__new__(EmbeddingCall)
        for name in EmbeddingCall.__slots__:
            setattr(new, name, changes[name] if name in changes else getattr(self, name))
        return new


class EmbeddingPart:
    """What a codec's ``parse_embedding_response`` returns for one request: one vector per
    input, in input order (lists of floats, or numpy arrays for ``as_numpy``)."""

    __slots__ = ("vectors", "usage", "model")

    def __init__(self, vectors: list[Any], usage: Usage | None, model: str | None) -> None:
        self.vectors = vectors
        self.usage = usage
        self.model = model


class Embeddings(list):  # type: ignore[type-arg]
    """The result of ``run_embeddings``: a plain ``list`` of vectors, one per input text in input
    order (each a list of floats, or a numpy array with ``as_numpy=True``), with ``usage``
    (``prompt_tokens`` = ``total_tokens``; None when the provider does not count), ``model``
    and ``latency`` (seconds, the whole call)."""

    usage: Usage | None
    model: str | None
    latency: float

    def __init__(self, vectors: list[Any] = (), usage: Usage | None = None,  # type: ignore[assignment]
                 model: str | None = None, latency: float = 0.0) -> None:
        super().__init__(vectors)
        self.usage = usage
        self.model = model
        self.latency = latency

    @property
    def dimensions(self) -> int | None:
        """The length of the vectors (None for an empty result)."""
        return len(self[0]) if self else None

    def __repr__(self) -> str:
        return (f"Embeddings({len(self)} vectors of {self.dimensions} dimensions, model={self.model!r}, "
                f"usage={self.usage!r}, latency={self.latency:.3f})")

    def __reduce__(self) -> Any:
        return (_rebuild_embeddings, (list(self), self.usage, self.model, self.latency))


def _rebuild_embeddings(vectors: list[Any], usage: Usage | None, model: str | None, latency: float) -> Embeddings:
    return Embeddings(vectors, usage, model, latency)
