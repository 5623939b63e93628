"""What every provider codec shares: the codec contract and helpers for reading bodies and errors.

A codec is pure: it turns a ``Call`` into a ``Request`` and response bytes into results or
errors, and never touches the network. What a client learns about its server is not kept in
the codec but in a ``ServerState`` (``gen_ai/_state.py``) that the flow passes in. The call
flow in ``gen_ai/_core.py`` drives it:

    build_request(call, state)     -> Request (``request.facts``: the learned facts it used)
    parse_response(call, raw)      -> Completion
    parse_error(raw)               -> GenAIError (an APIStatusError subclass)
    stream_parser(call, headers)   -> StreamParser: feed(bytes) -> [text deltas]; close()
    probe_request(call, state)     -> Request | None   (optional one-time probe, e.g. dialects)
    learn(call, request, raw_or_None, found) -> Request | None
                                   (reads a probe's answer into the dict ``found``; may ask a follow-up)
    fallback(call, request, error, state) -> changes | None
                                   (facts to change, as {name: (value the request used, new)}:
                                    the flow applies them to the state and sends again)
    refresh_credentials()          -> None             (may block; run off the event loop when
                                                        ``blocking_credentials`` is true)
    models_request()               -> Request | None   (optional: list what the endpoint serves)
    parse_models(raw)              -> [{"id": ..., ...}]

``extra_keywords`` lists, per call kind, the extra keyword arguments the client lets through
(see gen_ai/_keywords.py); None lets everything through.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from .._retry import parse_retry_after
from .._state import FRESH, Changes, ServerState
from ..errors import (
    ContentFilterError,
    GenAIError,
    InvalidInputError,
    ResponseError,
    ServerError,
    StreamError,
    StreamTruncatedError,
    error_class_for_status,
    is_retryable_status,
)
from ..types import (
    Call,
    Completion,
    EmbeddingCall,
    EmbeddingPart,
    RawResponse,
    Request,
    StreamEvent,
    ToolCall,
    Usage,
    new_call_id,
)

_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]+>")
BODY_LIMIT = 2000


# What parsing code raises when a body is JSON of an unexpected shape ({"choices": ["x"]}, a
# number where a dict was expected, 1e400, deep nesting). Codecs check the shapes they rely on;
# this net, put around every codec's parse_response / parse_error and every stream parser's
# feed / close by the base classes below, turns whatever a check missed into a gen_ai error, so
# nothing else escapes the error tree (tests/test_fuzz_codecs.py).
_SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RecursionError)


def _shape_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _guard_parse_response(fn: Any) -> Any:
    @functools.wraps(fn)
    def parse_response(self: Any, call: Call, response: RawResponse) -> Completion:
        try:
            return fn(self, call, response)  # type: ignore[no-any-return]
        except _SHAPE_ERRORS as exc:
            raise ResponseError(
                f"the response is JSON but not in the shape the {self.provider} API returns "
                f"({_shape_message(exc)}): {describe_body(response.body)[:200]}",
                status_code=response.status, url=response.url, method=response.method, provider=self.provider,
                body=_text(response.body)[:BODY_LIMIT],
            ) from None
    return parse_response


def _guard_parse_error(fn: Any) -> Any:
    @functools.wraps(fn)
    def parse_error(self: Any, response: RawResponse) -> GenAIError:
        try:
            return fn(self, response)  # type: ignore[no-any-return]
        except _SHAPE_ERRORS as exc:
            return status_error(response, self.provider, f"the server answered HTTP {response.status} with an "
                                f"error body gen_ai could not read ({_shape_message(exc)})")
    return parse_error


def _guard_stream(fn: Any) -> Any:
    @functools.wraps(fn)
    def method(self: Any, *args: Any) -> list[str]:
        try:
            return fn(self, *args)  # type: ignore[no-any-return]
        except _SHAPE_ERRORS as exc:
            raise StreamError(f"malformed stream event ({_shape_message(exc)})",
                              provider=getattr(self, "_provider", None)) from None
    return method


def token_count(value: Any) -> int:
    """A usage count from a response: a whole number >= 0, anything else (null, text, a list,
    NaN, 1e400) counts 0 rather than failing an answer that arrived."""
    if type(value) is int:
        return value if value >= 0 else 0
    if type(value) is float and value == value and 0 <= value < 2**63:
        return int(value)
    return 0


class StreamParser:
    """Base of every codec's stream parser: accumulates text, usage, the finish reason and the
    tool calls.

    ``feed`` returns only answer-text deltas (the fast path). Typed events are recorded only when
    asked: ``stream.events()`` sets ``want_events = True`` and drains ``events`` after each feed;
    a parser appends a "text" StreamEvent for each delta it returns, and its ``ToolCallBuffer``
    appends the "tool_call_start" / "tool_call_delta" events.

    Subclasses' ``feed`` and ``close`` raise only gen_ai errors (see ``_SHAPE_ERRORS``).
    """

    want_events = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("feed", "close"):
            if name in cls.__dict__:
                setattr(cls, name, _guard_stream(cls.__dict__[name]))

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.events: list[StreamEvent] = []
        self._tools: ToolCallBuffer | None = None  # created by the first tool-call fragment
        self.reasoning_parts: list[str] = []  # thinking text of choice 0, never in feed()'s output
        self.reasoning_details: list[dict[str, Any]] | None = None  # opaque items to send back
        self.logprobs: list[Any] | None = None  # TokenLogprob of choice 0, when asked for

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str | None:
        parts = self.reasoning_parts
        return "".join(parts) if parts else None

    def add_reasoning(self, text: str) -> None:
        """A thinking-text delta: kept for ``stream.reasoning`` (and, when ``stream.events()``
        asked, a "reasoning" StreamEvent); never returned by ``feed``."""
        self.reasoning_parts.append(text)
        if self.want_events:
            self.events.append(StreamEvent("reasoning", text=text))

    def add_detail(self, item: dict[str, Any]) -> None:
        if self.reasoning_details is None:
            self.reasoning_details = []
        self.reasoning_details.append(item)

    @property
    def tool_calls(self) -> list[ToolCall]:
        tools = self._tools
        return tools.calls() if tools is not None else []

    def tool_buffer(self) -> "ToolCallBuffer":
        if self._tools is None:
            self._tools = ToolCallBuffer(self)
        return self._tools

    def check_tool_calls(self, provider: str) -> None:
        """After close(): a tool call whose JSON arguments were cut off (the stream stopped for
        length, or with no finish reason) raises StreamTruncatedError instead of giving a half
        call. Arguments the model finished but got wrong stay, for ``parsed_arguments`` to report."""
        tools = self._tools
        if tools is None or self.finish_reason not in (None, "length"):
            return
        for call in tools.calls(raw=True):
            try:  # no arguments at all under "length" is a cut-off call too (seen on vLLM)
                if not call.arguments.strip():
                    raise ValueError("no arguments arrived")
                _ = call.parsed_arguments
            except (GenAIError, ValueError):
                raise StreamTruncatedError(
                    f"the stream ended in the middle of tool call {call.name!r}'s arguments "
                    f"(finish_reason={self.finish_reason!r}, {len(call.arguments)} characters of JSON arrived)",
                    suggestion="Raise max_tokens so the model can finish the call, or retry.",
                    provider=provider,
                ) from None

    def feed(self, chunk: bytes) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError


class ToolCallBuffer:
    """Streamed tool-call fragments merged by index, as they arrive.

    ``start`` opens (or names) the call at a wire index; ``add`` appends an arguments fragment to
    it. Only the first fragment of a call usually carries its id and name: later fragments are
    matched by index alone and never dropped, whatever else their chunk lacks. A fragment naming
    a new id at an index whose call already has arguments starts a new call (servers that send
    each complete call at index 0). Calls get dense indexes 0, 1, ... in order of appearance.
    """

    __slots__ = ("_parser", "_slots", "_by_wire")

    def __init__(self, parser: StreamParser) -> None:
        self._parser = parser
        self._slots: list[list[Any]] = []  # [id, name, [fragments]]
        self._by_wire: dict[Any, int] = {}

    def start(self, wire_index: Any, call_id: str | None, name: str | None) -> int:
        slot_index = self._by_wire.get(wire_index)
        if slot_index is not None:
            slot = self._slots[slot_index]
            if call_id and slot[0] and call_id != slot[0] and slot[2]:
                slot_index = None  # a second complete call reusing the index
            else:
                if call_id and not slot[0]:
                    slot[0] = call_id
                if name and not slot[1]:
                    slot[1] = name
                return slot_index
        slot_index = len(self._slots)
        self._slots.append([call_id or "", name or "", []])
        self._by_wire[wire_index] = slot_index
        parser = self._parser
        if parser.want_events:
            parser.events.append(StreamEvent("tool_call_start", index=slot_index, id=call_id or None,
                                             name=name or None))
        return slot_index

    def add(self, wire_index: Any, fragment: str) -> None:
        slot_index = self._by_wire.get(wire_index)
        if slot_index is None:
            slot_index = self.start(wire_index, None, None)
        if fragment:
            self._slots[slot_index][2].append(fragment)
            parser = self._parser
            if parser.want_events:
                parser.events.append(StreamEvent("tool_call_delta", index=slot_index, arguments=fragment))

    def calls(self, raw: bool = False) -> list[ToolCall]:
        """The calls so far; a call with no argument fragments has "{}" (a call without
        parameters) unless ``raw``."""
        for slot in self._slots:
            if not slot[0]:
                slot[0] = new_call_id()  # made once, so every read of the calls agrees
        return [ToolCall(slot[0], slot[1], "".join(slot[2]) or ("" if raw else "{}"), i)
                for i, slot in enumerate(self._slots)]

    def __len__(self) -> int:
        return len(self._slots)


# Request headers whose values are credentials, whichever provider or gateway sets them.
AUTH_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key"})


def json_headers(credentials: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A JSON API's request headers: content type, the provider's credential headers, then the
    user's own headers (last, so a gateway's header can replace ours)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json", **credentials}
    if extra:
        headers.update(extra)
    return headers


def header_secrets(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credential values among request headers (for "Bearer X", X)."""
    values = []
    for name, value in headers.items():
        if value and name.lower() in AUTH_HEADERS:
            values.append(value.split(" ", 1)[1] if " " in value else value)
    return tuple(values)


