"""OpenAI and every OpenAI-compatible server (vLLM, SGLang, llama.cpp, llama-cpp-python, Ollama,
LM Studio, TGI): Chat Completions and Completions. Pure codec, no I/O.

guided_json dialects (what is put in the request body for a schema):

    json_schema         response_format {type: json_schema, json_schema: {name, schema, strict}}
                        OpenAI, vLLM >= 0.6, SGLang, llama.cpp llama-server, Ollama, LM Studio
    json_object         response_format {type: json_object, schema}   llama-cpp-python's server
    guided_json         top-level guided_json                         vLLM < 0.12
    structured_outputs  top-level structured_outputs {json}           vLLM >= 0.12 native

``dialect="auto"`` asks ``GET /models`` once per client (``owned_by`` names the server) and
falls back along json_schema -> json_object -> guided_json when a server answers 4xx naming
the field it did not accept.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._sse import SSEDecoder
from ..errors import ConfigurationError, GenAIError, InvalidInputError, ResponseError, StreamError, StreamTruncatedError
from ..types import Call, Completion, RawResponse, Request, TokenLogprob, Usage
from ._base import Codec, StreamParser, decode_json, dumps, error_details, json_headers, status_error

DIALECTS = ("json_schema", "json_object", "guided_json", "structured_outputs")
_DIALECT_ALIASES = {
    "auto": "auto",
    "openai": "json_schema",
    "vllm": "json_schema",
    "sglang": "json_schema",
    "llama.cpp": "json_schema",
    "llama-server": "json_schema",
    "ollama": "json_schema",
    "lmstudio": "json_schema",
    "llama-cpp-python": "json_object",
    "vllm-legacy": "guided_json",
    **{d: d for d in DIALECTS},
}
# GET /models "owned_by" -> dialect. llama-cpp-python answers "me".
_OWNED_BY_DIALECT = {"me": "json_object", "llamacpp": "json_schema", "vllm": "json_schema", "sglang": "json_schema"}
_FALLBACK = {"json_schema": "json_object", "json_object": "guided_json"}
_SCHEMA_FIELD_WORDS = ("response_format", "json_schema", "json_object", "guided_json", "structured_outputs")
# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5, gpt-5.1, ...) take max_completion_tokens and
# reject max_tokens, and (except the gpt-5 "chat" models) reject temperature / top_p other than
# the default; known from the model name, so no failed round trip is needed.
_REASONING_MODEL_RE = re.compile(r"^(?:o\d+(?:$|[-_.])|gpt-5)")
_SAMPLING_PARAMS = frozenset({"temperature", "top_p"})
# Words of a 4xx that says a named body field was not accepted (OpenAI, Azure, vLLM/pydantic).
_REJECT_WORDS = ("unsupported", "not supported", "does not support", "not allowed", "input should be",
                 "unrecognized", "extra inputs", "invalid value", "unknown parameter")
# Parameters the adapt-on-400 may stop sending, once per client.
_DROPPABLE = ("temperature", "top_p", "reasoning_effort")


def reasoning_model_facts(model_name: str) -> tuple[str, frozenset[str]]:
    """(the max-tokens field, the parameters not to send) for a model name, before any call."""
    name = model_name.rsplit("/", 1)[-1].lower()
    if not _REASONING_MODEL_RE.match(name):
        return "max_tokens", frozenset()
    return "max_completion_tokens", (frozenset() if "chat" in name else _SAMPLING_PARAMS)


def normalize_base_url(endpoint: str, default_path: str = "/v1") -> str:
    """Accept ``http://host:8000``, ``http://host:8000/v1`` and ``http://host:8000/v1/`` alike.

    A URL with no path gets ``/v1``; any other path (``/openai/v1``, ``/v1beta/openai``) is kept.
    """
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"endpoint={endpoint!r} is not an http(s) URL",
            suggestion="Pass a base URL such as 'http://localhost:8000/v1' or 'https://api.openai.com/v1'.",
            field="endpoint",
        )
    base = endpoint.rstrip("/")
    if parts.path in ("", "/"):
        base += default_path
    return base


def base_body(call: Call, model: str, messages: Any) -> dict[str, Any]:
    """The fields every OpenAI-style request body shares (also built by the local provider)."""
    body: dict[str, Any] = {"model": model}
    if call.kind == "chat":
        body["messages"] = messages
    else:
        body["prompt"] = call.prompt
    body["max_tokens"] = call.max_tokens
    body["temperature"] = call.temperature
    body["top_p"] = call.top_p
    if call.n != 1:
        body["n"] = call.n
    if call.stream:
        body["stream"] = True
    return body


class OpenAICodec(Codec):
    provider = "openai"
    env_api_key = "OPENAI_API_KEY"
    env_endpoint = "OPENAI_BASE_URL"

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        model_name: str | None = None,
        *,
        dialect: str = "auto",
        strict_schema: bool = True,
        headers: Mapping[str, str] | None = None,
        stream_usage: bool = True,
    ) -> None:
        api_key = api_key if api_key is not None else os.environ.get(self.env_api_key)
        endpoint = endpoint or os.environ.get(self.env_endpoint)
        if not endpoint:
            raise ConfigurationError(
                f"no endpoint for provider {self.provider!r}",
                suggestion=f"Pass endpoint='http://host:port/v1' to create_client() or set {self.env_endpoint}.",
                field="endpoint",
            )
        if not model_name:
            raise ConfigurationError(
                f"no model_name for provider {self.provider!r}",
                suggestion="Pass model_name= to create_client() (the model id the server serves, see GET /v1/models).",
                field="model_name",
            )
        if dialect not in _DIALECT_ALIASES:
            raise ConfigurationError(
                f"dialect={dialect!r} is not known",
                suggestion=f"Use one of: {', '.join(sorted(_DIALECT_ALIASES))}.",
                field="dialect",
            )
        self.base_url = normalize_base_url(endpoint)
        self.model_name = model_name
        self._api_key = api_key or None
        self.dialect = _DIALECT_ALIASES[dialect]  # "auto" until learned
        self.strict_schema = strict_schema
        self.stream_usage = stream_usage
        self._headers = json_headers({"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}, headers)
        self._urls = {"chat": f"{self.base_url}/chat/completions", "completion": f"{self.base_url}/completions"}
        # Learned facts (from the model name, then from 4xx answers; see fallback()):
        # the chat body's max-tokens field, and the parameters this model rejects.
        self.max_tokens_field, self.rejected_params = reasoning_model_facts(model_name)
        # Servers other than OpenAI's own take chat_template_kwargs (Qwen3 / DeepSeek thinking switch).
        host = (urlsplit(self.base_url).hostname or "").lower()
        self.template_thinking_switch = not (host == "api.openai.com" or host.endswith(".openai.azure.com"))

    # -- requests -------------------------------------------------------------------------

    def build_body(self, call: Call) -> dict[str, Any]:
        messages = call.messages
        if messages is not None:
            for message in messages:
                if "reasoning_details" in message:  # another provider's items from to_message()
                    messages = strip_reasoning_details(messages)
                    break
        body = base_body(call, self.model_name, messages)
        if self.max_tokens_field != "max_tokens" and call.kind == "chat":
            body[self.max_tokens_field] = body.pop("max_tokens")
        if self.rejected_params:
            for name in self.rejected_params:
                body.pop(name, None)
        if call.reasoning_effort is not None:
            self._add_reasoning_effort(body, call.reasoning_effort)
        if call.logprobs:
            if call.kind == "chat":
                body["logprobs"] = True
                if call.top_logprobs is not None:
                    body["top_logprobs"] = call.top_logprobs
            else:  # the legacy completions API: logprobs is the number of alternatives
                body["logprobs"] = call.top_logprobs or 0
        if call.stream and self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if call.schema is not None:
            self._add_schema(body, call)
        if call.extra:
            body.update(call.extra)
        return body

    def build_request(self, call: Call) -> Request:
        return Request("POST", self._urls[call.kind], self._headers, dumps(self.build_body(call)), call.stream)

    def _add_reasoning_effort(self, body: dict[str, Any], effort: str | int) -> None:
        if isinstance(effort, int):
            raise InvalidInputError(
                f"reasoning_effort={effort}: provider {self.provider!r} takes a level name, not a token budget",
                suggestion='Pass reasoning_effort="low", "medium" or "high" (or "none" / "minimal" where the '
                           "model takes it).",
                field="reasoning_effort",
            )
        if "reasoning_effort" not in self.rejected_params:
            body["reasoning_effort"] = effort
        if effort == "none" and self.template_thinking_switch:
            # Qwen3 / DeepSeek-style chat templates on vLLM, SGLang and llama.cpp switch thinking off here.
            body["chat_template_kwargs"] = {"enable_thinking": False}

    def adapt_reasoning_params(self, call: Call, error: GenAIError) -> bool:
        """A 4xx naming max_tokens (use max_completion_tokens) or a parameter the model rejects
        (temperature, top_p, reasoning_effort): change the learned fact once and send again."""
        if error.status_code not in (400, 422):
            return False
        message = (error.message or "").lower()
        if ("max_completion_tokens" in message and "max_tokens" in message and call.kind == "chat"
                and self.max_tokens_field == "max_tokens"):
            self.max_tokens_field = "max_completion_tokens"
            return True
        if not any(word in message for word in _REJECT_WORDS):
            return False
        for name in _DROPPABLE:
            if name in message and name not in self.rejected_params and \
                    (name != "reasoning_effort" or call.reasoning_effort is not None):
                self.rejected_params = self.rejected_params | {name}
                return True
        return False

    def _add_schema(self, body: dict[str, Any], call: Call) -> None:
        schema = call.schema
        dialect = "json_schema" if self.dialect == "auto" else self.dialect
        if dialect == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.name, "schema": schema.json_schema, "strict": self.strict_schema},
            }
        elif dialect == "json_object":
            if call.kind == "completion":
                # llama-cpp-python's /completions ignores response_format; it takes a GBNF grammar.
                grammar = _gbnf(json.dumps(schema.json_schema))
                if grammar is not None:
                    body["grammar"] = grammar
                    return
            body["response_format"] = {"type": "json_object", "schema": schema.json_schema}
        elif dialect == "guided_json":
            body["guided_json"] = schema.json_schema
        else:
            body["structured_outputs"] = {"json": schema.json_schema}

    # -- dialect detection ----------------------------------------------------------------

    def probe_request(self, call: Call) -> Request | None:
        if call.schema is None or self.dialect != "auto":
            return None
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        return Request("GET", f"{self.base_url}/models", headers)

    def learn(self, call: Call, response: RawResponse | None) -> None:
        if self.dialect != "auto":
            return
        dialect = "json_schema"
        if response is not None and response.status == 200:
            try:
                models = json.loads(response.body).get("data") or []
                owners = {str(m.get("owned_by", "")).lower() for m in models if isinstance(m, dict)}
            except (ValueError, AttributeError):
                owners = set()
            for owner in owners:
                if owner in _OWNED_BY_DIALECT:
                    dialect = _OWNED_BY_DIALECT[owner]
                    break
        self.dialect = dialect

    def fallback(self, call: Call, error: GenAIError) -> bool:
        # llama-cpp-python answers a field it does not accept with a 500 naming the field.
        if error.status_code not in (400, 422, 500):
            return False
        message = (error.message or "").lower()
        if call.stream and self.stream_usage and "stream_options" in message:
            self.stream_usage = False
            return True
        if self.adapt_reasoning_params(call, error):
            return True
        if call.schema is None or not any(word in message for word in _SCHEMA_FIELD_WORDS):
            return False
        current = "json_schema" if self.dialect == "auto" else self.dialect
        nxt = _FALLBACK.get(current)
        if nxt is None:
            return False
        self.dialect = nxt
        return True

    # -- responses ------------------------------------------------------------------------

    def parse_response(self, call: Call, response: RawResponse) -> Completion:
        data = decode_json(response, self.provider)
        return completion_from_json(data, call.kind, response, self.provider)

    def parse_error(self, response: RawResponse) -> GenAIError:
        return status_error(response, self.provider, *error_details(response.body))

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:
        return OpenAIStreamParser(call.kind, self.provider, headers)


def strip_reasoning_details(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages without ``reasoning_details`` (Chat Completions servers reject unknown
    message fields, and have no use for other providers' signatures)."""
    return [{k: v for k, v in m.items() if k != "reasoning_details"} if "reasoning_details" in m else m
            for m in messages]


