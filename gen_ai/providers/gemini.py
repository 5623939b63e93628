"""Google's Gemini REST API (``generateContent`` / ``streamGenerateContent?alt=sse``). Pure codec.

What the OpenAI-shaped call becomes (REST JSON uses the lowerCamelCase of the proto fields):

    system / developer messages   ``systemInstruction`` {parts: [{text}]}
    user / assistant messages     ``contents`` [{role: user | model, parts: [...]}]
    image_url data: URL           part {inlineData: {mimeType, data}}
    image_url http(s) URL         InvalidInputError: Gemini reads images inline or from its
                                  Files API, never from an arbitrary URL
    text completion prompt        one user message
    max_tokens, temperature,      ``generationConfig`` {maxOutputTokens, temperature, topP,
    top_p, n                      candidateCount (only when n > 1)}
    guided_json                   generationConfig {responseMimeType: application/json,
                                  responseJsonSchema}
    stop                          generationConfig.stopSequences

The API key goes in the ``x-goog-api-key`` header, never in the URL (URLs end up in logs).
Safety blocks (``promptFeedback.blockReason``, or a SAFETY / RECITATION / BLOCKLIST /
PROHIBITED_CONTENT / SPII finish reason) raise ContentFilterError naming the reason.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from .._sse import SSEDecoder
from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ContentFilterError,
    GenAIError,
    InvalidInputError,
    RateLimitError,
    ResponseError,
    ServerError,
    StreamError,
    StreamTruncatedError,
)
from ..images import split_data_url
from ..types import Call, Completion, RawResponse, Request, Usage
from ._base import Codec, StreamParser, decode_json, dumps, error_details, json_headers, split_system, status_error

DEFAULT_ENDPOINT = "https://generativelanguage.googleapis.com/v1beta"

FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", "MALFORMED_FUNCTION_CALL": "tool_calls",
                  "UNEXPECTED_TOOL_CALL": "tool_calls", "TOO_MANY_TOOL_CALLS": "tool_calls"}
# Finish reasons that mean a filter stopped the answer.
BLOCK_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                           "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})
# Keywords that belong inside generationConfig when passed as extra keywords.
_GENERATION_FIELDS = frozenset({
    "stopSequences", "topK", "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs",
    "logprobs", "thinkingConfig", "responseModalities", "mediaResolution", "speechConfig",
    "enableEnhancedCivicAnswers", "imageConfig", "responseSchema",
})
# google.rpc status -> (class, retryable), for bodies whose HTTP status says less.
_STATUSES: dict[str, tuple[type[GenAIError], bool]] = {
    "RESOURCE_EXHAUSTED": (RateLimitError, True),
    "UNAVAILABLE": (ServerError, True),
    "INTERNAL": (ServerError, True),
    "DEADLINE_EXCEEDED": (ServerError, True),
    "UNAUTHENTICATED": (AuthenticationError, False),
    "PERMISSION_DENIED": (AuthenticationError, False),
}
_DURATION_RE = re.compile(r"^\s*([0-9.]+)s\s*$")


def _base_url(endpoint: str) -> str:
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"endpoint={endpoint!r} is not an http(s) URL",
            suggestion=f"Pass a base URL such as {DEFAULT_ENDPOINT!r} (or a gateway's URL).",
            field="endpoint",
        )
    base = endpoint.rstrip("/")
    if parts.path in ("", "/"):
        base += "/v1beta"
    return base


class GeminiCodec(Codec):
    provider = "gemini"
    env_api_keys = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    env_endpoint = "GOOGLE_GEMINI_BASE_URL"

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        model_name: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        safety_settings: list[dict[str, Any]] | None = None,
    ) -> None:
        if api_key is None:
            api_key = next((os.environ[k] for k in self.env_api_keys if os.environ.get(k)), None)
        custom_endpoint = endpoint or os.environ.get(self.env_endpoint)
        if not model_name:
            raise ConfigurationError(
                "no model_name for provider 'gemini'",
                suggestion="Pass model_name= to create_client(), e.g. 'gemini-2.5-flash'.",
                field="model_name",
            )
        if not api_key and not custom_endpoint:
            raise ConfigurationError(
                "no API key for provider 'gemini'",
                suggestion="Pass api_key= to create_client() or set GEMINI_API_KEY (or GOOGLE_API_KEY).",
                field="api_key",
            )
        self.base_url = _base_url(custom_endpoint or DEFAULT_ENDPOINT)
        self.model_name = model_name
        # 'gemini-2.5-flash', 'models/gemini-2.5-flash' and 'tunedModels/x' are all accepted.
        resource = model_name if "/" in model_name else f"models/{model_name}"
        resource = quote(resource, safe="/-_.")
        self._urls = {
            False: f"{self.base_url}/{resource}:generateContent",
            True: f"{self.base_url}/{resource}:streamGenerateContent?alt=sse",
        }
        self._api_key = api_key or None
        self.safety_settings = safety_settings
        self._headers = json_headers({"x-goog-api-key": self._api_key} if self._api_key else {}, headers)

    # -- requests -------------------------------------------------------------------------

    def build_body(self, call: Call) -> dict[str, Any]:
        if call.kind == "chat":
            system, contents = convert_messages(call.messages or [])
        else:
            system, contents = None, [{"role": "user", "parts": [{"text": call.prompt or ""}]}]
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
        config: dict[str, Any] = {
            "maxOutputTokens": call.max_tokens,
            "temperature": call.temperature,
            "topP": call.top_p,
        }
        if call.n != 1:
            config["candidateCount"] = call.n
        if call.schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = call.schema.json_schema
        if self.safety_settings:
            body["safetySettings"] = self.safety_settings
        for key, value in (call.extra or {}).items():
            if key == "stop":
                config["stopSequences"] = [value] if isinstance(value, str) else list(value)
            elif key == "generationConfig" and isinstance(value, dict):
                config.update(value)
            elif key in _GENERATION_FIELDS:
                config[key] = value
            else:
                body[key] = value
        body["generationConfig"] = config
        return body

    def models_request(self) -> Request | None:
        # models.list: GET /v1beta/models, pageSize at most 1000.
        return Request("GET", f"{self.base_url}/models?pageSize=1000",
                       {k: v for k, v in self._headers.items() if k != "Content-Type"})

    def build_request(self, call: Call) -> Request:
        headers = self._headers
        if call.stream:
            headers = {**headers, "Accept": "text/event-stream"}
        return Request("POST", self._urls[call.stream], headers, dumps(self.build_body(call)), call.stream)

    # -- responses ------------------------------------------------------------------------

    def parse_response(self, call: Call, response: RawResponse) -> Completion:
        data = decode_json(response, self.provider)
        if isinstance(data, list) and data and isinstance(data[0], dict):  # a stream answered as JSON
            data = data[-1]
        if not isinstance(data, dict) or ("candidates" not in data and "promptFeedback" not in data):
            message, _, _ = error_details(response.body)
            raise ResponseError(
                f"the response has no 'candidates' list: {message[:300]}",
                status_code=response.status, url=response.url, method=response.method, provider=self.provider,
            )
        check_prompt_blocked(data, self.provider)
        candidates = sorted((c for c in data.get("candidates") or () if isinstance(c, dict)),
                            key=lambda c: int(c.get("index") or 0))
        texts: list[str] = []
        reasons: list[str | None] = []
        blocked: list[str] = []
        for candidate in candidates:
            raw_reason = candidate.get("finishReason")
            if raw_reason in BLOCK_REASONS:
                blocked.append(str(raw_reason))
                continue
            texts.append(candidate_text(candidate))
            reasons.append(map_finish_reason(raw_reason))
        if blocked and not texts:
            raise blocked_error(blocked[0], self.provider, candidates[0].get("finishMessage"))
        return Completion(texts, reasons, usage_from_json(data.get("usageMetadata")),
                          data.get("modelVersion"), data, data.get("responseId"))

    def parse_error(self, response: RawResponse) -> GenAIError:
        message, status, code = error_details(response.body)
        details = _error_detail_list(response.body)
        cls: type[GenAIError] | None = None
        retryable: bool | None = None
        if status in _STATUSES:
            cls, retryable = _STATUSES[status]
        if any(d.get("reason") in ("API_KEY_INVALID", "API_KEY_EXPIRED") for d in details) or \
                "api key not valid" in message.lower():
            cls, retryable = AuthenticationError, False
        error = status_error(response, self.provider, message, status, code, cls=cls,
                             retryable=None if retryable is None else (retryable or response.status >= 500))
        if error.retry_after is None:
            error.retry_after = _retry_delay(details)
        return error

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:
        return GeminiStreamParser(self.provider)


def map_finish_reason(reason: Any) -> str | None:
    if reason is None or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    return FINISH_REASONS.get(str(reason), str(reason).lower())


def candidate_text(candidate: dict[str, Any]) -> str:
    parts = (candidate.get("content") or {}).get("parts") or ()
    return "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict) and not p.get("thought"))


def usage_from_json(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("promptTokenCount") or 0)
    # Thinking tokens are billed as output.
    completion = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
    total = usage.get("totalTokenCount")
    return Usage(prompt, completion, int(total) if total is not None else None)


def blocked_error(reason: str, provider: str, detail: Any = None, *, prompt: bool = False) -> ContentFilterError:
    what = "the prompt" if prompt else "the answer"
    message = f"Gemini blocked {what} (block reason: {reason})"
    if detail:
        message += f": {detail}"
    suggestion = ("Gemini's safety filter blocked this call; rephrase the prompt, or adjust safetySettings "
                  "(create_client(..., safety_settings=[...])) where your use case allows it.")
    if reason == "RECITATION":
        suggestion = "The answer recited protected material too closely; rephrase the prompt or ask for a summary."
    return ContentFilterError(message, suggestion=suggestion, provider=provider, error_type=reason, retryable=False)


def check_prompt_blocked(data: dict[str, Any], provider: str) -> None:
    feedback = data.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        raise blocked_error(str(feedback["blockReason"]), provider, feedback.get("blockReasonMessage"), prompt=True)


def _error_detail_list(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except ValueError:
        return []
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """google.rpc.RetryInfo's retryDelay ('37s'), which Gemini sends with 429s instead of Retry-After."""
    for detail in details:
        match = _DURATION_RE.match(str(detail.get("retryDelay") or ""))
        if match:
            return float(match.group(1))
    return None