class Codec:
    """Defaults for the optional parts of the codec contract.

    Subclasses' ``parse_response`` raises and ``parse_error`` returns only gen_ai errors,
    whatever the body holds (see ``_SHAPE_ERRORS``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "parse_response" in cls.__dict__:
            cls.parse_response = _guard_parse_response(cls.__dict__["parse_response"])  # type: ignore[method-assign]
        if "parse_error" in cls.__dict__:
            cls.parse_error = _guard_parse_error(cls.__dict__["parse_error"])  # type: ignore[method-assign]

    provider = "base"
    _headers: dict[str, str] = {}
    extra_keywords: Mapping[str, frozenset[str]] | None = None
    # True when build_request would otherwise block (a token callable, refreshing AWS
    # credentials): the call flow then runs refresh_credentials() first, off the event loop.
    blocking_credentials = False
    # True when a result's ``raw`` bytes are an OpenAI Chat Completions / Completions response
    # body: a batch file then writes them into the output line as they came (no re-encoding).
    openai_response_body = False

    def refresh_credentials(self) -> None:
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every credential value this codec holds, to be scrubbed from errors and logs.

        By default: the credential headers it sends (its own and any the user passed)."""
        return header_secrets(self._headers)

    def probe_request(self, call: Call, state: ServerState) -> Request | None:
        return None

    def learn(self, call: Call, request: Request, response: RawResponse | None,
              found: dict[str, Any]) -> Request | None:
        return None

    def fallback(self, call: Call, request: Request, error: GenAIError, state: ServerState) -> Changes | None:
        return None

    def models_request(self) -> Request | None:
        """A GET listing the models the endpoint serves (``gen-ai models``); None: it cannot."""
        return None

    def parse_models(self, response: RawResponse) -> list[dict[str, Any]]:
        """The models in a 2xx answer to ``models_request()``, each a dict with an ``id``."""
        return model_entries(decode_json(response, self.provider))

    def build_request(self, call: Call, state: ServerState = FRESH) -> Request:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse_response(self, call: Call, response: RawResponse) -> Completion:  # pragma: no cover
        raise NotImplementedError

    def parse_error(self, response: RawResponse) -> GenAIError:
        return status_error(response, self.provider, *error_details(response.body))

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:  # pragma: no cover
        raise NotImplementedError

    # -- embeddings (optional): pure build/parse, driven by _core.embedding_flow ---------------

    # Inputs per request by default (run_embeddings(batch_size=) overrides, up to the max);
    # 0 means the provider has no embeddings.
    embedding_batch_size = 0
    embedding_max_batch = 0
    # Whether an empty string is refused (before any request, naming its index).
    embedding_rejects_empty = True

    def build_embedding_request(self, call: EmbeddingCall, state: ServerState = FRESH) -> Request:
        raise NotImplementedError  # pragma: no cover - abstract

    def parse_embedding_response(self, call: EmbeddingCall, response: RawResponse) -> EmbeddingPart:
        raise NotImplementedError  # pragma: no cover - abstract

    def embedding_fallback(self, call: EmbeddingCall, request: Request, error: GenAIError,
                           state: ServerState) -> Changes | None:
        """Like ``fallback``: the state changes that let the request succeed, or None."""
        return None

    def __repr__(self) -> str:  # never the headers: they hold credentials
        return (f"<{type(self).__name__} endpoint={getattr(self, 'base_url', None)!r} "
                f"model={getattr(self, 'model_name', None)!r}>")


