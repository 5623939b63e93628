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

from .._keywords import GEMINI_GENERATION, GEMINI_KEYWORDS
from .._sse import SSEDecoder
from .._state import FRESH, ServerState
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
from ..tools import arguments_object, tool_names_by_id, tool_result_text
from ..types import (
    Call,
    Completion,
    EmbeddingCall,
    EmbeddingPart,
    RawResponse,
    Request,
    StreamEvent,
    TokenLogprob,
    ToolCall,
    Usage,
    new_call_id,
)
from ._base import (
    Codec,
    StreamParser,
    decode_json,
    dumps,
    error_details,
    float_vector,
    json_headers,
    split_system,
    status_error,
    token_count,
)

DEFAULT_ENDPOINT = "https://generativelanguage.googleapis.com/v1beta"

FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", "MALFORMED_FUNCTION_CALL": "tool_calls",
                  "UNEXPECTED_TOOL_CALL": "tool_calls", "TOO_MANY_TOOL_CALLS": "tool_calls"}
# Finish reasons that mean a filter stopped the answer.
BLOCK_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                           "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})
# Keywords that belong inside generationConfig when passed as extra keywords.
_GENERATION_FIELDS = GEMINI_GENERATION
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
# reasoning_effort -> thinkingLevel (Gemini 3 and later) or thinkingBudget (Gemini 2.5).
THINKING_LEVELS = {"none": "minimal", "minimal": "minimal", "low": "low", "medium": "medium", "high": "high",
                   "xhigh": "high", "max": "high"}
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768,
                    "max": 32768, "auto": -1, "dynamic": -1}
_GEMINI_VERSION_RE = re.compile(r"gemini-(\d+)")


def thinking_config(effort: str | int, model_name: str) -> dict[str, Any]:
    """generationConfig.thinkingConfig for a reasoning_effort. Thoughts are asked for
    (includeThoughts) unless thinking is switched off, so ``result.reasoning`` gets them."""
    config: dict[str, Any]
    if isinstance(effort, int):
        config = {"thinkingBudget": effort}
    else:
        match = _GEMINI_VERSION_RE.search(model_name.lower())
        if match is not None and int(match.group(1)) >= 3:
            config = {"thinkingLevel": THINKING_LEVELS.get(effort, effort)}
        elif effort in THINKING_BUDGETS:
            config = {"thinkingBudget": THINKING_BUDGETS[effort]}
        else:
            config = {"thinkingLevel": effort}  # a provider-specific value, passed through
    if config.get("thinkingBudget") != 0:
        config["includeThoughts"] = True
    return config


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


# run_embeddings(**extra) keys -> EmbedContentRequest JSON names.
_EMBED_FIELDS = {"task_type": "taskType", "output_dimensionality": "outputDimensionality"}


