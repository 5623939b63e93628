"""AWS Bedrock through the Converse and ConverseStream APIs (one body shape for every model family).

    POST {endpoint}/model/{modelId}/converse          JSON answer
    POST {endpoint}/model/{modelId}/converse-stream   application/vnd.amazon.eventstream

SigV4 signing (``botocore.auth.SigV4Auth``) and the binary event-stream decoder
(``botocore.eventstream.EventStreamBuffer``) come from botocore, imported when a Bedrock client is
built so ``import gen_ai`` never pays for it. Only botocore's signing and framing are used: the
requests go through gen_ai's own transports, so gen_ai's retries and timeouts stay in charge.
Every build of a request signs it again, so a retry carries a fresh ``X-Amz-Date``.

Credentials, first match wins:

    bearer_token=                 a Bedrock API key, sent as ``Authorization: Bearer``
    api_key= + secret_key= (+ session_token=)   an access key pair (the original argument names)
    AWS_BEARER_TOKEN_BEDROCK      environment variable with a Bedrock API key
    the AWS credential chain      environment, shared config / profile (``profile=``), SSO, role

guided_json, ``structured_output=``:

    "auto" (default)  ``outputConfig.textFormat`` json_schema first; when the model answers with a
                      ValidationException about it, switch (once per client) to a forced tool call
    "output_config"   always ``outputConfig.textFormat`` (native structured output)
    "tool"            always a forced tool call: one tool whose input schema is the schema and
                      ``toolChoice: {tool: {name}}``; the answer text is the tool input as JSON

Text completions have no Bedrock API: the prompt becomes one user message.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from .._keywords import BEDROCK_KEYWORDS
from .._state import FRESH, Changes, ServerState
from ..errors import (
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
from ..tools import arguments_object, tool_result_text
from ..types import Call, Completion, EmbeddingCall, EmbeddingPart, RawResponse, Request, StreamEvent, ToolCall, Usage
from ._base import (
    Codec,
    StreamParser,
    decode_json,
    describe_body,
    dumps,
    float_vector,
    split_system,
    status_error,
    token_count,
)

logger = logging.getLogger("gen_ai")

STRUCTURED_OUTPUT_MODES = ("auto", "output_config", "tool")
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
# Bedrock error code -> (class, retryable).
_ERROR_CLASSES: dict[str, tuple[type[GenAIError], bool]] = {
    "ThrottlingException": (RateLimitError, True),
    "ServiceUnavailableException": (ServerError, True),
    "ModelNotReadyException": (ServerError, True),
    "InternalServerException": (ServerError, True),
    "ModelTimeoutException": (ServerError, True),
    "ModelStreamErrorException": (ServerError, True),
    "ValidationException": (BadRequestError, False),
    "ServiceQuotaExceededException": (RateLimitError, False),
    "AccessDeniedException": (AuthenticationError, False),
    "UnrecognizedClientException": (AuthenticationError, False),
    "InvalidSignatureException": (AuthenticationError, False),
    "ExpiredTokenException": (AuthenticationError, False),
    "ResourceNotFoundException": (NotFoundError, False),
}
# Stream exception events (lowerCamelCase event names) that are worth a retry.
_RETRYABLE_EVENTS = frozenset({"throttlingException", "serviceUnavailableException", "internalServerException",
                               "modelStreamErrorException", "modelNotReadyException"})
_SCHEMA_WORDS = ("outputconfig", "textformat", "structured output", "output_config", "json_schema",
                 "response format")
_TOOL_NAME_RE = re.compile(r"[^a-zA-Z0-9_-]+")


def _require_botocore() -> Any:
    try:
        import botocore  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigurationError(
            "provider 'bedrock' needs botocore (AWS's signing and event-stream library)",
            suggestion="Install it with: pip install 'gen_ai[bedrock]'",
            field="provider",
        ) from None
    return botocore


class BedrockCodec(Codec):
    provider = "bedrock"
    extra_keywords = BEDROCK_KEYWORDS

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        model_name: str | None = None,
        *,
        region: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        bearer_token: str | None = None,
        profile: str | None = None,
        structured_output: str = "auto",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        _require_botocore()
        if not model_name:
            raise ConfigurationError(
                "no model_name for provider 'bedrock'",
                suggestion="Pass model_name= with a Bedrock model id (e.g. 'anthropic.claude-3-haiku-20240307-v1:0') "
                           "or an inference profile id / ARN (e.g. 'us.amazon.nova-lite-v1:0').",
                field="model_name",
            )
        if structured_output not in STRUCTURED_OUTPUT_MODES:
            raise ConfigurationError(
                f"structured_output={structured_output!r} is not known",
                suggestion=f"Use one of: {', '.join(STRUCTURED_OUTPUT_MODES)}.",
                field="structured_output",
            )
        self.model_name = model_name
        self.structured_output = structured_output
        # "auto" starts with outputConfig and may learn "tool" (kept in the client's
        # ServerState.chat_dialect); the user's choice is kept above.
        self.schema_mode = "tool" if structured_output == "tool" else "output_config"
        self._credentials: Any = None
        self._bearer: str | None = None
        self._static_secrets: tuple[str, ...] = ()
        session: Any = None

        if bearer_token:
            self._bearer = bearer_token
        elif api_key or secret_key:
            if not (api_key and secret_key):
                raise ConfigurationError(
                    "provider 'bedrock' needs both api_key (the access key id) and secret_key",
                    suggestion="Pass api_key='AKIA...' and secret_key='...' (and session_token= for "
                               "temporary credentials), or omit all three to use the AWS credential chain.",
                    field="secret_key" if api_key else "api_key",
                )
            from botocore.credentials import Credentials  # type: ignore[import-untyped]

            self._credentials = Credentials(api_key, secret_key, session_token or None)
        elif os.environ.get("AWS_BEARER_TOKEN_BEDROCK"):
            self._bearer = os.environ["AWS_BEARER_TOKEN_BEDROCK"]
        else:
            import botocore.session  # type: ignore[import-untyped]

            session = botocore.session.Session(profile=profile) if profile else botocore.session.get_session()
            try:
                self._credentials = session.get_credentials()
            except Exception as exc:  # noqa: BLE001 - botocore raises many types for a broken profile or config
                raise ConfigurationError(
                    f"the AWS credential chain failed: {type(exc).__name__}: {exc}",
                    suggestion="Fix the AWS profile / config, or pass api_key= and secret_key=, or bearer_token=.",
                    field="api_key",
                ) from None
            if self._credentials is None:
                raise ConfigurationError(
                    "no AWS credentials found for provider 'bedrock'",
                    suggestion="Pass api_key= and secret_key= (and session_token=), or bearer_token= with a "
                               "Bedrock API key, or configure the AWS credential chain (AWS_ACCESS_KEY_ID / "
                               "AWS_SECRET_ACCESS_KEY, a profile in ~/.aws, SSO or an instance role).",
                    field="api_key",
                )

        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region and session is not None:
            region = session.get_config_variable("region")
        if not region and endpoint:
            region = _region_from_host(endpoint)
        if not region:
            raise ConfigurationError(
                "no region for provider 'bedrock'",
                suggestion="Pass region='us-east-1' to create_client() or set AWS_REGION.",
                field="region",
            )
        self.region = region
        if endpoint:
            parts = urlsplit(endpoint.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigurationError(
                    f"endpoint={endpoint!r} is not an http(s) URL",
                    suggestion="Pass a base URL such as 'https://bedrock-runtime.us-east-1.amazonaws.com'.",
                    field="endpoint",
                )
            self.base_url = endpoint.strip().rstrip("/")
        else:
            self.base_url = f"https://bedrock-runtime.{region}.amazonaws.com"
        # ':' stays raw: aiohttp (yarl) would decode "%3A" before sending, and the signed path must
        # be the path on the wire. '/' in ARNs must be escaped, and "%2F" survives both transports.
        model_path = f"{self.base_url}/model/{quote(model_name, safe=':')}"
        self._urls = {False: f"{model_path}/converse", True: f"{model_path}/converse-stream"}
        # Embeddings go through InvokeModel, whose body is the model family's own format:
        # Cohere Embed takes up to 96 texts per request, Titan Embeddings one.
        self._invoke_url = f"{model_path}/invoke"
        self.embedding_family = "cohere" if "cohere" in model_name.lower() else "titan"
        self.embedding_batch_size = self.embedding_max_batch = 96 if self.embedding_family == "cohere" else 1
        self._headers = {"Content-Type": "application/json"}
        if headers:
            self._headers.update(headers)
        if self._bearer:
            self._headers["Authorization"] = f"Bearer {self._bearer}"
            self._static_secrets = (self._bearer,)
        else:
            frozen = self._credentials.get_frozen_credentials()
            self._static_secrets = tuple(v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v)

        # Refreshing credentials (roles, SSO, instance metadata) may ask AWS over the network when
        # they near expiry: the call flow refreshes them first, off the event loop for async calls.
        # refresh_credentials() hands the frozen credentials to the next signing through _fetched.
        self.blocking_credentials = self._credentials is not None and hasattr(self._credentials, "refresh_needed")
        self._fetched: deque[Any] = deque()
        self._refreshed: deque[tuple[str, ...]] = deque(maxlen=4)

    def refresh_credentials(self) -> None:
        if self._credentials is not None:
            frozen = self._credentials.get_frozen_credentials()
            self._fetched.append(frozen)
            values = tuple(v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v)
            if values != self._static_secrets and values not in self._refreshed:
                self._refreshed.append(values)  # refreshed keys are scrubbed too (the last few)

    @property
    def auth_mode(self) -> str:
        return "bearer" if self._bearer else "sigv4"

    def secrets(self) -> tuple[str, ...]:
        if self._refreshed:
            return self._static_secrets + tuple(v for values in self._refreshed for v in values)
        return self._static_secrets

    def __repr__(self) -> str:
        return (f"<BedrockCodec endpoint={self.base_url!r} model={self.model_name!r} "
                f"region={self.region!r} auth={self.auth_mode}>")

    # -- requests ---------------------------------------------------------------------------

    def build_body(self, call: Call, state: ServerState = FRESH) -> dict[str, Any]:
        """The Converse body (REST JSON: blobs are base64 strings; ``modelId`` is in the URL)."""
        if call.kind == "chat":
            system, messages = _convert_messages(call.messages or [])
        else:
            system, messages = [], [{"role": "user", "content": [{"text": call.prompt or ""}]}]
        body: dict[str, Any] = {"messages": messages}
        if system:
            body["system"] = system
        if not 0 <= call.temperature <= 1:
            raise InvalidInputError(
                f"temperature={call.temperature} is outside Bedrock's range 0..1",
                suggestion="Pass a temperature between 0 and 1 for provider 'bedrock'.",
                field="temperature",
            )
        inference: dict[str, Any] = {"maxTokens": call.max_tokens, "temperature": call.temperature}
        # Newer Anthropic models reject temperature and topP together; send topP only when asked.
        if call.top_p != 1.0:
            inference["topP"] = call.top_p
        body["inferenceConfig"] = inference
        if call.reasoning_effort is not None:
            self._add_reasoning(body, inference, call)
        if call.tools:
            body["toolConfig"] = _tool_config(call)
        if call.schema is not None:
            self._add_schema(body, call.schema, self._schema_mode(state))
        if call.extra:
            extra = dict(call.extra)
            stop = extra.pop("stop", None)
            if stop:
                inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
            if "additionalModelRequestFields" in body:  # already merged with the reasoning fields
                extra.pop("additionalModelRequestFields", None)
            body.update(extra)
        return body

    def _add_reasoning(self, body: dict[str, Any], inference: dict[str, Any], call: Call) -> None:
        """reasoning_effort in the model family's own additionalModelRequestFields."""
        effort = call.reasoning_effort
        assert effort is not None
        model = self.model_name.lower()
        fields: dict[str, Any]
        if "anthropic." in model or "claude" in model:
            from .anthropic import thinking_fields, thinking_mode

            thinking, level = thinking_fields(effort, call.max_tokens, thinking_mode(model))
            fields = {"thinking": thinking}
            if level is not None:
                fields["output_config"] = {"effort": level}
            if thinking["type"] != "disabled":
                inference.pop("temperature", None)  # Claude's thinking takes no temperature change
                if inference.get("topP", 1.0) < 0.95:
                    inference.pop("topP")
        elif "amazon.nova" in model and isinstance(effort, str):
            fields = {"reasoningConfig": {"type": "disabled"} if effort == "none" else
                      {"type": "enabled", "maxReasoningEffort": {"minimal": "low", "xhigh": "high",
                                                                "max": "high"}.get(effort, effort)}}
        elif ("openai." in model or "gpt-oss" in model) and isinstance(effort, str):
            fields = {"reasoning_effort": effort}
        else:
            raise InvalidInputError(
                f"reasoning_effort={effort!r}: gen_ai does not know how Bedrock model {self.model_name!r} "
                "takes a reasoning effort",
                suggestion="Pass the model's own field instead, e.g. additionalModelRequestFields={...}.",
                field="reasoning_effort",
            )
        user = call.extra.get("additionalModelRequestFields") if call.extra else None
        body["additionalModelRequestFields"] = {**fields, **user} if isinstance(user, dict) else fields

    def _schema_mode(self, state: ServerState) -> str:
        return state.chat_dialect or self.schema_mode if self.structured_output == "auto" else self.schema_mode

    def _add_schema(self, body: dict[str, Any], schema: Any, mode: str) -> None:
        if mode == "tool":
            name = _tool_name(schema.name)
            spec = {"toolSpec": {"name": name, "description": "Answer by calling this tool with the requested JSON.",
                                 "inputSchema": {"json": schema.json_schema}}}
            config = body.get("toolConfig") or {"tools": []}
            config["tools"] = [*config["tools"], spec]
            config["toolChoice"] = {"tool": {"name": name}}
            body["toolConfig"] = config
        else:
            # JsonSchemaDefinition.schema is a *string* in the service model, not an object.
            body["outputConfig"] = {"textFormat": {
                "type": "json_schema",
                "structure": {"jsonSchema": {"schema": json.dumps(schema.json_schema),
                                             "name": _tool_name(schema.name)}},
            }}

    def build_request(self, call: Call, state: ServerState = FRESH) -> Request:
        url = self._urls[call.stream]
        body = dumps(self.build_body(call, state))
        headers = dict(self._headers)
        headers["Accept"] = "application/vnd.amazon.eventstream" if call.stream else "application/json"
        if self._credentials is not None:
            headers = self._sign(url, headers, body)
        return Request("POST", url, headers, body, call.stream,
                       self._schema_mode(state) if call.schema is not None else None)

    # -- embeddings (InvokeModel) ------------------------------------------------------------

    def build_embedding_body(self, call: EmbeddingCall) -> dict[str, Any]:
        body: dict[str, Any]
        if self.embedding_family == "cohere":
            # input_type is required by Cohere Embed v3+; documents unless the caller says otherwise.
            body = {"texts": call.inputs, "input_type": "search_document"}
            if call.dimensions is not None:
                body["output_dimension"] = call.dimensions  # Embed v4
        else:
            body = {"inputText": call.inputs[0]}
            if call.dimensions is not None:
                body["dimensions"] = call.dimensions  # Titan Text Embeddings V2: 256, 512 or 1024
        if call.extra:
            body.update(call.extra)
        return body

    def build_embedding_request(self, call: EmbeddingCall, state: ServerState = FRESH) -> Request:
        url = self._invoke_url
        body = dumps(self.build_embedding_body(call))
        headers = dict(self._headers)
        headers["Accept"] = "application/json"
        if self._credentials is not None:
            headers = self._sign(url, headers, body)
        return Request("POST", url, headers, body)

    def parse_embedding_response(self, call: EmbeddingCall, response: RawResponse) -> EmbeddingPart:
        data = decode_json(response, self.provider)
        if not isinstance(data, dict):
            data = {}
        tokens: int | None = None
        if self.embedding_family == "cohere":
            items = data.get("embeddings")
            if isinstance(items, dict):  # embedding_types given: {"float": [[...]], ...}
                items = items.get("float")
            meta = data.get("meta")
            billed = meta.get("billed_units") if isinstance(meta, dict) else None
            if isinstance(billed, dict) and isinstance(billed.get("input_tokens"), int):
                tokens = billed["input_tokens"]
        else:
            one = data.get("embedding")
            items = [one] if one is not None else None
            if isinstance(data.get("inputTextTokenCount"), int):
                tokens = data["inputTextTokenCount"]
        if not isinstance(items, list) or len(items) != len(call.inputs):
            got = f"{len(items)} embeddings" if isinstance(items, list) else "no embeddings"
            raise ResponseError(f"the {self.model_name} response has {got} for {len(call.inputs)} inputs",
                                status_code=response.status, url=response.url, method=response.method,
                                provider=self.provider)
        vectors = [float_vector(item, call.as_numpy, self.provider) for item in items]
        return EmbeddingPart(vectors, None if tokens is None else Usage(tokens, 0, tokens), self.model_name)

    def models_request(self) -> Request | None:
        # ListFoundationModels lives on the control plane (bedrock.REGION, not bedrock-runtime).
        base = self.base_url
        if base == f"https://bedrock-runtime.{self.region}.amazonaws.com":
            base = f"https://bedrock.{self.region}.amazonaws.com"
        url = f"{base}/foundation-models"
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        headers["Accept"] = "application/json"
        if self._credentials is not None:
            headers = self._sign(url, headers, b"", "GET")
        return Request("GET", url, headers)

    def _sign(self, url: str, headers: dict[str, str], body: bytes, method: str = "POST") -> dict[str, str]:
        """SigV4 with botocore's canonical request and signature. Not ``SigV4Auth.add_auth``: it
        logs the canonical request (holding the session token) and the signature at DEBUG."""
        import datetime

        from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]

        # Frozen per request, as botocore's own clients do, so refreshing credentials
        # (roles, SSO) are renewed before they expire.
        try:
            credentials = self._fetched.popleft()
        except IndexError:  # build_request called outside the call flow
            credentials = self._credentials.get_frozen_credentials()
        signer = SigV4Auth(credentials, "bedrock", self.region)
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        timestamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        request.context["timestamp"] = timestamp
        request.headers["X-Amz-Date"] = timestamp
        if credentials.token:
            request.headers["X-Amz-Security-Token"] = credentials.token
        signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        signed = signer.signed_headers(signer.headers_to_sign(request))
        request.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, SignedHeaders={signed}, Signature={signature}"
        )
        return dict(request.headers.items())

    def fallback(self, call: Call, request: Request, error: GenAIError, state: ServerState) -> Changes | None:
        if (call.schema is None or self.structured_output != "auto" or request.facts != "output_config"
                or error.status_code != 400):
            return None
        message = (error.message or "").lower()
        if not any(word in message for word in _SCHEMA_WORDS):
            return None
        logger.info("gen_ai: Bedrock model %r does not take outputConfig.textFormat; using a forced tool call",
                    self.model_name)
        return {"chat_dialect": (None, "tool")}  # learned once: None -> "tool"

    # -- responses --------------------------------------------------------------------------

    def parse_response(self, call: Call, response: RawResponse) -> Completion:
        data = decode_json(response, self.provider)
        output = data.get("output") if isinstance(data, dict) else None
        message = output.get("message") if isinstance(output, dict) else None
        if not isinstance(message, dict):
            raise ResponseError(
                f"the Converse response has no output.message: {describe_body(response.body)}",
                status_code=response.status, url=response.url, method=response.method, provider=self.provider,
            )
        texts: list[str] = []
        tool_uses: list[Any] = []
        thinking: list[str] = []
        details: list[dict[str, Any]] = []
        for block in message.get("content") or ():
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif isinstance(block.get("toolUse"), dict):
                tool_uses.append(block["toolUse"])
            elif isinstance(block.get("reasoningContent"), dict):
                reasoning = block["reasoningContent"]
                item = reasoning.get("reasoningText")
                if isinstance(item, dict):
                    thinking.append(str(item.get("text") or ""))
                    details.append({"type": "bedrock.reasoning", "text": item.get("text") or "",
                                    "signature": item.get("signature")})
                elif reasoning.get("redactedContent"):
                    details.append({"type": "bedrock.redacted", "data": reasoning["redactedContent"]})
        stop = data.get("stopReason")
        tool_calls: list[ToolCall] | None
        tool = _answer_tool(call)
        answer = next((use for use in tool_uses if tool in ("", use.get("name"))), None) if tool is not None else None
        structured_tool = answer is not None
        if answer is not None:
            text = json.dumps(answer.get("input"), ensure_ascii=False)
            tool_calls = None
        else:
            text = "".join(texts)
            tool_calls = [ToolCall(str(u.get("toolUseId") or ""), str(u.get("name") or ""),
                                   json.dumps(u.get("input") if u.get("input") is not None else {},
                                              ensure_ascii=False), j)
                          for j, u in enumerate(tool_uses)] or None
        reason = _finish_reason(stop, structured_tool)
        if reason == "content_filter":
            logger.warning("gen_ai: Bedrock stopped the answer of %r: stopReason=%s", self.model_name, stop)
        headers = response.headers
        request_id = headers.get("x-amzn-requestid") if headers else None
        return Completion([text], [reason], _usage(data.get("usage")), self.model_name, data,
                          request_id, [tool_calls] if tool_calls else None, ["".join(thinking)] if thinking else None,
                          [details] if details else None)

    def parse_error(self, response: RawResponse) -> GenAIError:
        code, message = _error_code_and_message(response)
        cls_retry = _ERROR_CLASSES.get(code or "")
        if cls_retry is None:
            return status_error(response, self.provider, message, code)
        cls, retryable = cls_retry
        error = status_error(response, self.provider, message, code, cls=cls, retryable=retryable)
        if code == "ServiceQuotaExceededException":
            error.suggestion = "An AWS service quota for Bedrock is used up; request a quota increase or wait."
        elif code == "AccessDeniedException":
            error.suggestion = ("The credentials may not call this model: enable model access in the Bedrock "
                                "console and allow bedrock:InvokeModel / InvokeModelWithResponseStream.")
        return error

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:
        return BedrockStreamParser(self.provider, self.model_name, _answer_tool(call))


