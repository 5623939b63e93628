"""OpenAI and every OpenAI-compatible server (vLLM, SGLang, llama.cpp, llama-cpp-python, Ollama,
LM Studio, TGI): Chat Completions and Completions. Pure codec, no I/O, no learned state (that is
in ``gen_ai/_state.py``, passed in).

guided_json dialects (what is put in the request body for a schema):

    json_schema         response_format {type: json_schema, json_schema: {name, schema, strict}}
    json_object         response_format {type: json_object, schema}   llama-cpp-python's chat
    tgi                 response_format {type: json, value: schema}   Text Generation Inference
    guided_json         top-level guided_json                         vLLM < 0.12
    structured_outputs  top-level structured_outputs {json: schema}   vLLM >= 0.12
    json_schema_field   top-level json_schema                         llama.cpp's /completions
    grammar             top-level GBNF grammar                        llama-cpp-python's /completions

Which ones a server *enforces*, in the order tried, is ``SERVERS`` below (from each server's
source and from answers seen on real servers; see docs/chat-completions.md). ``dialect="auto"``
detects the server once per client (``GET /models``: ``owned_by`` and the ``Server`` header;
for vLLM also ``GET /version``) and a 4xx naming the field moves to the next dialect of *that
server's* list. A dialect the server is known to ignore is never sent; when none is left the
error says so.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._keywords import OPENAI_KEYWORDS
from .._sse import SSEDecoder
from .._state import FRESH, Changes, ServerState
from ..errors import (
    ConfigurationError,
    GenAIError,
    InvalidInputError,
    ResponseError,
    StreamError,
    StreamTruncatedError,
)
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
)
from ._base import (
    Codec,
    StreamParser,
    base64_vector,
    decode_json,
    describe_body,
    dumps,
    error_details,
    float_vector,
    json_headers,
    loads,
    status_error,
    token_count,
)

DIALECTS = ("json_schema", "json_object", "tgi", "guided_json", "structured_outputs", "json_schema_field",
            "grammar")

# Server -> (chat dialects, completion dialects) it enforces, in the order tried. "openai" is
# also every server not recognised (and gateways such as litellm's proxy, which pass the field on).
SERVERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "openai": (("json_schema", "json_object"), ("json_schema", "grammar")),
    "vllm": (("json_schema", "structured_outputs"), ("json_schema", "structured_outputs")),
    "vllm-legacy": (("guided_json",), ("guided_json",)),
    "llama.cpp": (("json_schema",), ("json_schema_field",)),
    "llama-cpp-python": (("json_object",), ("grammar",)),
    "sglang": (("json_schema",), ("json_schema",)),
    "tgi": (("tgi",), ()),
    "lmstudio": (("json_schema",), ()),
    "ollama": (("json_schema",), ()),
    "structured_outputs": (("structured_outputs",), ("structured_outputs",)),
    # litellm's proxy: rejects response_format on /completions (500) but passes other
    # top-level fields on; behind it a "hosted_vllm/" model is detected as "vllm".
    "litellm": (("json_schema", "json_object"), ("json_schema", "grammar")),
}
# create_client(dialect=...) -> server profile (None: detect). A dialect name picks the
# profile that starts with it.
_DIALECT_ALIASES: dict[str, str | None] = {
    "auto": None,
    **{name: name for name in SERVERS},
    "llama-server": "llama.cpp",
    "json_schema": "openai",
    "json_object": "llama-cpp-python",
    "guided_json": "vllm-legacy",
}
# GET /models "owned_by" -> server. llama-cpp-python answers "me"; Ollama the model's namespace
# ("library" for the official models); LM Studio "organization_owner"; litellm "openai".
_OWNED_BY = {"vllm": "vllm", "llamacpp": "llama.cpp", "me": "llama-cpp-python", "sglang": "sglang",
             "organization_owner": "lmstudio", "library": "ollama"}
_SCHEMA_FIELD_WORDS = ("response_format", "json_schema", "json_object", "guided_json", "structured_outputs",
                       "grammar")
_VERSION_RE = re.compile(r"(\d+)\.(\d+)")


def detect_server(response: RawResponse | None) -> str | None:
    """The server kind from its ``GET /models`` answer; "openai" when nothing tells; None when
    there was no answer to read (detection is then tried again by a later call)."""
    if response is None:
        return None
    if "llama.cpp" in (response.headers.get("server") or "").lower():
        return "llama.cpp"
    if response.status != 200:
        return "openai"
    try:
        models = json.loads(response.body).get("data") or []
    except (ValueError, AttributeError):
        return "openai"
    cards = [m for m in models if isinstance(m, dict)]
    for card in cards:
        server = _OWNED_BY.get(str(card.get("owned_by", "")).lower())
        if server is not None:
            return server
    # TGI names the model as its own owner (router/src/server.rs, openai_get_model_info).
    if cards and all(card.get("owned_by") and card.get("owned_by") == card.get("id") for card in cards):
        return "tgi"
    return "openai"


def litellm_backend(response: RawResponse | None, model: str) -> str | None:
    """litellm's ``GET /v1/model/info`` -> "vllm" when ``model`` is routed to a vLLM server
    (``hosted_vllm/`` prefix), "litellm" for any other route; None when this is not litellm."""
    if response is None or response.status != 200:
        return None
    try:
        entries: Any = json.loads(response.body).get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(entries, list) or not entries:
        return None
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("litellm_params"), dict):
            return None
        if entry.get("model_name") == model:
            routed = str(entry["litellm_params"].get("model") or "")
            return "vllm" if routed.startswith("hosted_vllm/") else "litellm"
    return "litellm"


def _owned_by_openai(response: RawResponse | None) -> bool:
    """Every model "owned_by": "openai": litellm's proxy answers so (and OpenAI itself)."""
    try:
        cards: Any = json.loads(response.body).get("data") if response is not None else None
    except (ValueError, AttributeError):
        return False
    return isinstance(cards, list) and bool(cards) and all(
        isinstance(c, dict) and c.get("owned_by") == "openai" for c in cards)


