"""Azure OpenAI: the OpenAI codec on Azure's routes, headers and content-filter answers.

Two routes:

    classic  {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21
             (``deployment`` is required; the body's ``model`` is ignored by Azure)
    v1       {endpoint}/openai/v1/chat/completions   (``api_version="v1"``; the deployment name
             is sent as ``model``)

Credentials: an ``api-key`` header (``api_key`` / ``AZURE_OPENAI_API_KEY``) or a Microsoft Entra ID
token sent as ``Authorization: Bearer`` (``azure_ad_token`` / ``AZURE_OPENAI_AD_TOKEN``; also a
zero-argument callable that returns a fresh token, called for every request).

Bodies, responses and stream chunks are OpenAI's, so the request building and parsing is
``OpenAICodec``'s; this module changes only what Azure does differently. guided_json always uses
``response_format`` json_schema (Azure supports it on every GA version since 2024-08-01), so no
dialect probe is sent.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from .._keywords import AZURE_KEYWORDS
from .._state import FRESH, Changes, ServerState
from ..errors import ConfigurationError, ContentFilterError, GenAIError
from ..types import Call, Completion, EmbeddingCall, RawResponse, Request
from ._base import StreamParser, dumps, error_details, status_error
from .openai import OpenAICodec, OpenAIStreamParser, normalize_base_url

logger = logging.getLogger("gen_ai")

DEFAULT_API_VERSION = "2024-10-21"  # the latest GA data-plane version of the classic route
V1_ROUTE = "v1"
_FILTER_CODES = ("content_filter", "ResponsibleAIPolicyViolation")


def _filtered_categories(results: Any) -> list[str]:
    """``{"violence": {"filtered": true, "severity": "medium"}, ...}`` -> ["violence (medium)"]."""
    found: list[str] = []
    if not isinstance(results, dict):
        return found
    for name, value in results.items():
        if isinstance(value, dict) and value.get("filtered"):
            severity = value.get("severity")
            found.append(f"{name} ({severity})" if severity and severity != "safe" else str(name))
    return found


class AzureCodec(OpenAICodec):
    provider = "azure"
    extra_keywords = AZURE_KEYWORDS
    env_api_key = "AZURE_OPENAI_API_KEY"
    env_endpoint = "AZURE_OPENAI_ENDPOINT"

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        model_name: str | None = None,
        *,
        deployment: str | None = None,
        api_version: str | None = None,
        azure_ad_token: str | Callable[[], str] | None = None,
        strict_schema: bool = True,
        headers: Mapping[str, str] | None = None,
        stream_usage: bool = True,
    ) -> None:
        api_key = api_key if api_key is not None else os.environ.get(self.env_api_key)
        if azure_ad_token is None:
            azure_ad_token = os.environ.get("AZURE_OPENAI_AD_TOKEN") or None
        endpoint = endpoint or os.environ.get(self.env_endpoint)
        api_version = api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_API_VERSION
        if not endpoint:
            raise ConfigurationError(
                "no endpoint for provider 'azure'",
                suggestion="Pass endpoint='https://<resource>.openai.azure.com' to create_client() "
                           "or set AZURE_OPENAI_ENDPOINT.",
                field="endpoint",
            )
        if not api_key and not azure_ad_token:
            raise ConfigurationError(
                "no credentials for provider 'azure'",
                suggestion="Pass api_key= (or set AZURE_OPENAI_API_KEY), or an Entra ID token with "
                           "azure_ad_token= (or set AZURE_OPENAI_AD_TOKEN).",
                field="api_key",
            )
        self.v1 = api_version.lower() == V1_ROUTE
        if not self.v1 and not deployment:
            raise ConfigurationError(
                "provider 'azure' needs deployment= (the deployment name chosen in the Azure portal)",
                suggestion="Pass deployment='my-gpt-4o' to create_client(), or use the v1 route with "
                           "api_version='v1' and deployment= or model_name= set to the deployment name.",
                field="deployment",
            )
        deployment = deployment or model_name
        if not deployment:
            raise ConfigurationError(
                "provider 'azure' with api_version='v1' needs the deployment name",
                suggestion="Pass deployment= (or model_name=) with the deployment name; it is sent as 'model'.",
                field="deployment",
            )
        root = _resource_root(endpoint)
        base = f"{root}/openai/v1" if self.v1 else f"{root}/openai/deployments/{quote(deployment, safe='')}"
        # api_key="" keeps OpenAICodec from reading OPENAI_API_KEY or adding its Bearer header.
        super().__init__(api_key="", endpoint=base, model_name=deployment, dialect="json_schema",
                         strict_schema=strict_schema, headers=headers, stream_usage=stream_usage)
        self.deployment = deployment
        self.api_version = api_version
        self.base_url = base
        self._api_key = api_key or None
        self._token = azure_ad_token
        self._issued: deque[str] = deque(maxlen=4)
        # A token callable may block (it often asks Entra ID over the network): the call flow
        # calls refresh_credentials() first, off the event loop for async calls, and
        # build_request takes the token it fetched.
        self.blocking_credentials = callable(azure_ad_token)
        self._fetched: deque[str] = deque()
        if self._api_key and not azure_ad_token:
            self._headers["api-key"] = self._api_key
        elif isinstance(azure_ad_token, str):
            self._headers["Authorization"] = f"Bearer {azure_ad_token}"
        query = "" if self.v1 else f"?api-version={quote(api_version, safe='')}"
        self._urls = {"chat": f"{base}/chat/completions{query}", "completion": f"{base}/completions{query}",
                      "embedding": f"{base}/embeddings{query}"}

    def secrets(self) -> tuple[str, ...]:
        # Tokens from a token callable change: the last few issued are scrubbed too.
        return super().secrets() + ((self._api_key,) if self._api_key else ()) + tuple(self._issued)

    def __repr__(self) -> str:
        route = "v1" if self.v1 else f"api-version={self.api_version}"
        return f"<AzureCodec endpoint={self.base_url!r} deployment={self.deployment!r} {route}>"

    # -- requests ---------------------------------------------------------------------------

    def refresh_credentials(self) -> None:
        if callable(self._token):
            self._fetched.append(self._new_token())

    def _new_token(self) -> str:
        assert callable(self._token)
        token = self._token()
        if token not in self._issued:
            self._issued.append(token)
        return token

    def _request_headers(self) -> dict[str, str]:
        headers = self._headers
        if callable(self._token):
            try:
                token = self._fetched.popleft()
            except IndexError:  # build_request called outside the call flow
                token = self._new_token()
            headers = {**headers, "Authorization": f"Bearer {token}"}
        return headers

    def build_request(self, call: Call, state: ServerState = FRESH) -> Request:
        return Request("POST", self._urls[call.kind], self._request_headers(), dumps(self.build_body(call, state)),
                       call.stream)

    def build_embedding_request(self, call: EmbeddingCall, state: ServerState = FRESH) -> Request:
        return Request("POST", self._urls["embedding"], self._request_headers(),
                       dumps(self.build_embedding_body(call, state)))

    def probe_request(self, call: Call, state: ServerState) -> Request | None:
        return None  # the dialect is known: json_schema

    def models_request(self) -> Request | None:
        # v1 route: GET .../openai/v1/models; dated versions: GET .../openai/models?api-version=.
        if self.v1:
            url = f"{self.base_url}/models"
        else:
            root = self.base_url.rsplit("/openai/deployments/", 1)[0]
            url = f"{root}/openai/models?api-version={quote(self.api_version, safe='')}"
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        if callable(self._token):
            token = self._token()
            if token not in self._issued:
                self._issued.append(token)
            headers["Authorization"] = f"Bearer {token}"
        return Request("GET", url, headers)

    def fallback(self, call: Call, request: Request, error: GenAIError, state: ServerState) -> Changes | None:
        # Only stream_options may be missing (old api-versions); never change the schema dialect.
        if call.stream and error.status_code == 400 and "stream_options" in (error.message or "").lower() \
                and b'"stream_options"' in (request.body or b""):
            return {"stream_usage": (True, False)}
        # Reasoning deployments (o-series, gpt-5) under any deployment name: max_completion_tokens,
        # no temperature / top_p, learned from the 400 once per client.
        return self.adapt_reasoning_params(call, request, error, state)

    # -- responses --------------------------------------------------------------------------

    def parse_response(self, call: Call, response: RawResponse) -> Completion:
        completion = super().parse_response(call, response)
        for i, reason in enumerate(completion.finish_reasons):
            if reason == "content_filter":
                raw = completion.raw
                if isinstance(raw, bytes):  # rare path: parse the body again for the categories
                    raw = json.loads(raw)
                categories = _filtered_categories(_choice_filter_results(raw, i))
                logger.warning("gen_ai: Azure's content filter cut answer %d of deployment %r%s",
                               i, self.deployment,
                               f" ({', '.join(categories)})" if categories else "")
        return completion

    def parse_error(self, response: RawResponse) -> GenAIError:
        message, error_type, code = error_details(response.body)
        if error_type is not None and error_type.isdigit():  # Azure's "status": 400, not a type
            error_type = None
        inner = _inner_error(response.body)
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        if code in _FILTER_CODES or inner_code in _FILTER_CODES:
            categories = _filtered_categories(inner.get("content_filter_result") if isinstance(inner, dict) else None)
            error = status_error(response, self.provider, message, error_type,
                                 code or inner_code, cls=ContentFilterError, retryable=False)
            what = f" (category: {', '.join(categories)})" if categories else ""
            error.suggestion = (
                f"The prompt was blocked by Azure's content filter{what}; rephrase the prompt, or ask "
                "the resource owner to review the content filter configuration of the deployment."
            )
            return error
        return status_error(response, self.provider, message, error_type, code)

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:
        return AzureStreamParser(call.kind, self.provider, headers, self.deployment)


class AzureStreamParser(OpenAIStreamParser):
    """OpenAI's chunks; warns when the content filter cut the answer."""

    def __init__(self, kind: str, provider: str, headers: Mapping[str, str], deployment: str) -> None:
        super().__init__(kind, provider, headers)
        self._deployment = deployment

    def close(self) -> list[str]:
        out = super().close()
        if self.finish_reason == "content_filter":
            logger.warning("gen_ai: Azure's content filter cut the streamed answer of deployment %r",
                           self._deployment)
        return out


def _resource_root(endpoint: str) -> str:
    """``https://x.openai.azure.com/``, ``.../openai`` or ``.../openai/v1`` -> ``https://x.openai.azure.com``."""
    root = normalize_base_url(endpoint, default_path="").rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


def _inner_error(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    return err.get("innererror") if isinstance(err, dict) else None


def _choice_filter_results(raw: Any, index: int) -> Any:
    try:
        return raw["choices"][index].get("content_filter_results")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None

