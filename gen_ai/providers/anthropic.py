"""Anthropic's Messages API (``POST /v1/messages``). Pure codec, no I/O.

What the OpenAI-shaped call becomes:

    system / developer messages   top-level ``system`` (joined with blank lines)
    user / assistant messages     ``messages`` (string content kept; parts -> content blocks)
    image_url data: URL           {type: image, source: {type: base64, media_type, data}}
    image_url http(s) URL         {type: image, source: {type: url, url}}
    text completion prompt        one user message
    max_tokens                    ``max_tokens`` (always sent: the API requires it)
    temperature, top_p            ``temperature``; ``top_p`` only when it is not 1.0 (models
                                  reject requests that set both). The newest models and the
                                  official SDK dropped sampling parameters: with the default
                                  ``sampling_params=None`` a 400 naming them makes the codec
                                  stop sending them (once per client) and send the call again;
                                  ``sampling_params=False`` never sends them.
    n > 1                         not sent: one choice comes back and the call flow asks again
                                  with n=1 until there are n answers
    guided_json                   ``output_config.format = {type: json_schema, schema}``
    stop                          ``stop_sequences``; any other extra keyword goes to the body
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._keywords import ANTHROPIC_KEYWORDS
from .._sse import SSEDecoder
from .._state import FRESH, Changes, ServerState
from ..errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    GenAIError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ResponseError,
    ServerError,
    StreamError,
    StreamTruncatedError,
)
from ..images import split_data_url
from ..tools import arguments_object, tool_result_text
from ..types import Call, Completion, RawResponse, Request, StreamEvent, ToolCall, Usage
from ._base import (
    AUTH_HEADERS,
    Codec,
    StreamParser,
    decode_json,
    dumps,
    error_details,
    json_headers,
    split_system,
    status_error,
    token_count,
)

DEFAULT_ENDPOINT = "https://api.anthropic.com"
API_VERSION = "2023-06-01"

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error.type -> (class, retryable). 529 arrives as overloaded_error.
_ERROR_TYPES: dict[str, tuple[type[APIStatusError], bool]] = {
    "invalid_request_error": (BadRequestError, False),
    "request_too_large": (BadRequestError, False),
    "authentication_error": (AuthenticationError, False),
    "permission_error": (AuthenticationError, False),
    "billing_error": (AuthenticationError, False),
    "not_found_error": (NotFoundError, False),
    "rate_limit_error": (RateLimitError, True),
    "overloaded_error": (ServerError, True),
    "api_error": (ServerError, True),
    "timeout_error": (ServerError, True),
}
_SAMPLING_WORDS = ("temperature", "top_p", "top_k", "sampling")
_SAMPLING_FIELDS = frozenset({"temperature", "top_p"})
# reasoning_effort -> budget_tokens for manual extended thinking ({type: "enabled"}).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768, "max": 64000}
# reasoning_effort -> output_config.effort for adaptive thinking (low, medium, high, xhigh, max).
ADAPTIVE_EFFORTS = {"minimal": "low"}
_MODEL_VERSION_RE = re.compile(r"claude-(?:opus|sonnet|haiku)-(\d+)(?:[-.](\d{1,2}))?(?!\d)")


def thinking_mode(model_name: str) -> str:
    """"adaptive" for Claude 4.6 and later (adaptive thinking with output_config.effort; the
    budget_tokens form is deprecated there), "enabled" (budget_tokens) for older models."""
    match = _MODEL_VERSION_RE.search(model_name.lower())
    if match is None:
        return "enabled"
    version = (int(match.group(1)), int(match.group(2) or 0))
    return "adaptive" if version >= (4, 6) else "enabled"


def thinking_fields(effort: str | int, max_tokens: int, mode: str) -> tuple[dict[str, Any], str | None]:
    """(the ``thinking`` object, the output_config.effort or None) for a reasoning_effort.
    Raises InvalidInputError when a thinking budget cannot fit below max_tokens."""
    if effort == "none":
        return {"type": "disabled"}, None
    if mode == "adaptive" and isinstance(effort, str):
        return {"type": "adaptive"}, ADAPTIVE_EFFORTS.get(effort, effort)
    if isinstance(effort, int):
        budget = effort
    elif effort in THINKING_BUDGETS:
        budget = THINKING_BUDGETS[effort]
    else:
        raise InvalidInputError(
            f"reasoning_effort={effort!r} is not a level this model's extended thinking takes",
            suggestion=f"Use one of {', '.join(THINKING_BUDGETS)}, \"none\", or a budget in tokens (>= 1024).",
            field="reasoning_effort",
        )
    # Thinking tokens count against max_tokens, and budget_tokens must be >= 1024 and < max_tokens.
    budget = min(budget, max_tokens - 1)
    if budget < 1024:
        raise InvalidInputError(
            f"max_tokens={max_tokens} leaves no room for extended thinking (budget_tokens must be >= 1024 and "
            "below max_tokens, and thinking tokens count against max_tokens)",
            suggestion="Pass max_tokens=4096 or more with reasoning_effort, or reasoning_effort=\"none\".",
            field="max_tokens",
        )
    return {"type": "enabled", "budget_tokens": budget}, None
_RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})


def _base_url(endpoint: str) -> str:
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"endpoint={endpoint!r} is not an http(s) URL",
            suggestion="Pass a base URL such as 'https://api.anthropic.com' (or a gateway's URL).",
            field="endpoint",
        )
    return endpoint.rstrip("/")


class AnthropicCodec(Codec):
    provider = "anthropic"
    extra_keywords = ANTHROPIC_KEYWORDS
    env_api_key = "ANTHROPIC_API_KEY"
    env_endpoint = "ANTHROPIC_BASE_URL"

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        model_name: str | None = None,
        *,
        anthropic_version: str = API_VERSION,
        strict_schema: bool = True,
        sampling_params: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        api_key = api_key if api_key is not None else os.environ.get(self.env_api_key)
        custom_endpoint = endpoint or os.environ.get(self.env_endpoint)
        if not model_name:
            raise ConfigurationError(
                "no model_name for provider 'anthropic'",
                suggestion="Pass model_name= to create_client(), e.g. 'claude-sonnet-4-5'.",
                field="model_name",
            )
        if not api_key and not custom_endpoint and not (headers and _has_auth(headers)):
            raise ConfigurationError(
                "no API key for provider 'anthropic'",
                suggestion=f"Pass api_key= to create_client() or set {self.env_api_key}.",
                field="api_key",
            )
        self.base_url = _base_url(custom_endpoint or DEFAULT_ENDPOINT)
        # Accept both 'https://host' and 'https://host/v1' as the endpoint.
        path = "/messages" if self.base_url.endswith("/v1") else "/v1/messages"
        self._url = self.base_url + path
        self.model_name = model_name
        self._api_key = api_key or None
        self.strict_schema = strict_schema
        # None: send temperature/top_p until the API rejects them (learned in the client's
        # ServerState.rejected_fields); True: always; False: never.
        self.sampling_params = sampling_params
        self._send_sampling = sampling_params is not False
        # How this model takes reasoning_effort ("adaptive" or "enabled"), from the model name;
        # a 400 naming the other form is learned in ServerState.thinking_mode.
        self.thinking_mode = thinking_mode(model_name)
        credentials = {"x-api-key": self._api_key} if self._api_key else {}
        self._headers = json_headers({"anthropic-version": anthropic_version, **credentials}, headers)

    # -- requests -------------------------------------------------------------------------

    def build_body(self, call: Call, state: ServerState = FRESH) -> dict[str, Any]:
        if call.kind == "chat":
            system, messages = convert_messages(call.messages or [])
        else:
            system, messages = None, [{"role": "user", "content": call.prompt or ""}]
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": call.max_tokens, "messages": messages}
        if system:
            body["system"] = system
        if self._send_sampling and "temperature" not in state.rejected_fields:
            body["temperature"] = call.temperature
            if call.top_p != 1.0:
                body["top_p"] = call.top_p
        if call.stream:
            body["stream"] = True
        if call.tools is not None or call.tool_choice is not None:
            body.update(tool_fields(call))
        if call.schema is not None:
            schema = call.schema.json_schema
            if self.strict_schema:
                schema = closed_objects(schema)
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        if call.reasoning_effort is not None:
            thinking, effort = thinking_fields(call.reasoning_effort, call.max_tokens,
                                               state.thinking_mode or self.thinking_mode)
            body["thinking"] = thinking
            if effort is not None:
                body["output_config"] = {**body.get("output_config", {}), "effort": effort}
            if thinking["type"] != "disabled":
                # Thinking is not compatible with temperature or top_k changes (top_p only 0.95..1).
                body.pop("temperature", None)
                if body.get("top_p", 1.0) < 0.95:
                    body.pop("top_p")
        if call.extra:
            extra = dict(call.extra)
            stop = extra.pop("stop", None)
            if stop is not None:
                body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
            body.update(extra)
        return body

    def build_request(self, call: Call, state: ServerState = FRESH) -> Request:
        headers = self._headers
        if call.stream:
            headers = {**headers, "Accept": "text/event-stream"}
        return Request("POST", self._url, headers, dumps(self.build_body(call, state)), call.stream,
                       state.rejected_fields)

    def models_request(self) -> Request | None:
        # GET /v1/models pages with limit (at most 1000) and after_id; one page of 1000 is plenty.
        url = self.base_url + ("/models" if self.base_url.endswith("/v1") else "/v1/models") + "?limit=1000"
        return Request("GET", url, {k: v for k, v in self._headers.items() if k != "Content-Type"})

    def fallback(self, call: Call, request: Request, error: GenAIError, state: ServerState) -> Changes | None:
        effort = call.reasoning_effort
        if effort is not None and effort != "none" and error.status_code == 400:
            message = (error.message or "").lower()
            body = request.body or b""
            mode = state.thinking_mode
            if b'"adaptive"' in body and "adaptive" in message:
                return {"thinking_mode": (mode, "enabled")}
            if b'"budget_tokens"' in body and isinstance(effort, str) and \
                    ("budget_tokens" in message or "adaptive" in message):
                return {"thinking_mode": (mode, "adaptive")}
        used = request.facts if request.facts is not None else frozenset()
        if self.sampling_params is not None or "temperature" in used or error.status_code != 400:
            return None
        message = (error.message or "").lower()
        if not any(word in message for word in _SAMPLING_WORDS):
            return None
        return {"rejected_fields": (used, used | _SAMPLING_FIELDS)}

    # -- responses ------------------------------------------------------------------------

    def parse_response(self, call: Call, response: RawResponse) -> Completion:
        data = decode_json(response, self.provider)
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            message, _, _ = error_details(response.body)
            raise ResponseError(
                f"the response has no 'content' list: {message[:300]}",
                status_code=response.status, url=response.url, method=response.method, provider=self.provider,
            )
        texts: list[str] = []
        tool_calls: list[ToolCall] = []
        thinking: list[str] = []
        details: list[dict[str, Any]] = []
        for block in data["content"]:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text") or ""))
            elif kind == "thinking":
                thinking.append(str(block.get("thinking") or ""))
                details.append({"type": "anthropic.thinking", "thinking": str(block.get("thinking") or ""),
                                "signature": str(block.get("signature") or "")})
            elif kind == "redacted_thinking":
                details.append({"type": "anthropic.redacted_thinking", "data": str(block.get("data") or "")})
            elif kind == "tool_use":
                tool_calls.append(ToolCall(str(block.get("id") or ""), str(block.get("name") or ""),
                                           json.dumps(block.get("input") or {}, ensure_ascii=False),
                                           len(tool_calls)))
        stop = data.get("stop_reason")
        return Completion(["".join(texts)], [map_stop_reason(stop)], usage_from_json(data.get("usage")),
                          data.get("model"), data, data.get("id"), [tool_calls] if tool_calls else None,
                          ["".join(thinking)] if thinking else None, [details] if details else None)

    def parse_error(self, response: RawResponse) -> GenAIError:
        message, error_type, code = error_details(response.body)
        cls: type[GenAIError] | None = None
        retryable: bool | None = None
        if error_type in _ERROR_TYPES:
            cls, retryable = _ERROR_TYPES[error_type]
            # A 5xx is always worth retrying, whatever type the body names.
            retryable = retryable or response.status >= 500 or response.status == 429
        error = status_error(response, self.provider, message, error_type, code, cls=cls, retryable=retryable)
        if error_type == "overloaded_error" or response.status == 529:
            error.suggestion = "Anthropic's API is overloaded; this is temporary, retry later or raise max_retries."
        return error

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:
        return AnthropicStreamParser(self.provider)


def map_stop_reason(reason: Any) -> str | None:
    if reason is None:
        return None
    return STOP_REASONS.get(str(reason), str(reason))


def usage_from_json(usage: Any) -> Usage | None:
    """input_tokens excludes cached prompt tokens; prompt_tokens counts them all."""
    if not isinstance(usage, dict):
        return None
    read = token_count(usage.get("cache_read_input_tokens"))
    write = token_count(usage.get("cache_creation_input_tokens"))
    # output_tokens includes thinking tokens; Anthropic does not report them apart.
    return Usage(token_count(usage.get("input_tokens")) + read + write, token_count(usage.get("output_tokens")),
                 None, read, write)


def convert_messages(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI chat messages -> (system text, Anthropic messages). An assistant message's
    ``tool_calls`` become ``tool_use`` blocks; consecutive ``role: "tool"`` messages become one
    user message of ``tool_result`` blocks (Anthropic wants every result of a turn together)."""
    system, turns = split_system(messages, "anthropic")
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open user message of tool results
    for i, role, content, message in turns:
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"],
                     "content": content if isinstance(content, str) else
                     [_block(part, i, j) for j, part in enumerate(content)] if isinstance(content, list)
                     else tool_result_text(content)}
            if results is None:
                results = []
                out.append({"role": "user", "content": results})
            results.append(block)
            continue
        results = None
        calls = message.get("tool_calls") if role == "assistant" else None
        details = message.get("reasoning_details") if role == "assistant" else None
        if calls:
            # Thinking blocks go first, unmodified (required before tool_use when thinking is on).
            blocks: list[dict[str, Any]] = thinking_blocks(details) if details else []
            if isinstance(content, str):
                if content:
                    blocks.append({"type": "text", "text": content})
            elif content:
                blocks.extend(_block(part, i, j) for j, part in enumerate(content))
            for call in calls:
                function = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call["id"], "name": function.get("name"),
                               "input": arguments_object(function.get("arguments"))})
            out.append({"role": "assistant", "content": blocks})
            continue
        converted: Any = (content if isinstance(content, str)
                          else [_block(part, i, j) for j, part in enumerate(content)])
        if details:
            converted = thinking_blocks(details) + _as_blocks(converted)
        out.append({"role": role, "content": converted})
    return ("\n\n".join(system) if system else None), out