def vllm_profile(response: RawResponse | None) -> tuple[str, str | None]:
    """vLLM's ``GET /version`` answer -> ("vllm" or "vllm-legacy", version). guided_json was
    removed in vLLM 0.12; only a server that says it is older gets it."""
    version = None
    if response is not None and response.status == 200:
        try:
            version = str(json.loads(response.body).get("version") or "") or None
        except (ValueError, AttributeError):
            version = None
    match = _VERSION_RE.match(version or "")
    if match and (int(match.group(1)), int(match.group(2))) < (0, 12):
        return "vllm-legacy", version
    return "vllm", version

# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5, gpt-5.1, ...) take max_completion_tokens and
# reject max_tokens, and (except the gpt-5 "chat" models) reject temperature / top_p other than
# the default; known from the model name, so no failed round trip is needed.
_REASONING_MODEL_RE = re.compile(r"^(?:o\d+(?:$|[-_.])|gpt-5)")
_SAMPLING_PARAMS = frozenset({"temperature", "top_p"})
# Words of a 4xx that says a named body field was not accepted (OpenAI, Azure, vLLM/pydantic).
_REJECT_WORDS = ("unsupported", "not supported", "does not support", "not allowed", "input should be",
                 "unrecognized", "extra inputs", "invalid value", "unknown parameter")
# Parameters the adapt-on-400 may stop sending, once per client (ServerState.rejected_fields).
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
    if call.tools is not None or call.tool_choice is not None or call.parallel_tool_calls is not None:
        add_tools(body, call)
    return body


def add_tools(body: dict[str, Any], call: Call, choice_as_string: bool = False) -> None:
    """OpenAI's ``tools`` / ``tool_choice`` / ``parallel_tool_calls``. A named choice is the
    object form, or, for servers that take only strings (llama.cpp's server), "required" with
    the tool list cut down to the named tool: the same effect."""
    tools = call.tools
    choice = call.tool_choice
    if tools:
        body["tools"] = [tool.openai for tool in tools]
    if choice is not None:
        if choice in ("auto", "none", "required"):
            body["tool_choice"] = choice
        elif choice_as_string:
            body["tools"] = [tool.openai for tool in tools or () if tool.name == choice]
            body["tool_choice"] = "required"
        else:
            body["tool_choice"] = {"type": "function", "function": {"name": choice}}
    if call.parallel_tool_calls is not None and tools:
        body["parallel_tool_calls"] = call.parallel_tool_calls