class GeminiCodec(Codec):
    provider = "gemini"
    extra_keywords = GEMINI_KEYWORDS
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
        self._resource = resource
        self._embed_urls = {False: f"{self.base_url}/{resource}:embedContent",
                            True: f"{self.base_url}/{resource}:batchEmbedContents"}
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
        if call.reasoning_effort is not None:
            config["thinkingConfig"] = thinking_config(call.reasoning_effort, self.model_name)
        if call.logprobs:
            config["responseLogprobs"] = True
            if call.top_logprobs is not None:
                config["logprobs"] = call.top_logprobs
        if call.tools is not None or call.tool_choice is not None:
            body.update(tool_fields(call))
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

    def build_request(self, call: Call, state: Any = None) -> Request:
        headers = self._headers
        if call.stream:
            headers = {**headers, "Accept": "text/event-stream"}
        return Request("POST", self._urls[call.stream], headers, dumps(self.build_body(call)), call.stream)

    # -- embeddings: embedContent (one text) / batchEmbedContents (several) ----------------

    embedding_batch_size = 100
    embedding_max_batch = 100  # batchEmbedContents takes at most 100 requests

    def build_embedding_body(self, call: EmbeddingCall) -> dict[str, Any]:
        requests = []
        for text in call.inputs:
            request: dict[str, Any] = {"model": self._resource, "content": {"parts": [{"text": text}]}}
            if call.dimensions is not None:
                request["outputDimensionality"] = call.dimensions
            for key, value in call.extra.items():  # taskType, title (snake_case accepted too)
                request[_EMBED_FIELDS.get(key, key)] = value
            requests.append(request)
        if len(requests) == 1:
            return requests[0]
        return {"requests": requests}

    def build_embedding_request(self, call: EmbeddingCall, state: ServerState = FRESH) -> Request:
        return Request("POST", self._embed_urls[len(call.inputs) > 1], self._headers,
                       dumps(self.build_embedding_body(call)))

    def parse_embedding_response(self, call: EmbeddingCall, response: RawResponse) -> EmbeddingPart:
        data = decode_json(response, self.provider)
        if len(call.inputs) == 1:
            one = data.get("embedding") if isinstance(data, dict) else None
            items = [one] if one is not None else None
        else:
            items = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(call.inputs):
            got = f"{len(items)} embeddings" if isinstance(items, list) else "no embeddings"
            raise ResponseError(f"the embeddings response has {got} for {len(call.inputs)} inputs",
                                status_code=response.status, url=response.url, method=response.method,
                                provider=self.provider)
        vectors = [float_vector(item.get("values") if isinstance(item, dict) else None, call.as_numpy,
                                self.provider) for item in items]
        return EmbeddingPart(vectors, None, self.model_name)

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
        tool_calls: list[list[ToolCall] | None] | None = None
        thoughts: list[str | None] = []
        details: list[list[dict[str, Any]] | None] = []
        logprobs: list[Any] = []
        for candidate in candidates:
            raw_reason = candidate.get("finishReason")
            if raw_reason in BLOCK_REASONS:
                blocked.append(str(raw_reason))
                continue
            texts.append(candidate_text(candidate))
            reason = map_finish_reason(raw_reason)
            calls = candidate_tool_calls(candidate)
            if calls:
                if tool_calls is None:
                    tool_calls = [None] * len(candidates)
                tool_calls[len(texts) - 1] = calls
                reason = "tool_calls"  # Gemini says STOP for an answer that is function calls
            reasons.append(reason)
            thought, detail = candidate_reasoning(candidate)
            thoughts.append(thought)
            details.append(detail)
            logprobs.append(candidate_logprobs(candidate) if "logprobsResult" in candidate else None)
        if blocked and not texts:
            raise blocked_error(blocked[0], self.provider, candidates[0].get("finishMessage"))
        return Completion(texts, reasons, usage_from_json(data.get("usageMetadata")),
                          data.get("modelVersion"), data, data.get("responseId"), tool_calls,
                          thoughts if any(thoughts) else None, details if any(details) else None,
                          logprobs if any(lp is not None for lp in logprobs) else None)

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
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return "".join(p["text"] for p in parts
                   if isinstance(p, dict) and type(p.get("text")) is str and not p.get("thought"))