def convert_messages(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """OpenAI chat messages -> (system texts, Gemini contents)."""
    system, turns = split_system(messages, "gemini")
    contents = [{"role": "model" if role == "assistant" else "user",
                 "parts": [{"text": content}] if isinstance(content, str)
                 else [_part(part, i, j) for j, part in enumerate(content)]}
                for i, role, content in turns]
    return system, contents


def _part(part: dict[str, Any], i: int, j: int) -> dict[str, Any]:
    kind = part.get("type")
    field = f"messages[{i}].content[{j}]"
    if kind == "text":
        return {"text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str) and url.startswith("data:"):
            mime_type, data = split_data_url(url)
            return {"inlineData": {"mimeType": mime_type, "data": data}}
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            raise InvalidInputError(
                f"{field}: Gemini cannot fetch images from URLs ({url[:60]!r})",
                suggestion=("Pass the image as a local file path or bytes (gen_ai sends it inline), or "
                            "download it first; Gemini only reads inline images or files uploaded to its Files API."),
                field=field,
            )
    raise InvalidInputError(
        f"{field}: content part type {kind!r} is not supported by the gemini provider",
        suggestion="Use text parts and image_url parts holding a data: URL.",
        field=field,
    )


class GeminiStreamParser(StreamParser):
    """``streamGenerateContent?alt=sse``: every event is a whole GenerateContentResponse holding
    the next piece of each candidate; usageMetadata is cumulative, the last one wins."""

    def __init__(self, provider: str) -> None:
        super().__init__()
        self._provider = provider
        self._sse = SSEDecoder()
        self._pending: GenAIError | None = None
        self._extra: dict[int, list[str]] = {}
        self._events = 0

    @property
    def texts(self) -> list[str]:
        """Every candidate's text (index order), for n > 1 streams."""
        return [self.text] + ["".join(self._extra[i]) for i in sorted(self._extra)]

    def feed(self, chunk: bytes) -> list[str]:
        out: list[str] = []
        if self._pending is not None:
            raise self._pending
        try:
            for _, data in self._sse.feed(chunk):
                self._event(data, out)
        except GenAIError as exc:
            # Hand out the text that came before the error first; raise on the next call.
            if not out:
                raise
            self._pending = exc
        if out:
            self.parts.extend(out)
        return out

    def _event(self, data: bytes, out: list[str]) -> None:
        try:
            obj = json.loads(data)
        except ValueError:
            raise StreamError(f"malformed stream event: {data[:200]!r}", provider=self._provider) from None
        if not isinstance(obj, dict):
            raise StreamError(f"malformed stream event: {data[:200]!r}", provider=self._provider)
        if "error" in obj:
            message, status, _ = error_details(data)
            raise StreamError(f"Gemini reported an error mid-stream: {message}", provider=self._provider,
                              error_type=status, retryable=status in ("UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"))
        self._events += 1
        check_prompt_blocked(obj, self._provider)
        if obj.get("responseId"):
            self.id = obj["responseId"]
        if obj.get("modelVersion"):
            self.model = obj["modelVersion"]
        if obj.get("usageMetadata"):
            self.usage = usage_from_json(obj["usageMetadata"])
        for candidate in obj.get("candidates") or ():
            index = int(candidate.get("index") or 0)
            text = candidate_text(candidate)
            if text:
                if index == 0:
                    out.append(text)
                else:
                    self._extra.setdefault(index, []).append(text)
            reason = candidate.get("finishReason")
            if reason in BLOCK_REASONS and index == 0:
                raise blocked_error(str(reason), self._provider, candidate.get("finishMessage"))
            if reason and index == 0:
                self.finish_reason = map_finish_reason(reason)

    def close(self) -> list[str]:
        if self._pending is not None:
            raise self._pending
        out: list[str] = []
        for _, data in self._sse.close():
            self._event(data, out)
        self.parts.extend(out)
        if self.finish_reason is None:
            raise StreamTruncatedError(
                f"the stream ended before Gemini sent a finishReason; {len(self.text)} characters arrived",
                provider=self._provider,
            )
        return out