class OpenAICodec(Codec):
    provider = "openai"
    openai_response_body = True
    extra_keywords = OPENAI_KEYWORDS
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
        embedding_encoding: str = "base64",
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
        self.dialect = dialect  # as configured; what is learned lives in the client's ServerState
        self._profile = _DIALECT_ALIASES[dialect]
        self.strict_schema = strict_schema
        self.stream_usage = stream_usage  # False: never ask; True: ask until the server rejects it
        self._headers = json_headers({"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}, headers)
        self._probe_headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        self._urls = {"chat": f"{self.base_url}/chat/completions", "completion": f"{self.base_url}/completions",
                      "embedding": f"{self.base_url}/embeddings"}
        if embedding_encoding not in ("base64", "float"):
            raise ConfigurationError(f"embedding_encoding={embedding_encoding!r} is not known",
                                     suggestion="Use 'base64' (default, faster) or 'float'.",
                                     field="embedding_encoding")
        # As configured; a server that rejects base64 is learned in the client's ServerState.
        self.embedding_encoding = embedding_encoding
        # Known from the model name (configuration, not learned): the chat body's max-tokens field
        # and the parameters this model rejects. What 4xx answers teach is in ServerState
        # (max_tokens_field, rejected_fields), see adapt_reasoning_params().
        self._name_max_tokens_field, self._name_rejected = reasoning_model_facts(model_name)
        # Servers other than OpenAI's own take chat_template_kwargs (Qwen3 / DeepSeek thinking switch).
        host = (urlsplit(self.base_url).hostname or "").lower()
        self.template_thinking_switch = not (host == "api.openai.com" or host.endswith(".openai.azure.com"))

    # -- requests -------------------------------------------------------------------------

    def build_body(self, call: Call, state: ServerState = FRESH) -> dict[str, Any]:
        messages = call.messages
        if messages is not None:
            for message in messages:
                if "reasoning_details" in message:  # another provider's items from to_message()
                    messages = strip_reasoning_details(messages)
                    break
        body = base_body(call, self.model_name, messages)
        if call.kind == "chat" and (self._name_max_tokens_field != "max_tokens" or state.max_tokens_field):
            body[state.max_tokens_field or self._name_max_tokens_field] = body.pop("max_tokens")
        rejected = state.rejected_fields
        if self._name_rejected or rejected:
            for name in self._name_rejected | rejected:
                body.pop(name, None)
        if call.reasoning_effort is not None:
            self._add_reasoning_effort(body, call.reasoning_effort, rejected)
        if call.logprobs:
            if call.kind == "chat":
                body["logprobs"] = True
                if call.top_logprobs is not None:
                    body["top_logprobs"] = call.top_logprobs
            else:  # the legacy completions API: logprobs is the number of alternatives
                body["logprobs"] = call.top_logprobs or 0
        if call.stream and self.stream_usage and state.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if call.schema is not None:
            self._add_schema(body, call, state)
        if state.tool_choice_string and call.tools is not None:
            add_tools(body, call, choice_as_string=True)
        if call.extra:
            body.update(call.extra)
        return body

    def build_request(self, call: Call, state: ServerState = FRESH) -> Request:
        request = Request("POST", self._urls[call.kind], self._headers, dumps(self.build_body(call, state)),
                          call.stream)
        if call.schema is not None:
            request.facts = self._dialect(call.kind, state)
        return request

    def _add_reasoning_effort(self, body: dict[str, Any], effort: str | int,
                              rejected: frozenset[str] = frozenset()) -> None:
        if isinstance(effort, int):
            raise InvalidInputError(
                f"reasoning_effort={effort}: provider {self.provider!r} takes a level name, not a token budget",
                suggestion='Pass reasoning_effort="low", "medium" or "high" (or "none" / "minimal" where the '
                           "model takes it).",
                field="reasoning_effort",
            )
        if "reasoning_effort" not in rejected:
            body["reasoning_effort"] = effort
        if effort == "none" and self.template_thinking_switch:
            # Qwen3 / DeepSeek-style chat templates on vLLM, SGLang and llama.cpp switch thinking off here.
            body["chat_template_kwargs"] = {"enable_thinking": False}

    def adapt_reasoning_params(self, call: Call, request: Request, error: GenAIError,
                               state: ServerState) -> Changes | None:
        """A 4xx naming max_tokens (use max_completion_tokens) or a parameter the model rejects
        (temperature, top_p, reasoning_effort) that the failed request sent: the change to the
        client's ServerState (learned once per client), or None."""
        if error.status_code not in (400, 422):
            return None
        message = (error.message or "").lower()
        body = request.body or b""
        if ("max_completion_tokens" in message and "max_tokens" in message and call.kind == "chat"
                and b'"max_tokens"' in body):
            return {"max_tokens_field": (None, "max_completion_tokens")}
        if not any(word in message for word in _REJECT_WORDS):
            return None
        for name in _DROPPABLE:
            if name in message and f'"{name}"'.encode() in body:
                rejected = state.rejected_fields
                return {"rejected_fields": (rejected, rejected | {name})}
        return None

    def profile(self, state: ServerState) -> str:
        """The server profile in use: forced by ``dialect=``, else detected, else "openai"."""
        return self._profile or state.server or "openai"

    def dialects(self, kind: str, state: ServerState) -> tuple[str, ...]:
        """The dialects this server enforces for ``kind``, in the order tried."""
        chain = SERVERS[self.profile(state)][kind != "chat"]
        if "grammar" in chain and not _have_gbnf():  # no converter here: grammar cannot be sent
            chain = tuple(d for d in chain if d != "grammar")
        return chain

    def _dialect(self, kind: str, state: ServerState) -> tuple[str | None, str]:
        """(the state's value, the dialect to send): the learned one if it is in this server's
        list, else the list's first. Raises when the server enforces none for this kind."""
        learned = state.chat_dialect if kind == "chat" else state.completion_dialect
        chain = self.dialects(kind, state)
        if learned in chain:
            return learned, learned
        if not chain:
            raise self._nothing_enforceable(kind, state)
        return learned, chain[0]

    def _nothing_enforceable(self, kind: str, state: ServerState) -> InvalidInputError:
        server = self.profile(state)
        if server == "llama-cpp-python" and kind != "chat":
            why = ("its /completions takes only a GBNF grammar, and converting the schema needs "
                   "llama-cpp-python installed next to gen_ai")
            fix = "pip install llama-cpp-python, or use run_chat_completions (response_format json_object)."
        else:
            why = f"its /{'chat/completions' if kind == 'chat' else 'completions'} enforces no JSON-schema field"
            fix = ("Use run_chat_completions with guided_json (its chat endpoint enforces response_format), "
                   "or the server's native API." if kind != "chat" else
                   "Use a server that enforces JSON schemas, or pass dialect= naming the one it takes.")
        return InvalidInputError(f"guided_json cannot be enforced by this server ({server}): {why}",
                                 suggestion=fix, field="guided_json")

    def _add_schema(self, body: dict[str, Any], call: Call, state: ServerState) -> None:
        schema = call.schema
        dialect = self._dialect(call.kind, state)[1]
        if dialect == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.name, "schema": schema.json_schema, "strict": self.strict_schema},
            }
        elif dialect == "json_object":
            body["response_format"] = {"type": "json_object", "schema": schema.json_schema}
        elif dialect == "tgi":
            body["response_format"] = {"type": "json", "value": schema.json_schema}
        elif dialect == "guided_json":
            body["guided_json"] = schema.json_schema
        elif dialect == "structured_outputs":
            body["structured_outputs"] = {"json": schema.json_schema}
        elif dialect == "json_schema_field":
            body["json_schema"] = schema.json_schema
        else:  # grammar: dialects() keeps it only when the converter is importable
            body["grammar"] = _gbnf(json.dumps(schema.json_schema))

    # -- dialect detection ----------------------------------------------------------------

    def probe_request(self, call: Call, state: ServerState) -> Request | None:
        if call.schema is None or self._profile is not None or state.server is not None:
            return None
        return Request("GET", f"{self.base_url}/models", self._probe_headers, facts="models")

    def models_request(self) -> Request | None:
        return Request("GET", f"{self.base_url}/models", self._probe_headers)

    def learn(self, call: Call, request: Request, response: RawResponse | None,
              found: dict[str, Any]) -> Request | None:
        """Read a probe's answer into ``found``; return a follow-up probe or None."""
        if request.facts == "models":
            server = detect_server(response)
            if server is not None:
                found["server"] = server
            if server == "vllm":
                parts = urlsplit(self.base_url)
                return Request("GET", f"{parts.scheme}://{parts.netloc}/version", self._probe_headers,
                               facts="version")
            host = urlsplit(self.base_url).hostname or ""
            if server == "openai" and _owned_by_openai(response) and not host.endswith(("openai.com", "azure.com")):
                # litellm's proxy looks like OpenAI here; its /model/info tells it and its backend.
                return Request("GET", f"{self.base_url}/model/info", self._probe_headers, facts="litellm")
            return None
        if request.facts == "litellm":
            backend = litellm_backend(response, self.model_name)
            if backend is not None:
                found["server"] = backend
            return None
        found["server"], found["version"] = vllm_profile(response)
        return None

    def fallback(self, call: Call, request: Request, error: GenAIError, state: ServerState) -> Changes | None:
        # llama-cpp-python answers a field it does not accept with a 500 naming the field.
        if error.status_code not in (400, 422, 500):
            return None
        message = (error.message or "").lower()
        if call.stream and "stream_options" in message and b'"stream_options"' in (request.body or b""):
            return {"stream_usage": (True, False)}
        changes = self.adapt_reasoning_params(call, request, error, state)
        if changes is not None:
            return changes
        if (call.tool_choice not in (None, "auto", "none", "required") and not state.tool_choice_string
                and "string" in message and ("tool_choice" in message or "type must be" in message)):
            # llama.cpp's server: "[json.exception.type_error.302] type must be string, but is object"
            return {"tool_choice_string": (False, True)}
        used = request.facts
        if call.schema is None or used is None or not any(word in message for word in _SCHEMA_FIELD_WORDS):
            return None
        learned, dialect = used
        chain = self.dialects(call.kind, state)
        if dialect not in chain:
            # Detection finished after this request was built (it waited past the probe's
            # timeout) and the server's list has no such dialect: send again from that list.
            return {}
        position = chain.index(dialect)
        if position + 1 >= len(chain):
            tried = ", ".join(chain[: position + 1])
            error.suggestion = (
                f"The server rejected guided_json as {dialect!r}, and no other structured-output field this "
                f"server ({self.profile(state)}) enforces is left to try (tried: {tried}). "
                "Pass dialect= naming the field it takes, or call without guided_json."
            )
            return None
        return {"chat_dialect" if call.kind == "chat" else "completion_dialect": (learned, chain[position + 1])}

    # -- embeddings -----------------------------------------------------------------------

    embedding_batch_size = 256
    embedding_max_batch = 2048  # CreateEmbeddingRequest.input maxItems

    def build_embedding_body(self, call: EmbeddingCall, state: ServerState = FRESH) -> dict[str, Any]:
        base64 = self.embedding_encoding == "base64" and state.embedding_base64
        return embedding_body(call, self.model_name, "base64" if base64 else "float")

    def build_embedding_request(self, call: EmbeddingCall, state: ServerState = FRESH) -> Request:
        return Request("POST", self._urls["embedding"], self._headers, dumps(self.build_embedding_body(call, state)))

    def parse_embedding_response(self, call: EmbeddingCall, response: RawResponse) -> EmbeddingPart:
        return embeddings_from_json(decode_json(response, self.provider), call, response, self.provider)

    def embedding_fallback(self, call: EmbeddingCall, request: Request, error: GenAIError,
                           state: ServerState) -> Changes | None:
        # A server without base64 vectors (it names the field): ask it for floats from now on.
        if (error.status_code in (400, 422, 500) and "encoding_format" in (error.message or "").lower()
                and b'"encoding_format":"base64"' in (request.body or b"")):
            return {"embedding_base64": (True, False)}
        return None

    # -- responses ------------------------------------------------------------------------

    def parse_response(self, call: Call, response: RawResponse) -> Completion:
        try:
            data = loads(response.body)
        except ValueError:  # not JSON: decode_json raises the error that says what came back
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