@functools.lru_cache(maxsize=64)
def _gbnf(json_schema: str) -> str | None:
    """A GBNF grammar for the schema (JSON text), when llama-cpp-python is importable here; else
    None (the answer is then only validated client-side). Cached: converting is not cheap."""
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError:
        return None
    return str(json_schema_to_gbnf(json_schema))


def completion_from_json(data: Any, kind: str, response: RawResponse, provider: str) -> Completion:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        message, _, _ = error_details(response.body)
        raise ResponseError(
            f"the response has no 'choices' list: {message[:300]}",
            status_code=response.status, url=response.url, method=response.method, provider=provider,
        )
    choices = sorted(choices, key=lambda c: c.get("index", 0)) if len(choices) > 1 else choices
    texts: list[str] = []
    reasons: list[str | None] = []
    tool_calls: list[Any] = []
    reasonings: list[str | None] | None = None
    logprobs: list[Any] | None = None
    for i, choice in enumerate(choices):
        if kind == "chat":
            answer = choice.get("message") or {}
            texts.append(answer.get("content") or "")
            tool_calls.append(answer.get("tool_calls"))
            # vLLM (since early 2026), Ollama /v1, LM Studio, OpenRouter: "reasoning";
            # SGLang, llama.cpp, DeepSeek, older vLLM: "reasoning_content".
            thinking = answer.get("reasoning_content") or answer.get("reasoning")
            if thinking and isinstance(thinking, str):
                if reasonings is None:
                    reasonings = [None] * len(choices)
                reasonings[i] = thinking
        else:
            texts.append(choice.get("text") or "")
            tool_calls.append(None)
        reasons.append(choice.get("finish_reason"))
        if choice.get("logprobs"):
            if logprobs is None:
                logprobs = [None] * len(choices)
            logprobs[i] = logprobs_from_json(choice["logprobs"])
    # raw stays bytes until read (see types._lazy_json).
    return Completion(texts, reasons, usage_from_json(data.get("usage")), data.get("model"), response.body or data,
                      data.get("id"), tool_calls, reasonings, None, logprobs)


