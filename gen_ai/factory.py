"""create_client(): a provider name -> its codec (imported lazily) -> a Client.

Adding a provider is one module in ``gen_ai/providers/`` plus one line in ``PROVIDERS``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .client import Client
from .errors import ConfigurationError

# provider name -> "module:CodecClass". Modules are imported only when that provider is asked for.
PROVIDERS: dict[str, str] = {
    "openai": "gen_ai.providers.openai:OpenAICodec",
    "local": "gen_ai.providers.local:LocalCodec",
    "azure": "gen_ai.providers.azure:AzureCodec",
    "bedrock": "gen_ai.providers.bedrock:BedrockCodec",
    "anthropic": "gen_ai.providers.anthropic:AnthropicCodec",
    "gemini": "gen_ai.providers.gemini:GeminiCodec",
}

# create_client(..., api=NAME): another wire protocol for the same provider.
APIS: dict[tuple[str, str], str] = {
    ("openai", "responses"): "gen_ai.providers.openai_responses:OpenAIResponsesCodec",
    ("azure", "responses"): "gen_ai.providers.openai_responses:AzureResponsesCodec",
}

# Options that belong to the Client (transport, retries); everything else goes to the codec.
_CLIENT_OPTIONS = ("max_retries", "timeout", "schema_retries", "max_connections", "hooks", "telemetry",
                   "follow_redirects", "proxy", "trust_env", "verify", "cert", "allow_local_files")


def create_client(
    provider: str = "openai",
    api_key: str | None = None,
    endpoint: str | list[str] | tuple[str, ...] | None = None,
    model_name: str | None = None,
    **options: Any,
) -> Client:
    """Build a client for ``provider``.

    ``api_key`` and ``endpoint`` fall back to the provider's environment variables
    (``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` for "openai"). Client options: ``max_retries``
    (default 2), ``timeout`` (every call's default: seconds, default 30, or a
    ``gen_ai.Timeout(total, connect=, read=)``), ``schema_retries`` (default 1),
    ``max_connections`` (async pool size, default 256). Network options (docs/security.md):
    ``follow_redirects`` (default False; True follows same-origin redirects only), ``proxy``
    (default: ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY``), ``trust_env``
    (default True: read those variables), ``verify`` (True, a CA bundle path, or False) and
    ``cert`` (a client certificate: a path, or ``(cert, key)``), ``allow_local_files`` (default
    False: image parts inside messages may not name local files; see docs/security.md). Provider
    options, e.g.
    ``dialect`` for "openai", are passed to the provider.

    ``endpoint=[url1, url2, ...]`` puts several replicas of one server behind the client (least
    outstanding requests, a failing replica cooled down for ``replica_cooldown`` seconds and its
    requests retried on another); see ``gen_ai/replicas.py`` and docs/batch.md.
    """
    if not isinstance(provider, str) or provider.lower() not in PROVIDERS:
        raise ConfigurationError(
            f"unknown provider {provider!r}",
            suggestion=f"Use one of: {', '.join(sorted(PROVIDERS))}.",
            field="provider",
        )
    target = PROVIDERS[provider.lower()]
    api = options.pop("api", None)
    if api is not None and api not in ("chat", "chat_completions"):
        if (provider.lower(), api) not in APIS:
            raise ConfigurationError(
                f"api={api!r} is not available for provider {provider!r}",
                suggestion="Use api='responses' with provider='openai' or 'azure' (OpenAI, Azure, vLLM, SGLang, "
                           "llama.cpp, Ollama, LM Studio), or leave api out for Chat Completions.",
                field="api",
            )
        target = APIS[(provider.lower(), api)]
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    codec_cls = getattr(module, class_name)
    client_options = {k: options.pop(k) for k in _CLIENT_OPTIONS if k in options}
    cooldown = options.pop("replica_cooldown", None)
    if isinstance(endpoint, (list, tuple)):
        if getattr(module, "make_transports", None) is not None:
            raise ConfigurationError(f"provider {provider!r} runs in-process and takes no endpoints",
                                     field="endpoint")
        from .replicas import DEFAULT_COOLDOWN, ReplicaCodec

        codecs = [_make_codec(codec_cls, provider, api_key, url, model_name, options) for url in endpoint]
        router = ReplicaCodec(codecs, DEFAULT_COOLDOWN if cooldown is None else cooldown)
        return Client(router, **client_options)
    if cooldown is not None:
        raise ConfigurationError("replica_cooldown needs several endpoints",
                                 suggestion="Pass endpoint=[url1, url2, ...].", field="replica_cooldown")
    codec = _make_codec(codec_cls, provider, api_key, endpoint, model_name, options)
    make_transports = getattr(module, "make_transports", None)
    if make_transports is not None:  # providers that do not speak HTTP (the in-process model)
        client_options["transport"], client_options["async_transport"] = make_transports(codec)
    return Client(codec, **client_options)


def _make_codec(codec_cls: Any, provider: str, api_key: str | None, endpoint: str | None, model_name: str | None,
                options: dict[str, Any]) -> Any:
    try:
        return codec_cls(api_key=api_key, endpoint=endpoint, model_name=model_name, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        name = str(exc).rsplit("'", 2)[-2] if "'" in str(exc) else "?"
        raise ConfigurationError(
            f"create_client(provider={provider!r}) got an unknown option {name!r}",
            suggestion="Check the spelling; see docs/ for the options each provider takes.",
            field=name,
        ) from None
