"""Values that cross gen_ai's layers: calls, wire requests and responses, and results.

Plain classes with ``__slots__`` rather than dataclasses: importing ``dataclasses`` drags in
``inspect`` and would cost several milliseconds of ``import gen_ai``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Usage:
    """Token counts of one call (or the sum over several, for n top-ups and batches)."""

    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")

    def __init__(self, prompt_tokens: int = 0, completion_tokens: int = 0, total_tokens: int | None = None):
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.total_tokens = prompt_tokens + completion_tokens if total_tokens is None else total_tokens

    def __add__(self, other: "Usage | None") -> "Usage":
        if other is None:
            return self
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Usage) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    def __repr__(self) -> str:
        return (
            f"Usage(prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens}, "
            f"total_tokens={self.total_tokens})"
        )

    def __reduce__(self) -> Any:
        return (Usage, (self.prompt_tokens, self.completion_tokens, self.total_tokens))


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
    """One normalized user call, after validation: what codecs turn into a request."""

    __slots__ = (
        "kind", "messages", "prompt", "max_tokens", "temperature", "top_p", "n",
        "timeout", "schema", "stream", "extra", "schema_retries",
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

    def replace(self, **changes: Any) -> "Call":
        new = Call.__new__(Call)
        for name in Call.__slots__:
            setattr(new, name, changes[name] if name in changes else getattr(self, name))
        return new


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

    ``raw`` is the parsed body, or the body's bytes (parsed when a user reads ``result.raw``)."""

    __slots__ = ("texts", "finish_reasons", "usage", "model", "raw", "id", "tool_calls")

    def __init__(
        self,
        texts: list[str],
        finish_reasons: list[str | None],
        usage: Usage | None,
        model: str | None,
        raw: Any,
        id: str | None = None,
        tool_calls: list[Any] | None = None,
    ) -> None:
        self.texts = texts
        self.finish_reasons = finish_reasons
        self.usage = usage
        self.model = model
        self.raw = raw
        self.id = id
        self.tool_calls = tool_calls or [None] * len(texts)


class ChatResult(str):
    """The text of one answer, as a ``str``, with the call's metadata as attributes.

    Being a ``str`` keeps the seed's ``messages.append({"role": "assistant", "content": response})``
    working; ``response.usage``, ``.finish_reason``, ``.model``, ``.latency``, ``.raw`` and
    ``.parsed`` (the validated guided_json object) carry the rest. Each result owns its metadata,
    so results from concurrent calls never mix.
    """

    finish_reason: str | None
    usage: Usage | None
    model: str | None
    latency: float
    id: str | None
    _raw: Any
    choice_index: int
    parsed: Any
    tool_calls: Any

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
        tool_calls: Any = None,
    ) -> "ChatResult":
        self = super().__new__(cls, text)
        self.finish_reason = finish_reason
        self.usage = usage
        self.model = model
        self._raw = raw
        self.latency = latency
        self.id = id
        self.choice_index = choice_index
        self.parsed = parsed
        self.tool_calls = tool_calls
        return self

    @property
    def text(self) -> str:
        return str.__str__(self)

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
        }


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
