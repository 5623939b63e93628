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

# Options that belong to the Client (transport, retries); everything else goes to the codec.
_CLIENT_OPTIONS = ("max_retries", "timeout", "schema_retries", "max_connections", "hooks", "telemetry",
                   "follow_redirects", "proxy", "trust_env", "verify", "cert", "allow_local_files")


def create_client(
    provider: str = "openai",
    api_key: str | None = None,
    endpoint: str | None = None,
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
    """
    if not isinstance(provider, str) or provider.lower() not in PROVIDERS:
        raise ConfigurationError(
            f"unknown provider {provider!r}",
            suggestion=f"Use one of: {', '.join(sorted(PROVIDERS))}.",
            field="provider",
        )
    module_name, class_name = PROVIDERS[provider.lower()].split(":")
    module = importlib.import_module(module_name)
    codec_cls = getattr(module, class_name)
    client_options = {k: options.pop(k) for k in _CLIENT_OPTIONS if k in options}
    try:
        codec = codec_cls(api_key=api_key, endpoint=endpoint, model_name=model_name, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        name = str(exc).rsplit("'", 2)[-2] if "'" in str(exc) else "?"
        raise ConfigurationError(
            f"create_client(provider={provider!r}) got an unknown option {name!r}",
            suggestion="Check the spelling; see docs/ for the options each provider takes.",
            field=name,
        ) from None
    make_transports = getattr(module, "make_transports", None)
    if make_transports is not None:  # providers that do not speak HTTP (the in-process model)
        client_options["transport"], client_options["async_transport"] = make_transports(codec)
    return Client(codec, **client_options)