class BedrockStreamParser(StreamParser):
    """Decodes ConverseStream's binary event stream (botocore's EventStreamBuffer checks the CRCs)."""

    def __init__(self, provider: str, model: str, structured_tool: str | None = None) -> None:
        super().__init__()
        from botocore.eventstream import EventStreamBuffer  # type: ignore[import-untyped]

        self._buffer = EventStreamBuffer()
        self._provider = provider
        # The forced tool's name when the call has a schema: its input deltas are the answer
        # (decided from the stream itself, whichever mode the request was sent in).
        self._tool = structured_tool
        self._structured_tool = False
        self._stopped = False
        self._pending = 0
        self._deferred: StreamError | None = None
        self._blocks: dict[int, dict[str, Any]] = {}  # contentBlockIndex -> reasoning block
        self.model = model

    def feed(self, chunk: bytes) -> list[str]:
        from botocore.eventstream import ParserError

        self._raise_deferred()
        out: list[str] = []
        self._buffer.add_data(chunk)
        self._pending += len(chunk)
        try:
            for message in self._buffer:
                self._pending -= message.prelude.total_length
                self._event(message.headers, message.payload, out)
        except (ParserError, StreamError) as exc:
            error = exc if isinstance(exc, StreamError) else StreamError(
                f"malformed event-stream frame from Bedrock: {exc}", provider=self._provider)
            if not out:
                raise error from None
            # Deliver the text that preceded the error in this chunk first; raise on the next call.
            self._deferred = error
        if out:
            self.parts.extend(out)
        return out

    def _raise_deferred(self) -> None:
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error

    def _event(self, headers: Mapping[str, Any], payload: bytes, out: list[str]) -> None:
        kind = headers.get(":message-type")
        if kind == "exception":
            name = str(headers.get(":exception-type") or "exception")
            raise StreamError(
                f"Bedrock reported {name} mid-stream: {_payload_message(payload)}",
                provider=self._provider, error_type=name, retryable=name in _RETRYABLE_EVENTS,
                suggestion=("Bedrock failed part-way through the answer; retry the request."
                            if name in _RETRYABLE_EVENTS else None),
            )
        if kind == "error":
            code = str(headers.get(":error-code") or "error")
            raise StreamError(f"Bedrock reported {code} mid-stream: {headers.get(':error-message') or ''}",
                              provider=self._provider, error_type=code)
        event = headers.get(":event-type")
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            raise StreamError(f"malformed {event} event: {payload[:200]!r}", provider=self._provider) from None
        if event == "contentBlockStart" and self._tool is not None:
            start = (data.get("start") or {}).get("toolUse") or {}
            if self._tool in ("", start.get("name")):
                self._structured_tool = True
        if event == "contentBlockDelta":
            delta = data.get("delta") or {}
            reasoning = delta.get("reasoningContent")
            if isinstance(reasoning, dict):
                self._reasoning_delta(data.get("contentBlockIndex", -1), reasoning)
                return
            text = delta.get("text")
            if text is None and "toolUse" in delta:
                fragment = (delta.get("toolUse") or {}).get("input")
                if self._structured_tool:
                    text = fragment
                elif fragment is not None:
                    self.tool_buffer().add(data.get("contentBlockIndex"), str(fragment))
            if type(text) is str and text:
                out.append(text)
                if self.want_events:
                    self.events.append(StreamEvent("text", text=text))
        elif event == "contentBlockStart" and not self._structured_tool:
            start = (data.get("start") or {}).get("toolUse")
            if isinstance(start, dict):
                self.tool_buffer().start(data.get("contentBlockIndex"), start.get("toolUseId"), start.get("name"))
        elif event == "messageStop":
            self._stopped = True
            self.finish_reason = _finish_reason(data.get("stopReason"), self._structured_tool)
        elif event == "metadata":
            self.usage = _usage(data.get("usage"))

    def _reasoning_delta(self, index: int, delta: dict[str, Any]) -> None:
        """ReasoningContentBlockDelta: text pieces, then the block's signature (or redacted data)."""
        if delta.get("redactedContent"):
            self.add_detail({"type": "bedrock.redacted", "data": delta["redactedContent"]})
            return
        block = self._blocks.get(index)
        if block is None:
            block = self._blocks[index] = {"type": "bedrock.reasoning", "text": "", "signature": None}
            self.add_detail(block)
        text = delta.get("text")
        if type(text) is str and text:
            self.add_reasoning(text)
            block["text"] += text
        signature = delta.get("signature")
        if type(signature) is str and signature:
            block["signature"] = (block["signature"] or "") + signature

    def close(self) -> list[str]:
        self._raise_deferred()
        if not self._stopped or self._pending > 0:
            raise StreamTruncatedError(
                "the Bedrock event stream ended before its messageStop event; "
                f"{len(self.text)} characters arrived",
                provider=self._provider,
            )
        return []