def split_system(messages: list[dict[str, Any]], provider: str) -> tuple[list[str], list[tuple[int, str, Any, Any]]]:
    """For APIs that take the system prompt apart from the turns (Anthropic, Gemini, Bedrock):
    the system and developer messages' texts, and the other turns as
    ``(index, role, content, message)``: role "user", "assistant" (content may be None when the
    message carries ``tool_calls``) or "tool" (a tool result; ``message`` has its
    ``tool_call_id``). Other roles, non-text system parts and a conversation without a turn
    raise InvalidInputError naming the message."""
    system: list[str] = []
    turns: list[tuple[int, str, Any, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(content if isinstance(content, str) else _system_text(content, i))
        elif role in ("user", "assistant") and (content is not None or message.get("tool_calls")):
            turns.append((i, role, content, message))
        elif role == "tool":
            turns.append((i, role, content, message))
        else:
            raise InvalidInputError(
                f"messages[{i}]: role {role!r} is not supported by the {provider} provider",
                suggestion="Use system, user, assistant and tool messages (tool results name their tool_call_id).",
                field=f"messages[{i}].role",
            )
    if not turns:
        raise InvalidInputError(
            f"messages: the {provider} provider needs at least one user or assistant message besides the "
            "system ones",
            suggestion='Add {"role": "user", "content": "..."}.',
            field="messages",
        )
    return system, turns


def _system_text(parts: Any, i: int) -> str:
    texts = []
    for j, part in enumerate(parts or ()):
        if part.get("type") != "text":
            raise InvalidInputError(f"messages[{i}].content[{j}]: a system message may only hold text",
                                    field=f"messages[{i}].content[{j}]")
        texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def model_entries(data: Any) -> list[dict[str, Any]]:
    """Model lists in the shapes the providers use, as dicts with ``id`` first: OpenAI and
    Anthropic ``{"data": [{"id"}]}``, Gemini ``{"models": [{"name": "models/x"}]}``, Bedrock
    ``{"modelSummaries": [{"modelId"}]}``, and a bare list."""
    items: Any = data
    if isinstance(data, dict):
        items = next((data[k] for k in ("data", "models", "modelSummaries") if isinstance(data.get(k), list)), [])
    out: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        name = item.get("id") or item.get("modelId") or item.get("name")
        if not isinstance(name, str) or not name:
            continue
        if name.startswith("models/") and "id" not in item:
            name = name[len("models/"):]
        out.append({"id": name, **{k: v for k, v in item.items() if k not in ("id", "modelId")}})
    return out


# One encoder for every request: json.dumps with options builds a new JSONEncoder per call.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode = _encoder.encode
_default = _encoder.default


def dumps(value: Any) -> bytes:
    if c_make_encoder is not None:
        # What _encoder.encode(value) does, minus its two Python layers: the C encoder, built per
        # call (its circular-reference markers must not be shared between calls or threads).
        return "".join(c_make_encoder({}, _default, encode_basestring, None, ":", ",", False, False, True)
                       (value, 0)).encode("utf-8")
    return _encode(value).encode("utf-8")


_scan_once = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]
_whitespace = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]