@functools.lru_cache(maxsize=1)
def _have_gbnf() -> bool:
    """Whether llama-cpp-python's JSON-schema -> GBNF converter can be imported (looked up, not
    imported: importing llama_cpp takes a while)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


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
    if not (len(choices) == 1 and type(choices[0]) is dict) and not all(isinstance(c, dict) for c in choices):
        raise ResponseError(
            f"the response's 'choices' must be a list of objects: {describe_body(response.body)[:300]}",
            status_code=response.status, url=response.url, method=response.method, provider=provider,
        )
    if len(choices) == 1 and kind == "chat":
        # The common answer (one choice, text only), decided by the same reads as the loop below.
        choice = choices[0]
        answer = choice.get("message")
        if type(answer) is dict:
            content = answer.get("content")
            reason = choice.get("finish_reason")
            if type(content) is str and (reason is None or type(reason) is str) and not choice.get("logprobs") \
                    and not answer.get("tool_calls") and not answer.get("reasoning_content") \
                    and not answer.get("reasoning"):
                return Completion([content], [reason], usage_from_json(data.get("usage")), data.get("model"),
                                  response.body or data, data.get("id"))
    elif len(choices) > 1:
        choices = sorted(choices, key=lambda c: c.get("index") if type(c.get("index")) is int else 0)
    texts: list[str] = []
    reasons: list[str | None] = []
    tool_calls: list[list[ToolCall] | None] | None = None
    reasonings: list[str | None] | None = None
    logprobs: list[Any] | None = None
    for i, choice in enumerate(choices):
        if kind == "chat":
            answer = choice.get("message")
            if not isinstance(answer, dict):
                answer = {}
            content = answer.get("content")
            texts.append(content if type(content) is str else "")
            # vLLM (since early 2026), Ollama /v1, LM Studio, OpenRouter: "reasoning";
            # SGLang, llama.cpp, DeepSeek, older vLLM: "reasoning_content".
            thinking = answer.get("reasoning_content") or answer.get("reasoning")
            if thinking and isinstance(thinking, str):
                if reasonings is None:
                    reasonings = [None] * len(choices)
                reasonings[i] = thinking
            calls = answer.get("tool_calls")
            if calls and isinstance(calls, list):  # rare path: the per-choice list only when a choice called tools
                if tool_calls is None:
                    tool_calls = [None] * len(choices)
                tool_calls[i] = [ToolCall.from_dict(c, j) for j, c in enumerate(calls) if isinstance(c, dict)]
        else:
            text = choice.get("text")
            texts.append(text if type(text) is str else "")
        reason = choice.get("finish_reason")
        if tool_calls is not None and tool_calls[i] and reason in (None, "stop", "function_call"):
            reason = "tool_calls"  # some servers (Ollama, LM Studio) say "stop" for an answer that is tool calls
        reasons.append(reason if reason is None or type(reason) is str else str(reason))
        if choice.get("logprobs"):
            if logprobs is None:
                logprobs = [None] * len(choices)
            logprobs[i] = logprobs_from_json(choice["logprobs"])
    # raw stays bytes until read (see types._lazy_json).
    return Completion(texts, reasons, usage_from_json(data.get("usage")), data.get("model"), response.body or data,
                      data.get("id"), tool_calls, reasonings, None, logprobs)


def logprob_value(value: Any) -> float:
    """A log probability from a response: a number, anything else (null, text) counts 0.0."""
    return float(value) if type(value) in (int, float) else 0.0


def logprobs_from_json(value: Any) -> list[TokenLogprob] | None:
    """Chat ``logprobs.content`` [{token, logprob, bytes, top_logprobs: [{token, logprob}]}], or
    the legacy completions shape {tokens, token_logprobs, top_logprobs: [{token: logprob}]}."""
    if not isinstance(value, dict):
        return None
    content = value.get("content")
    if isinstance(content, list):
        out: list[TokenLogprob] = []
        for item in content:
            if not isinstance(item, dict):
                continue
            tops = item.get("top_logprobs")
            raw_bytes = item.get("bytes")
            out.append(TokenLogprob(str(item.get("token", "")), logprob_value(item.get("logprob")),
                                    [(str(t.get("token", "")), logprob_value(t.get("logprob")))
                                     for t in (tops if isinstance(tops, list) else ()) if isinstance(t, dict)],
                                    raw_bytes if isinstance(raw_bytes, list) else None))
        return out
    tokens = value.get("tokens")
    if isinstance(tokens, list):
        lps = value.get("token_logprobs")
        lps = lps if isinstance(lps, list) else []
        tops = value.get("top_logprobs")
        tops = tops if isinstance(tops, list) else []
        legacy = []
        for j, token in enumerate(tokens):
            top = tops[j] if j < len(tops) and isinstance(tops[j], dict) else {}
            legacy.append(TokenLogprob(str(token), logprob_value(lps[j] if j < len(lps) else None),
                                       sorted(((str(k), logprob_value(v)) for k, v in top.items()),
                                              key=lambda t: -t[1])))
        return legacy
    return None


def embedding_body(call: EmbeddingCall, model: str, encoding: str) -> dict[str, Any]:
    """The CreateEmbeddingRequest body (also sent by Azure and the local provider)."""
    body: dict[str, Any] = {"model": model, "input": call.inputs}
    if encoding == "base64":
        body["encoding_format"] = "base64"
    if call.dimensions is not None:
        body["dimensions"] = call.dimensions
    if call.extra:
        body.update(call.extra)
    return body


def embeddings_from_json(data: Any, call: EmbeddingCall, response: RawResponse, provider: str) -> EmbeddingPart:
    """A CreateEmbeddingResponse: ``data[].embedding`` as floats or base64, put in input order."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != len(call.inputs):
        message, _, _ = error_details(response.body)
        got = f"{len(items)} embeddings" if isinstance(items, list) else "no 'data' list"
        raise ResponseError(f"the embeddings response has {got} for {len(call.inputs)} inputs: {message[:200]}",
                            status_code=response.status, url=response.url, method=response.method,
                            provider=provider)
    vectors: list[Any] = [None] * len(items)
    as_numpy = call.as_numpy
    for position, item in enumerate(items):
        index = item.get("index", position) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(items) or vectors[index] is not None:
            raise ResponseError(f"the embeddings response has a bad or repeated index {index!r}", provider=provider,
                                status_code=response.status, url=response.url, method=response.method)
        values = item.get("embedding")
        vectors[index] = (base64_vector(values, as_numpy, provider) if isinstance(values, str)
                          else float_vector(values, as_numpy, provider))
    usage = data.get("usage")
    tokens = (usage.get("prompt_tokens") or usage.get("total_tokens") or 0) if isinstance(usage, dict) else None
    return EmbeddingPart(vectors, None if tokens is None else Usage(tokens, 0, tokens), data.get("model"))