# -- helpers ----------------------------------------------------------------------------------


def _convert_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI chat messages -> (system blocks, Converse messages). Consecutive messages of one
    role are merged, since Converse wants user and assistant turns to alternate; tool calls
    become ``toolUse`` blocks and tool results ``toolResult`` blocks of a user turn."""
    texts, turns = split_system(messages, "bedrock")
    system = [{"text": text} for text in texts if text]
    out: list[dict[str, Any]] = []
    for i, role, content, message in turns:
        if role == "tool":
            role = "user"
            result: dict[str, Any] = {"toolUseId": message["tool_call_id"],
                                      "content": _result_blocks(content, i)}
            if message.get("status") in ("success", "error"):
                result["status"] = message["status"]
            blocks = [{"toolResult": result}]
        else:
            blocks = _content_blocks(content, i)
            details = message.get("reasoning_details") if role == "assistant" else None
            if details:  # reasoning blocks first, text and signature unmodified
                blocks = _reasoning_blocks(details) + blocks
            for call in (message.get("tool_calls") or ()) if role == "assistant" else ():
                function = call.get("function") or {}
                blocks.append({"toolUse": {"toolUseId": call["id"], "name": function.get("name"),
                                           "input": arguments_object(function.get("arguments"))}})
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _reasoning_blocks(details: Any) -> list[dict[str, Any]]:
    """Converse reasoningContent blocks from a to_message() ``reasoning_details`` list (the text
    and signature unmodified, as Bedrock requires them back); other providers' items skipped."""
    blocks: list[dict[str, Any]] = []
    for item in details if isinstance(details, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "bedrock.reasoning":
            text: dict[str, Any] = {"text": item.get("text") or ""}
            if item.get("signature"):
                text["signature"] = item["signature"]
            blocks.append({"reasoningContent": {"reasoningText": text}})
        elif item.get("type") == "bedrock.redacted":
            blocks.append({"reasoningContent": {"redactedContent": item.get("data")}})
    return blocks


def _result_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    """ToolResultContentBlock list: JSON objects as ``json``, text as ``text``, images as is."""
    if isinstance(content, list):
        return _content_blocks(content, index) or [{"text": ""}]
    text = tool_result_text(content)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return [{"json": value}]
    return [{"text": text}]


def _tool_config(call: Call) -> dict[str, Any] | None:
    """``toolConfig``: tools as ``toolSpec``s and ``toolChoice`` (auto / any / tool). Converse has
    no "none" choice (the tools stay listed, as history with toolUse blocks requires) and no
    parallel_tool_calls."""
    if not call.tools:
        return None
    config: dict[str, Any] = {"tools": [
        {"toolSpec": {"name": t.name, **({"description": t.description} if t.description else {}),
                      "inputSchema": {"json": t.parameters}}} for t in call.tools]}
    choice = call.tool_choice
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice not in (None, "none"):
        config["toolChoice"] = {"tool": {"name": choice}}
    return config


def _content_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append(_image_block(str(url or ""), f"messages[{index}].content[{j}]"))
        else:
            raise InvalidInputError(
                f"messages[{index}].content[{j}] has type {kind!r}, which provider 'bedrock' does not take",
                suggestion="Use text and image_url parts.",
                field=f"messages[{index}].content[{j}]",
            )
    return blocks


def _image_block(url: str, where: str) -> dict[str, Any]:
    if url.startswith(("http://", "https://")):
        raise InvalidInputError(
            f"{where}: Bedrock does not fetch image URLs ({url[:80]!r})",
            suggestion="Download the image and pass its bytes or a local path, which gen_ai embeds as base64.",
            field=where,
        )
    from ..images import split_data_url

    mime, data = split_data_url(url)
    fmt = _IMAGE_FORMATS.get(mime.lower())
    if fmt is None:
        raise InvalidInputError(
            f"{where}: Bedrock takes png, jpeg, gif or webp images, not {mime!r}",
            suggestion="Convert the image to PNG or JPEG.",
            field=where,
        )
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _answer_tool(call: Call) -> str | None:
    """For a guided_json call, the tool whose input is the answer when the model calls one (the
    forced tool of "tool" mode): its name, or "" (any tool) when the call brings no tools of its
    own. None without a schema. Decided from the answer, whichever mode the request used."""
    if call.schema is None:
        return None
    return _tool_name(call.schema.name) if call.tools or (call.extra and "toolConfig" in call.extra) else ""


def _tool_name(name: str | None) -> str:
    cleaned = _TOOL_NAME_RE.sub("_", name or "").strip("_")[:64]
    return cleaned or "json_output"


def _finish_reason(stop: Any, structured_tool: bool) -> str | None:
    if stop is None:
        return None
    if stop == "tool_use" and structured_tool:
        return "stop"  # the forced tool call *is* the answer
    return _STOP_REASONS.get(str(stop), str(stop))


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    """Converse's ``inputTokens`` leaves out cache reads and writes (``totalTokens`` counts them),
    so they are added back; when ``totalTokens`` shows a model counted them inside
    ``inputTokens`` already, they are not added twice."""
    prompt = token_count(usage.get("inputTokens"))
    completion = token_count(usage.get("outputTokens"))
    read = token_count(usage.get("cacheReadInputTokens"))
    write = token_count(usage.get("cacheWriteInputTokens"))
    if (read or write) and usage.get("totalTokens") != prompt + completion:
        prompt += read + write
    return Usage(prompt, completion, None, read, write)


def _error_code_and_message(response: RawResponse) -> tuple[str | None, str]:
    """The error code from ``x-amzn-errortype`` ("ThrottlingException:http://...") or ``__type``
    ("com.amazon...#ThrottlingException"), and the body's message."""
    code: str | None = None
    header = response.headers.get("x-amzn-errortype") if response.headers else None
    if header:
        code = header.split(":", 1)[0].strip() or None
    message = ""
    try:
        data = json.loads(response.body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        if code is None and isinstance(data.get("__type"), str):
            code = data["__type"].rsplit("#", 1)[-1].split(":", 1)[0] or None
        message = str(data.get("message") or data.get("Message") or "")
    if not message:
        message = f"the server returned {describe_body(response.body)}" if response.body.strip() else (
            code or f"HTTP {response.status}")
    return code, message


def _payload_message(payload: bytes) -> str:
    try:
        data = json.loads(payload)
    except ValueError:
        return payload[:300].decode("utf-8", "replace")
    if isinstance(data, dict):
        return str(data.get("message") or data.get("Message") or data.get("originalMessage") or "")[:500]
    return str(data)[:300]


def _region_from_host(endpoint: str) -> str | None:
    host = urlsplit(endpoint).hostname or ""
    match = re.match(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com", host)
    return match.group(1) if match else None