def loads(data: Any) -> Any:
    """``json.loads(data)``, the same value or the same error. A bytes object that starts with
    ``{`` (UTF-8 by json's own encoding detection) goes straight to json's C scanner: the three
    Python layers of ``json.loads`` in between cost about a third of a small response's parse."""
    if type(data) is bytes and data[:1] == b"{" and data[1:2] != b"\x00":
        text = data.decode("utf-8", "surrogatepass")
        try:
            value, end = _scan_once(text, 0)
        except StopIteration as exc:
            raise json.JSONDecodeError("Expecting value", text, exc.value) from None
        if end != len(text):
            end = _whitespace(text, end).end()
            if end != len(text):
                raise json.JSONDecodeError("Extra data", text, end)
        return value
    return json.loads(data)


def decode_json(response: RawResponse, provider: str) -> Any:
    """The body as JSON, or a ResponseError that says what came back instead."""
    try:
        return loads(response.body)
    except ValueError:
        pass
    raise ResponseError(
        f"expected a JSON body but got {describe_body(response.body)}",
        status_code=response.status,
        url=response.url,
        method=response.method,
        provider=provider,
        body=_text(response.body)[:BODY_LIMIT],
    )


def describe_body(body: bytes) -> str:
    """A short human description of a body that is not the JSON we wanted."""
    if not body.strip():
        return "an empty body"
    match = _TITLE_RE.search(body[:20000])
    if match or body.lstrip()[:1] == b"<":
        title = _text(match.group(1)).strip() if match else _TAG_RE.sub(" ", _text(body[:300])).strip()
        return f"an HTML page ({title[:120]!r}), probably from a proxy or web server in front of the API"
    return f"{_text(body[:120])!r}"


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def error_details(body: bytes) -> tuple[str, str | None, Any]:
    """(message, error_type, code) from the error shapes of OpenAI, vLLM, SGLang, llama.cpp,
    llama-cpp-python (FastAPI), Anthropic and Gemini; falls back to describing the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return f"the server returned {describe_body(body)}", None, None
    if isinstance(data, list) and data and isinstance(data[0], dict):  # Gemini sometimes wraps in a list
        data = data[0]
    if not isinstance(data, dict):
        return f"the server returned {describe_body(body)}", None, None
    err = data.get("error")
    if isinstance(err, dict):
        message = err.get("message") or err.get("msg") or json.dumps(err)[:300]
        return str(message), _opt_str(err.get("type") or err.get("status")), err.get("code")
    if isinstance(err, str):
        return err, _opt_str(data.get("type")), data.get("code")
    if "message" in data:  # SGLang / old vLLM: flat {object: "error", message, type, code}
        return str(data["message"]), _opt_str(data.get("type") or data.get("__type")), data.get("code")
    detail = data.get("detail")
    if isinstance(detail, list):  # FastAPI validation errors
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts) or json.dumps(detail)[:300], "validation_error", None
    if detail is not None:
        return str(detail), None, None
    return json.dumps(data)[:300], None, None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


_CONTEXT_WORDS = ("context length", "context_length", "maximum context", "too many tokens", "prompt is too long",
                  "context size")  # llama.cpp: "exceeds the available context size"


def status_error(
    response: RawResponse,
    provider: str,
    message: str,
    error_type: str | None = None,
    code: Any = None,
    *,
    cls: type[GenAIError] | None = None,
    retryable: bool | None = None,
) -> GenAIError:
    """An error for a non-2xx response, with the right class and a useful suggestion."""
    status = response.status
    cls = cls or error_class_for_status(status)
    suggestion = None
    lowered = message.lower()
    if any(word in lowered for word in _CONTEXT_WORDS):
        suggestion = "The prompt plus max_tokens exceeds the model's context; shorten the messages or lower max_tokens."
    elif "tool-call-parser" in lowered or "enable-auto-tool-choice" in lowered:
        suggestion = ("vLLM takes tool_choice only when started with --enable-auto-tool-choice --tool-call-parser "
                      "NAME (the parser for the model's format: hermes, llama3_json, mistral, ...); restart it "
                      "with both, or call without tool_choice.")
    elif cls is ServerError and "html page" in lowered:
        suggestion = "A proxy or gateway in front of the API failed; this is usually temporary, retry later."
    elif issubclass(cls, ContentFilterError):
        suggestion = None
    if retryable is None:
        retryable = is_retryable_status(status) or cls.retryable_default
    return cls(
        message,
        suggestion=suggestion,
        status_code=status,
        url=response.url,
        method=response.method,
        retryable=retryable,
        provider=provider,
        error_type=error_type if error_type is not None else (str(code) if code is not None else None),
        body=_text(response.body)[:BODY_LIMIT],
        retry_after=parse_retry_after(response.headers),
    )


def float_vector(values: Any, as_numpy: bool, provider: str) -> Any:
    """One JSON list of numbers as a list of floats (or a float32 numpy array)."""
    if not isinstance(values, list) or not values:
        raise ResponseError(f"an embedding is not a non-empty list of numbers: {str(values)[:100]}",
                            provider=provider)
    if as_numpy:
        import numpy

        return numpy.asarray(values, dtype=numpy.float32)
    return values


def base64_vector(text: Any, as_numpy: bool, provider: str) -> Any:
    """A base64 string of little-endian float32 values (OpenAI's ``encoding_format: "base64"``)
    as a list of floats (or a numpy array): about 4x fewer bytes and no float parsing."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(text)
    except (binascii.Error, TypeError, ValueError):
        raise ResponseError(f"an embedding is not valid base64: {str(text)[:60]!r}", provider=provider) from None
    if not raw or len(raw) % 4:
        raise ResponseError(f"a base64 embedding has {len(raw)} bytes, not a whole number of float32 values",
                            provider=provider)
    if as_numpy:
        import numpy

        return numpy.frombuffer(raw, dtype="<f4").copy()
    import array
    import sys

    floats = array.array("f")
    floats.frombytes(raw)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        floats.byteswap()
    return floats.tolist()
