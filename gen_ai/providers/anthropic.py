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
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._sse import SSEDecoder
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
from ..types import Call, Completion, RawResponse, Request, Usage
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
        # None: send temperature/top_p until the API rejects them; True: always; False: never.
        self.sampling_params = sampling_params
        self._send_sampling = sampling_params is not False
        credentials = {"x-api-key": self._api_key} if self._api_key else {}
        self._headers = json_headers({"anthropic-version": anthropic_version, **credentials}, headers)

    # -- requests -------------------------------------------------------------------------

    def build_body(self, call: Call) -> dict[str, Any]:
        if call.kind == "chat":
            system, messages = convert_messages(call.messages or [])
        else:
            system, messages = None, [{"role": "user", "content": call.prompt or ""}]
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": call.max_tokens, "messages": messages}
        if system:
            body["system"] = system
        if self._send_sampling:
            body["temperature"] = call.temperature
            if call.top_p != 1.0:
                body["top_p"] = call.top_p
        if call.stream:
            body["stream"] = True
        if call.schema is not None:
            schema = call.schema.json_schema
            if self.strict_schema:
                schema = closed_objects(schema)
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        if call.extra:
            extra = dict(call.extra)
            stop = extra.pop("stop", None)
            if stop is not None:
                body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
            body.update(extra)
        return body

    def build_request(self, call: Call) -> Request:
        headers = self._headers
        if call.stream:
            headers = {**headers, "Accept": "text/event-stream"}
        return Request("POST", self._url, headers, dumps(self.build_body(call)), call.stream)

    def models_request(self) -> Request | None:
        # GET /v1/models pages with limit (at most 1000) and after_id; one page of 1000 is plenty.
        url = self.base_url + ("/models" if self.base_url.endswith("/v1") else "/v1/models") + "?limit=1000"
        return Request("GET", url, {k: v for k, v in self._headers.items() if k != "Content-Type"})

    def fallback(self, call: Call, error: GenAIError) -> bool:
        if self.sampling_params is not None or not self._send_sampling or error.status_code != 400:
            return False
        message = (error.message or "").lower()
        if not any(word in message for word in _SAMPLING_WORDS):
            return False
        self._send_sampling = False
        return True

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
        tool_calls: list[dict[str, Any]] = []
        for block in data["content"]:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                texts.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                tool_calls.append({
                    "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
                })
        stop = data.get("stop_reason")
        return Completion(["".join(texts)], [map_stop_reason(stop)], usage_from_json(data.get("usage")),
                          data.get("model"), data, data.get("id"), [tool_calls or None])

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
    prompt = sum(int(usage.get(k) or 0) for k in
                 ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    return Usage(prompt, int(usage.get("output_tokens") or 0))


def convert_messages(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI chat messages -> (system text, Anthropic messages)."""
    system, turns = split_system(messages, "anthropic")
    out = [{"role": role, "content": content if isinstance(content, str)
            else [_block(part, i, j) for j, part in enumerate(content)]}
           for i, role, content in turns]
    return ("\n\n".join(system) if system else None), out


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
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                out.append(delta["text"])
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
        # ping, content_block_start, content_block_stop and unknown future events carry no text.

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_start has the input counts; message_delta has cumulative output (and, on newer
        # API versions, input) counts: keep the latest value of each field.
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            if usage.get(key) is not None:
                self._input[key] = usage[key]
        if usage.get("output_tokens") is not None:
            self._output_tokens = int(usage["output_tokens"])
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