def logprobs_from_json(value: Any) -> list[TokenLogprob] | None:
    """Chat ``logprobs.content`` [{token, logprob, bytes, top_logprobs: [{token, logprob}]}], or
    the legacy completions shape {tokens, token_logprobs, top_logprobs: [{token: logprob}]}."""
    if not isinstance(value, dict):
        return None
    content = value.get("content")
    if isinstance(content, list):
        return [TokenLogprob(str(item.get("token", "")), float(item.get("logprob") or 0.0),
                             [(str(t.get("token", "")), float(t.get("logprob") or 0.0))
                              for t in item.get("top_logprobs") or () if isinstance(t, dict)],
                             item.get("bytes"))
                for item in content if isinstance(item, dict)]
    tokens = value.get("tokens")
    if isinstance(tokens, list):
        lps = value.get("token_logprobs") or []
        tops = value.get("top_logprobs") or []
        out = []
        for j, token in enumerate(tokens):
            top = tops[j] if j < len(tops) and isinstance(tops[j], dict) else {}
            out.append(TokenLogprob(str(token), float(lps[j] if j < len(lps) and lps[j] is not None else 0.0),
                                    sorted(((str(k), float(v)) for k, v in top.items()), key=lambda t: -t[1])))
        return out
    return None


def usage_from_json(usage: Any) -> Usage | None:
    """OpenAI's usage: ``prompt_tokens`` already counts cached tokens and ``completion_tokens``
    reasoning ones. The details come from ``prompt_tokens_details.cached_tokens`` (OpenAI, Azure,
    vLLM with --enable-prompt-tokens-details, SGLang with --enable-cache-report, llama.cpp's server),
    DeepSeek's ``prompt_cache_hit_tokens``, and ``completion_tokens_details.reasoning_tokens``
    (OpenAI, Azure; a top-level ``reasoning_tokens`` is read too)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    total = prompt + completion if prompt or completion else usage.get("total_tokens") or 0
    result = Usage(prompt, completion, total)
    details = usage.get("prompt_tokens_details")
    if details:
        result.cached_tokens = details.get("cached_tokens") or 0
    elif "prompt_cache_hit_tokens" in usage:
        result.cached_tokens = usage["prompt_cache_hit_tokens"] or 0
    details = usage.get("completion_tokens_details")
    if details:
        result.reasoning_tokens = details.get("reasoning_tokens") or 0
    elif "reasoning_tokens" in usage:
        result.reasoning_tokens = usage["reasoning_tokens"] or 0
    return result


class OpenAIStreamParser(StreamParser):
    """Chat or text completion chunks over SSE. A plain JSON answer to a stream request (some
    servers ignore ``stream``) is accepted too and yielded as one delta."""

    def __init__(self, kind: str, provider: str, headers: Mapping[str, str]) -> None:
        super().__init__()
        self._chat = kind == "chat"
        self._kind = kind
        self._provider = provider
        self._sse = SSEDecoder()
        self._done = False
        self._extra: dict[int, list[str]] = {}
        content_type = (headers.get("content-type") or "").lower()
        self._json_body: list[bytes] | None = [] if content_type.startswith("application/json") else None

    @property
    def texts(self) -> list[str]:
        """Every choice's text (index order), for n > 1 streams."""
        return [self.text] + ["".join(self._extra[i]) for i in sorted(self._extra)]

    def feed(self, chunk: bytes) -> list[str]:
        if self._json_body is not None:
            self._json_body.append(chunk)
            return []
        out: list[str] = []
        for _, data in self._sse.feed(chunk):
            self._event(data, out)
        if out:
            self.parts.extend(out)
        return out

    def _event(self, data: bytes, out: list[str]) -> None:
        if data == b"[DONE]":
            self._done = True
            return
        try:
            obj = json.loads(data)
        except ValueError:
            raise StreamError(f"malformed stream event: {data[:200]!r}", provider=self._provider) from None
        if not isinstance(obj, dict):
            raise StreamError(f"malformed stream event: {data[:200]!r}", provider=self._provider)
        if "error" in obj or obj.get("object") == "error":
            message, error_type, code = error_details(data)
            raise StreamError(f"the server reported an error mid-stream: {message}", provider=self._provider,
                              error_type=error_type if error_type else (str(code) if code else None))
        if self.id is None:
            self.id = obj.get("id")
            self.model = obj.get("model")
        for choice in obj.get("choices") or ():
            index = choice.get("index", 0)
            if self._chat:
                delta = choice.get("delta")
                if delta:
                    text = delta.get("content")
                    thinking = delta.get("reasoning_content") or delta.get("reasoning")
                    if thinking and index == 0 and isinstance(thinking, str):
                        self.reasoning_parts.append(thinking)
                else:
                    text = None
            else:
                text = choice.get("text")
            if index == 0 and choice.get("logprobs"):
                more = logprobs_from_json(choice["logprobs"])
                if more:
                    if self.logprobs is None:
                        self.logprobs = more
                    else:
                        self.logprobs.extend(more)
            if text:
                if index == 0:
                    out.append(text)
                else:
                    self._extra.setdefault(index, []).append(text)
            reason = choice.get("finish_reason")
            if reason and index == 0:
                self.finish_reason = reason
        usage = obj.get("usage")
        if usage:
            self.usage = usage_from_json(usage)

    def close(self) -> list[str]:
        if self._json_body is not None:
            body = b"".join(self._json_body)
            raw = RawResponse(200, {}, body, "", "POST")
            completion = completion_from_json(decode_json(raw, self._provider), self._kind, raw, self._provider)
            self.finish_reason = completion.finish_reasons[0] if completion.finish_reasons else None
            self.usage, self.model, self.id = completion.usage, completion.model, completion.id
            if completion.reasonings and completion.reasonings[0]:
                self.reasoning_parts.append(completion.reasonings[0])
            if completion.logprobs and completion.logprobs[0]:
                self.logprobs = completion.logprobs[0]
            text = completion.texts[0] if completion.texts else ""
            self.parts.append(text)
            return [text] if text else []
        out: list[str] = []
        for _, data in self._sse.close():
            self._event(data, out)
        self.parts.extend(out)
        if not self._done and self.finish_reason is None:
            raise StreamTruncatedError(
                "the stream ended before the server sent its finish reason or [DONE]; "
                f"{len(self.text)} characters arrived",
                provider=self._provider,
            )
        return out