def thinking_blocks(details: Any) -> list[dict[str, Any]]:
    """The thinking / redacted_thinking blocks of a to_message() ``reasoning_details`` list,
    unmodified and in order, as the Messages API requires them back (other providers' items are
    skipped)."""
    blocks: list[dict[str, Any]] = []
    for item in details if isinstance(details, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "anthropic.thinking":
            blocks.append({"type": "thinking", "thinking": item.get("thinking", ""),
                           "signature": item.get("signature", "")})
        elif item.get("type") == "anthropic.redacted_thinking":
            blocks.append({"type": "redacted_thinking", "data": item.get("data", "")})
    return blocks


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content)


def tool_fields(call: Call) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` in the Messages API's shape."""
    fields: dict[str, Any] = {}
    if call.tools:
        fields["tools"] = [{"name": t.name, **({"description": t.description} if t.description else {}),
                            "input_schema": t.parameters} for t in call.tools]
    choice = call.tool_choice
    spec: dict[str, Any] | None = None
    if choice == "auto":
        spec = {"type": "auto"}
    elif choice == "required":
        spec = {"type": "any"}
    elif choice == "none":
        spec = {"type": "none"}
    elif choice is not None:
        spec = {"type": "tool", "name": choice}
    if call.parallel_tool_calls is False and call.tools and choice != "none":
        spec = spec or {"type": "auto"}
        spec["disable_parallel_tool_use"] = True
    if spec is not None and (call.tools or choice == "none"):
        fields["tool_choice"] = spec
    return fields


def _block(part: dict[str, Any], i: int, j: int) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str) and url.startswith("data:"):
            media_type, data = split_data_url(url)
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidInputError(
        f"messages[{i}].content[{j}]: content part type {kind!r} is not supported by the anthropic provider",
        suggestion="Use text parts and image_url parts (a data: URL or an http(s) URL).",
        field=f"messages[{i}].content[{j}]",
    )


def closed_objects(schema: Any) -> Any:
    """A copy of ``schema`` where every object without ``additionalProperties`` gets ``false``:
    Anthropic's structured outputs reject open objects. Validation of the answer still uses the
    user's original schema."""
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed_objects(value) if key not in ("enum", "const", "default", "examples") else value
           for key, value in schema.items()}
    if out.get("type") == "object" and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _has_auth(headers: Mapping[str, str]) -> bool:
    return any(k.lower() in AUTH_HEADERS for k in headers)


class AnthropicStreamParser(StreamParser):
    """Messages API server-sent events: message_start, content_block_start/delta/stop,
    message_delta (stop_reason, usage), message_stop, ping and error."""

    def __init__(self, provider: str) -> None:
        super().__init__()
        self._provider = provider
        self._sse = SSEDecoder()
        self._pending: GenAIError | None = None
        self._done = False
        self._input: dict[str, Any] = {}
        self._output_tokens = 0
        self._blocks: dict[int, dict[str, Any]] = {}  # index -> thinking block being streamed

    def feed(self, chunk: bytes) -> list[str]:
        out: list[str] = []
        if self._pending is not None:
            raise self._pending
        try:
            for name, data in self._sse.feed(chunk):
                self._event(name, data, out)
        except GenAIError as exc:
            # Hand out the text that came before the error first; raise on the next call.
            if not out:
                raise
            self._pending = exc
        if out:
            self.parts.extend(out)
        return out

    def _event(self, name: str | None, data: bytes, out: list[str]) -> None:
        try:
            obj = json.loads(data)
        except ValueError:
            raise StreamError(f"malformed stream event {name!r}: {data[:200]!r}", provider=self._provider) from None
        if not isinstance(obj, dict):
            raise StreamError(f"malformed stream event {name!r}: {data[:200]!r}", provider=self._provider)
        kind = obj.get("type") or name
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                if type(delta.get("text")) is str and delta["text"]:
                    out.append(delta["text"])
                    if self.want_events:
                        self.events.append(StreamEvent("text", text=delta["text"]))
            elif dtype == "input_json_delta":
                self.tool_buffer().add(obj.get("index"), str(delta.get("partial_json") or ""))
            elif dtype == "thinking_delta":
                piece = delta.get("thinking")
                if type(piece) is str and piece:
                    self.add_reasoning(piece)
                    block = self._blocks.get(obj.get("index", -1))
                    if block is not None:
                        block["thinking"] += piece
            elif dtype == "signature_delta":
                block = self._blocks.get(obj.get("index", -1))
                if block is not None:
                    block["signature"] += str(delta.get("signature") or "")
        elif kind == "content_block_start":
            start = obj.get("content_block")
            if not isinstance(start, dict):
                start = {}
            if start.get("type") == "tool_use":
                self.tool_buffer().start(obj.get("index"), start.get("id"), start.get("name"))
            elif start.get("type") == "thinking":
                block = {"type": "anthropic.thinking", "thinking": str(start.get("thinking") or ""),
                         "signature": str(start.get("signature") or "")}
                if block["thinking"]:
                    self.add_reasoning(block["thinking"])
                self._blocks[obj.get("index", -1)] = block
                self.add_detail(block)
            elif start.get("type") == "redacted_thinking":
                self.add_detail({"type": "anthropic.redacted_thinking", "data": str(start.get("data") or "")})
        elif kind == "message_start":
            message = obj.get("message") or {}
            self.id = message.get("id")
            self.model = message.get("model")
            self._usage(message.get("usage"))
        elif kind == "message_delta":
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = map_stop_reason(reason)
            self._usage(obj.get("usage"))
        elif kind == "message_stop":
            self._done = True
        elif kind == "error":
            message, error_type, _ = error_details(data)
            raise StreamError(
                f"Anthropic reported an error mid-stream: {message}",
                provider=self._provider,
                error_type=error_type,
                retryable=error_type in _RETRYABLE_STREAM_ERRORS,
                suggestion=("Anthropic's API is overloaded; retry the request later."
                            if error_type == "overloaded_error" else None),
            )
        # ping, content_block_stop and unknown future events carry no text.

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_start has the input counts; message_delta has cumulative output (and, on newer
        # API versions, input) counts: keep the latest value of each field.
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            if usage.get(key) is not None:
                self._input[key] = usage[key]
        if usage.get("output_tokens") is not None:
            self._output_tokens = token_count(usage["output_tokens"])
        self.usage = usage_from_json({**self._input, "output_tokens": self._output_tokens})

    def close(self) -> list[str]:
        if self._pending is not None:
            raise self._pending
        out: list[str] = []
        for name, data in self._sse.close():
            self._event(name, data, out)
        self.parts.extend(out)
        if not self._done and self.finish_reason is None:
            raise StreamTruncatedError(
                "the stream ended before Anthropic sent message_stop; "
                f"{len(self.text)} characters arrived",
                provider=self._provider,
            )
        return out