def candidate_reasoning(candidate: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
    """The thought text (parts with ``thought: true``, sent with includeThoughts) and the
    ``thoughtSignature`` of each part that has one, for to_message() to send back on that part."""
    thoughts: list[str] = []
    details: list[dict[str, Any]] | None = None
    for part in (candidate.get("content") or {}).get("parts") or ():
        if not isinstance(part, dict):
            continue
        if part.get("thought") and part.get("text"):
            thoughts.append(str(part["text"]))
        signature = part.get("thoughtSignature")
        if signature:
            call = part.get("functionCall")
            item: dict[str, Any] = {"type": "gemini.thought_signature", "signature": signature,
                                    "part": "function_call" if call else ("thought" if part.get("thought") else "text")}
            if isinstance(call, dict):
                item["name"] = call.get("name")
            details = (details or []) + [item]
    return ("".join(thoughts) if thoughts else None), details


def candidate_logprobs(candidate: dict[str, Any]) -> list[TokenLogprob] | None:
    """Candidate.logprobsResult: chosenCandidates[i] and topCandidates[i].candidates per step."""
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates")
    tops = result.get("topCandidates")
    tops = tops if isinstance(tops, list) else []
    out = []
    for i, item in enumerate(chosen if isinstance(chosen, list) else ()):
        if not isinstance(item, dict):
            continue
        top = tops[i].get("candidates") if i < len(tops) and isinstance(tops[i], dict) else None
        out.append(TokenLogprob(str(item.get("token", "")), _logprob(item.get("logProbability")),
                                [(str(t.get("token", "")), _logprob(t.get("logProbability")))
                                 for t in (top if isinstance(top, list) else ()) if isinstance(t, dict)]))
    return out


def _logprob(value: Any) -> float:
    return float(value) if type(value) in (int, float) else 0.0


def usage_from_json(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    """promptTokenCount already includes cachedContentTokenCount; tool-use prompt tokens
    (toolUsePromptTokenCount, input the model read from its tools) count as prompt; thinking
    tokens (thoughtsTokenCount, billed as output) as completion. So total = prompt + completion
    equals Gemini's totalTokenCount."""
    prompt = token_count(usage.get("promptTokenCount")) + token_count(usage.get("toolUsePromptTokenCount"))
    thoughts = token_count(usage.get("thoughtsTokenCount"))
    completion = token_count(usage.get("candidatesTokenCount")) + thoughts
    if not prompt and not completion and usage.get("totalTokenCount"):
        return Usage(0, 0, token_count(usage["totalTokenCount"]))
    return Usage(prompt, completion, None, token_count(usage.get("cachedContentTokenCount")), 0, thoughts)


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
    """OpenAI chat messages -> (system texts, Gemini contents). Tool calls become
    ``functionCall`` parts of the model turn; tool results ``functionResponse`` parts of one user
    turn (consecutive results together), named by looking up their ``tool_call_id``."""
    system, turns = split_system(messages, "gemini")
    contents: list[dict[str, Any]] = []
    names: dict[str, str] | None = None
    results: list[dict[str, Any]] | None = None
    for i, role, content, message in turns:
        if role == "tool":
            if names is None:
                names = tool_names_by_id(messages)
            call_id = message["tool_call_id"]
            name = message.get("name") or names.get(call_id)
            if not name:
                raise InvalidInputError(
                    f"messages[{i}]: no assistant message has a tool call with id {call_id!r}, so Gemini "
                    "cannot be told which function this result belongs to",
                    suggestion="Keep the assistant message with the tool call (result.to_message()) before its "
                               "tool result, or add \"name\": the function name to the tool message.",
                    field=f"messages[{i}].tool_call_id")
            part = {"functionResponse": {"id": call_id, "name": name,
                                         "response": _response_struct(content)}}
            if results is None:
                results = []
                contents.append({"role": "user", "parts": results})
            results.append(part)
            continue
        results = None
        if isinstance(content, str):
            parts: list[dict[str, Any]] = [{"text": content}] if content or role != "assistant" else []
        elif content is None:
            parts = []
        else:
            parts = [_part(part, i, j) for j, part in enumerate(content)]
        for call in (message.get("tool_calls") or ()) if role == "assistant" else ():
            function = call.get("function") or {}
            function_call: dict[str, Any] = {"name": function.get("name"),
                                             "args": arguments_object(function.get("arguments"))}
            if call.get("id") and not str(call["id"]).startswith("gemini_"):
                function_call["id"] = call["id"]
            parts.append({"functionCall": function_call})
        parts = parts or [{"text": ""}]
        details = message.get("reasoning_details") if role == "assistant" else None
        if details:
            attach_thought_signatures(parts, details)
        contents.append({"role": "model" if role == "assistant" else "user", "parts": parts})
    return system, contents


def _response_struct(content: Any) -> dict[str, Any]:
    """FunctionResponse.response is a Struct: a JSON object result is sent as is, anything else
    under "result" (Google's own SDKs do the same)."""
    text = tool_result_text(content)
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def tool_fields(call: Call) -> dict[str, Any]:
    """``tools`` (one Tool of functionDeclarations) and ``toolConfig``; parallel_tool_calls has no
    Gemini equivalent."""
    fields: dict[str, Any] = {}
    if call.tools:
        fields["tools"] = [{"functionDeclarations": [
            {"name": t.name, **({"description": t.description} if t.description else {}),
             "parametersJsonSchema": t.parameters} for t in call.tools]}]
    choice = call.tool_choice
    if choice is not None and call.tools:
        config: dict[str, Any]
        if choice == "auto":
            config = {"mode": "AUTO"}
        elif choice == "none":
            config = {"mode": "NONE"}
        elif choice == "required":
            config = {"mode": "ANY"}
        else:
            config = {"mode": "ANY", "allowedFunctionNames": [choice]}
        fields["toolConfig"] = {"functionCallingConfig": config}
    return fields


def candidate_tool_calls(candidate: dict[str, Any]) -> list[ToolCall] | None:
    calls: list[ToolCall] | None = None
    for p in (candidate.get("content") or {}).get("parts") or ():
        if isinstance(p, dict) and isinstance(p.get("functionCall"), dict):
            fc = p["functionCall"]
            if calls is None:
                calls = []
            calls.append(ToolCall(str(fc.get("id") or _call_id()), str(fc.get("name") or ""),
                                  json.dumps(fc.get("args") or {}, ensure_ascii=False), len(calls)))
    return calls


def _call_id() -> str:
    # Gemini API calls often carry no id; the tool result is matched by name then. The prefix
    # tells convert_messages not to send our made-up id back.
    return "gemini_" + new_call_id()


def attach_thought_signatures(parts: list[dict[str, Any]], details: Any) -> None:
    """Put each Gemini ``thoughtSignature`` of a to_message() back on the part it came with: a
    function call's on that call's part (by name), a text or thought one on the first text part
    (the answer's text is sent back as one part). Other providers' items are skipped."""
    for item in details if isinstance(details, list) else ():
        if not isinstance(item, dict) or item.get("type") != "gemini.thought_signature":
            continue
        target = None
        if item.get("part") == "function_call":
            target = next((p for p in parts if isinstance(p.get("functionCall"), dict)
                           and p["functionCall"].get("name") == item.get("name")
                           and "thoughtSignature" not in p), None)
        else:
            target = next((p for p in parts if "text" in p and "thoughtSignature" not in p), None)
        if target is None:
            if not parts or item.get("part") == "function_call":
                continue
            target = parts[0]
        target["thoughtSignature"] = item.get("signature")


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
            if index == 0:
                if "logprobsResult" in candidate:
                    more = candidate_logprobs(candidate) or []
                    if self.logprobs is None:
                        self.logprobs = more
                    else:
                        self.logprobs.extend(more)
                thought, detail = candidate_reasoning(candidate)
                if thought:
                    self.add_reasoning(thought)
                for item in detail or ():
                    self.add_detail(item)
            text = candidate_text(candidate)
            if text:
                if index == 0:
                    out.append(text)
                    if self.want_events:
                        self.events.append(StreamEvent("text", text=text))
                else:
                    self._extra.setdefault(index, []).append(text)
            if index == 0:
                for p in (candidate.get("content") or {}).get("parts") or ():
                    if isinstance(p, dict) and isinstance(p.get("functionCall"), dict):
                        # Gemini streams each function call whole, in one part.
                        fc = p["functionCall"]
                        buffer = self.tool_buffer()
                        wire = len(buffer)
                        buffer.start(wire, str(fc.get("id") or _call_id()), str(fc.get("name") or ""))
                        buffer.add(wire, json.dumps(fc.get("args") or {}, ensure_ascii=False))
            reason = candidate.get("finishReason")
            if reason in BLOCK_REASONS and index == 0:
                raise blocked_error(str(reason), self._provider, candidate.get("finishMessage"))
            if reason and index == 0:
                self.finish_reason = "tool_calls" if self._tools is not None else map_finish_reason(reason)

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
