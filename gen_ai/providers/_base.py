"""What every provider codec shares: the codec contract and helpers for reading bodies and errors.

A codec is pure: it turns a ``Call`` into a ``Request`` and response bytes into results or
errors, and never touches the network. The call flow in ``gen_ai/_core.py`` drives it:

    build_request(call)            -> Request
    parse_response(call, raw)      -> Completion
    parse_error(raw)               -> GenAIError (an APIStatusError subclass)
    stream_parser(call, headers)   -> StreamParser: feed(bytes) -> [text deltas]; close()
    probe_request(call)            -> Request | None   (optional one-time probe, e.g. dialects)
    learn(call, raw_or_None)       -> None             (reads the probe's answer)
    fallback(call, error)          -> bool             (True: codec adapted, send again)
    models_request()               -> Request | None   (optional: list what the endpoint serves)
    parse_models(raw)              -> [{"id": ..., ...}]
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .._retry import parse_retry_after
from ..errors import (
    ContentFilterError,
    GenAIError,
    InvalidInputError,
    ResponseError,
    ServerError,
    error_class_for_status,
    is_retryable_status,
)
from ..types import Call, Completion, RawResponse, Request, Usage

_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]+>")
BODY_LIMIT = 2000


class StreamParser:
    """Base of every codec's stream parser: accumulates text, usage and the finish reason."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def feed(self, chunk: bytes) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError


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
    """Defaults for the optional parts of the codec contract."""

    provider = "base"
    _headers: dict[str, str] = {}

    def secrets(self) -> tuple[str, ...]:
        """Every credential value this codec holds, to be scrubbed from errors and logs.

        By default: the credential headers it sends (its own and any the user passed)."""
        return header_secrets(self._headers)

    def probe_request(self, call: Call) -> Request | None:
        return None

    def learn(self, call: Call, response: RawResponse | None) -> None:
        return None

    def fallback(self, call: Call, error: GenAIError) -> bool:
        return False

    def models_request(self) -> Request | None:
        """A GET listing the models the endpoint serves (``gen-ai models``); None: it cannot."""
        return None

    def parse_models(self, response: RawResponse) -> list[dict[str, Any]]:
        """The models in a 2xx answer to ``models_request()``, each a dict with an ``id``."""
        return model_entries(decode_json(response, self.provider))

    def build_request(self, call: Call) -> Request:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse_response(self, call: Call, response: RawResponse) -> Completion:  # pragma: no cover
        raise NotImplementedError

    def parse_error(self, response: RawResponse) -> GenAIError:
        return status_error(response, self.provider, *error_details(response.body))

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:  # never the headers: they hold credentials
        return (f"<{type(self).__name__} endpoint={getattr(self, 'base_url', None)!r} "
                f"model={getattr(self, 'model_name', None)!r}>")


def split_system(messages: list[dict[str, Any]], provider: str) -> tuple[list[str], list[tuple[int, str, Any]]]:
    """For APIs that take the system prompt apart from the turns (Anthropic, Gemini, Bedrock):
    the system and developer messages' texts, and the user/assistant turns as
    ``(index, role, content)``. Other roles, non-text system parts and a conversation without a
    turn raise InvalidInputError naming the message."""
    system: list[str] = []
    turns: list[tuple[int, str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(content if isinstance(content, str) else _system_text(content, i))
        elif role in ("user", "assistant") and content is not None:
            turns.append((i, role, content))
        else:
            raise InvalidInputError(
                f"messages[{i}]: role {role!r} (tool calls and tool results) is not supported by the "
                f"{provider} provider",
                suggestion="Send the tool result as a user message, or pass the provider's own tool fields "
                           "as extra keywords.",
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


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_json(response: RawResponse, provider: str) -> Any:
    """The body as JSON, or a ResponseError that says what came back instead."""
    try:
        return json.loads(response.body)
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


_CONTEXT_WORDS = ("context length", "context_length", "maximum context", "too many tokens", "prompt is too long")


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