def usage_from_json(usage: Any) -> Usage | None:
    """OpenAI's usage: ``prompt_tokens`` already counts cached tokens and ``completion_tokens``
    reasoning ones. The details come from ``prompt_tokens_details.cached_tokens`` (OpenAI, Azure,
    vLLM with --enable-prompt-tokens-details, SGLang with --enable-cache-report, llama.cpp's server),
    DeepSeek's ``prompt_cache_hit_tokens``, and ``completion_tokens_details.reasoning_tokens``
    (OpenAI, Azure; a top-level ``reasoning_tokens`` is read too)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if type(prompt) is int and type(completion) is int and prompt >= 0 and completion >= 0:
        if (prompt or completion) and len(usage) == 3 and "total_tokens" in usage:
            return Usage(prompt, completion, prompt + completion)  # the plain three counts: no details
    else:
        prompt = token_count(prompt)
        completion = token_count(completion)
    total = prompt + completion if prompt or completion else token_count(usage.get("total_tokens"))
    result = Usage(prompt, completion, total)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        result.cached_tokens = token_count(details.get("cached_tokens"))
    elif "prompt_cache_hit_tokens" in usage:
        result.cached_tokens = token_count(usage["prompt_cache_hit_tokens"])
    details = usage.get("completion_tokens_details")
    if isinstance(details, dict):
        result.reasoning_tokens = token_count(details.get("reasoning_tokens"))
    elif "reasoning_tokens" in usage:
        result.reasoning_tokens = token_count(usage["reasoning_tokens"])
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
        self._pending: GenAIError | None = None
        self._extra: dict[int, list[str]] = {}
        content_type = (headers.get("content-type") or "").lower()
        self._json_body: list[bytes] | None = [] if content_type.startswith("application/json") else None

    @property
    def texts(self) -> list[str]:
        """Every choice's text (index order), for n > 1 streams."""
        return [self.text] + ["".join(self._extra[i]) for i in sorted(self._extra)]

    def feed(self, chunk: bytes) -> list[str]:
        if self._pending is not None:
            raise self._pending
        if self._json_body is not None:
            self._json_body.append(chunk)
            return []
        out: list[str] = []
        try:
            for _, data in self._sse.feed(chunk):
                self._event(data, out)
        except GenAIError as exc:
            # Hand out the text that came before the error in this chunk first; raise on the next call.
            if not out:
                raise
            self._pending = exc
        if out:
            self.parts.extend(out)
        return out

    def _event(self, data: bytes, out: list[str]) -> None:
        if data == b"[DONE]":
            self._done = True
            return
        try:
            obj = loads(data)
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
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                raise StreamError(f"malformed stream event (a choice is not an object): {data[:200]!r}",
                                  provider=self._provider)
            index = choice.get("index", 0)
            rare = False
            if self._chat:
                delta = choice.get("delta")
                if type(delta) is dict:
                    text = delta.get("content")
                    # A content-only delta is the common case; thinking and tool-call fragments
                    # come in deltas with more keys.
                    rare = len(delta) > 1 or text is None
                    if rare and index == 0:
                        thinking = delta.get("reasoning_content") or delta.get("reasoning")
                        if type(thinking) is str and thinking:
                            self.add_reasoning(thinking)
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
            if type(text) is str and text:
                if index == 0:
                    out.append(text)
                    if self.want_events:
                        self.events.append(StreamEvent("text", text=text))
                else:
                    self._extra.setdefault(index, []).append(text)
            if rare and index == 0:
                calls = delta.get("tool_calls")  # type: ignore[union-attr]  # rare implies a dict
                if calls:
                    self._tool_fragments(calls)
            reason = choice.get("finish_reason")
            if reason and index == 0:
                self.finish_reason = reason
        usage = obj.get("usage")
        if usage:
            self.usage = usage_from_json(usage)

    def _tool_fragments(self, calls: Any) -> None:
        """Fragments of ``delta.tool_calls``, merged by index (see ToolCallBuffer)."""
        buffer = self.tool_buffer()
        for position, fragment in enumerate(calls):
            if not isinstance(fragment, dict):
                continue
            wire = fragment.get("index", position)
            function = fragment.get("function") or {}
            call_id = fragment.get("id")
            name = function.get("name")
            if call_id or name:
                buffer.start(wire, call_id, name)
            arguments = function.get("arguments")
            if arguments is not None:
                if not isinstance(arguments, str):  # a server that sends the arguments as an object
                    arguments = json.dumps(arguments, ensure_ascii=False)
                buffer.add(wire, arguments)

    def close(self) -> list[str]:
        if self._pending is not None:
            raise self._pending
        if self._json_body is not None:
            body = b"".join(self._json_body)
            raw = RawResponse(200, {}, body, "", "POST")
            completion = completion_from_json(decode_json(raw, self._provider), self._kind, raw, self._provider)
            self.finish_reason = completion.finish_reasons[0] if completion.finish_reasons else None
            self.usage, self.model, self.id = completion.usage, completion.model, completion.id
            if completion.reasonings and completion.reasonings[0]:
                self.add_reasoning(completion.reasonings[0])
            if completion.logprobs and completion.logprobs[0]:
                self.logprobs = completion.logprobs[0]
            text = completion.texts[0] if completion.texts else ""
            self.parts.append(text)
            if text and self.want_events:
                self.events.append(StreamEvent("text", text=text))
            for call in completion.tool_calls_of(0) or ():
                buffer = self.tool_buffer()
                buffer.start(call.index, call.id, call.name)
                buffer.add(call.index, call.arguments)
            return [text] if text else []
        out: list[str] = []
        for _, data in self._sse.close():
            self._event(data, out)
        self.parts.extend(out)
        if self._tools is not None and self.finish_reason in ("stop", "function_call"):
            self.finish_reason = "tool_calls"
        if not self._done and self.finish_reason is None:
            raise StreamTruncatedError(
                "the stream ended before the server sent its finish reason or [DONE]; "
                f"{len(self.text)} characters arrived",
                provider=self._provider,
            )
        return out
