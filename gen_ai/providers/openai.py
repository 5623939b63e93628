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
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._sse import SSEDecoder
from ..errors import ConfigurationError, GenAIError, ResponseError, StreamError, StreamTruncatedError
from ..types import Call, Completion, RawResponse, Request, Usage
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

    # -- requests -------------------------------------------------------------------------

    def build_body(self, call: Call) -> dict[str, Any]:
        body = base_body(call, self.model_name, call.messages)
        if call.stream and self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if call.schema is not None:
            self._add_schema(body, call)
        if call.extra:
            body.update(call.extra)
        return body

    def build_request(self, call: Call) -> Request:
        return Request("POST", self._urls[call.kind], self._headers, dumps(self.build_body(call)), call.stream)

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
        return self.models_request()

    def models_request(self) -> Request | None:
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
    for choice in choices:
        if kind == "chat":
            answer = choice.get("message") or {}
            texts.append(answer.get("content") or "")
            tool_calls.append(answer.get("tool_calls"))
        else:
            texts.append(choice.get("text") or "")
            tool_calls.append(None)
        reasons.append(choice.get("finish_reason"))
    # raw stays bytes until read (see types._lazy_json).
    return Completion(texts, reasons, usage_from_json(data.get("usage")), data.get("model"), response.body or data,
                      data.get("id"), tool_calls)


def usage_from_json(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    return Usage(prompt, completion, usage.get("total_tokens") or prompt + completion)


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
            if self._chat:
                delta = choice.get("delta")
                text = delta.get("content") if delta else None
            else:
                text = choice.get("text")
            index = choice.get("index", 0)
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
