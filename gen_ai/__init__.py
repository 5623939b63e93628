"""gen_ai: one small, fast, dependable API for every LLM endpoint.

    from gen_ai import create_client
    client = create_client(provider="openai", endpoint="http://localhost:8000/v1", model_name="m")
    print(client.run_chat_completions([{"role": "user", "content": "Hi"}]))
"""

from ._http import Timeout
from .client import AsyncTextStream, Client, TextStream
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentFilterError,
    GenAIError,
    InvalidInputError,
    InvalidToolArgumentsError,
    NotFoundError,
    RateLimitError,
    RedirectError,
    ResponseError,
    SchemaValidationError,
    ServerError,
    StreamError,
    StreamTruncatedError,
    ToolCallError,
)
from .factory import create_client
from .types import ChatResult, ChatResults, Embeddings, StreamEvent, ToolCall, Usage

__version__ = "0.1.0"

# Imported on first use (``gen_ai.Hooks``), not at ``import gen_ai``: most programs never need them.
_LAZY = {"Hooks": "gen_ai.hooks", "CallInfo": "gen_ai.hooks"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gen_ai' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "create_client",
    "Timeout",
    "Client",
    "TextStream",
    "AsyncTextStream",
    "ChatResult",
    "ChatResults",
    "Usage",
    "Embeddings",
    "ToolCall",
    "StreamEvent",
    "Hooks",
    "CallInfo",
    "GenAIError",
    "InvalidInputError",
    "ConfigurationError",
    "APIStatusError",
    "BadRequestError",
    "ContentFilterError",
    "AuthenticationError",
    "NotFoundError",
    "RateLimitError",
    "RedirectError",
    "ServerError",
    "APIConnectionError",
    "APITimeoutError",
    "ResponseError",
    "StreamError",
    "StreamTruncatedError",
    "SchemaValidationError",
    "ToolCallError",
    "InvalidToolArgumentsError",
]
