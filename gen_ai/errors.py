"""Every failure gen_ai reports, as one exception tree.

    GenAIError                      base of everything below; .to_dict() gives the error dict
    ├── InvalidInputError           bad arguments, raised before any network call (also ValueError)
    │   └── ConfigurationError      unknown provider, missing endpoint / model / credentials
    ├── APIStatusError              the server answered with an error status
    │   ├── RedirectError           a 3xx the redirect policy does not follow (.location says where)
    │   ├── BadRequestError         400, 422 and other 4xx not listed below
    │   │   └── ContentFilterError  the provider's content or safety filter blocked the call
    │   ├── AuthenticationError     401, 403
    │   ├── NotFoundError           404 (wrong model name or endpoint path)
    │   ├── RateLimitError          429 and provider throttling codes (retryable)
    │   └── ServerError             5xx, 529 overloaded (retryable)
    ├── APIConnectionError          could not connect, or the connection dropped (retryable)
    │   └── APITimeoutError         connect, read or whole-call timeout
    ├── ResponseError               a success status with a body we cannot use (malformed JSON, ...)
    ├── StreamError                 an error event inside a stream, or a malformed event
    │   └── StreamTruncatedError    the stream ended before its finish reason / [DONE]
    ├── SchemaValidationError       guided_json output still invalid after schema_retries re-asks
    └── ToolCallError               a tool call that cannot be used (unknown tool, bad arguments, a
        │                           tool that raised when run_tools was asked to raise)
        └── InvalidToolArgumentsError  a tool call's arguments are not a JSON object

Every error carries ``message``, ``suggestion``, ``status_code``, ``url``, ``method``,
``retryable``, ``provider`` and, when the server sent one, its ``error_type`` and a trimmed
``body``. An error that ends a stream keeps the text that arrived before it in
``partial_text`` (None when nothing had been streamed yet). Secrets are scrubbed from all of
them before the error leaves the client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class GenAIError(Exception):
    """Base class of every gen_ai error."""

    default_suggestion = ""
    retryable_default = False
    partial_text: str | None = None

    def __init__(
        self,
        message: str,
        *,
        suggestion: str | None = None,
        status_code: int | None = None,
        url: str | None = None,
        method: str | None = None,
        retryable: bool | None = None,
        provider: str | None = None,
        error_type: str | None = None,
        body: str | None = None,
        retry_after: float | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion if suggestion is not None else self.default_suggestion
        self.status_code = status_code
        self.url = url
        self.method = method
        self.retryable = self.retryable_default if retryable is None else retryable
        self.provider = provider
        self.error_type = error_type
        self.body = body
        self.retry_after = retry_after
        self.field = field

    def __str__(self) -> str:
        text = self.message
        if self.status_code is not None:
            text = f"{text} (HTTP {self.status_code})"
        if self.suggestion:
            text = f"{text}. {self.suggestion}" if not text.endswith(".") else f"{text} {self.suggestion}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The error dict returned by ``return_error=True`` calls."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "suggestion": self.suggestion,
            "status_code": self.status_code,
            "url": self.url,
            "method": self.method,
            "retryable": self.retryable,
            "provider": self.provider,
            "error_type": self.error_type,
            "field": self.field,
            **({"partial_text": self.partial_text} if self.partial_text is not None else {}),
        }

    def redact(self, secrets: Iterable[str]) -> "GenAIError":
        """Replace every secret in every text attribute with '***' (in place)."""
        secrets = [s for s in secrets if s and len(s) >= 4]
        if not secrets:
            return self
        for name in ("message", "suggestion", "url", "body", "error_type", "partial_text"):
            value = getattr(self, name)
            if isinstance(value, str):
                for secret in secrets:
                    value = value.replace(secret, "***")
                setattr(self, name, value)
        self.args = (self.message,)
        return self


class InvalidInputError(GenAIError, ValueError):
    """An argument is wrong; nothing was sent."""

    default_suggestion = "Fix the argument named in the message; nothing was sent to the server."


class ConfigurationError(InvalidInputError):
    """The client cannot be built: unknown provider, missing endpoint, model or credentials."""

    default_suggestion = "Pass the missing argument to create_client() or set its environment variable."


class APIStatusError(GenAIError):
    """The server answered with an error status."""

    default_suggestion = "Check the request against the server's documentation."


class RedirectError(APIStatusError):
    """The server answered with a redirect that was not followed: redirects are off by default,
    and one to another origin is never followed (credentials stay with their origin)."""

    default_suggestion = "Point endpoint at the URL the server redirects to."

    def __init__(self, message: str, *, location: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.location = location

    def redact(self, secrets: Iterable[str]) -> "GenAIError":
        secrets = [s for s in secrets if s and len(s) >= 4]
        if self.location:
            for secret in secrets:
                self.location = self.location.replace(secret, "***")
        return super().redact(secrets)


class BadRequestError(APIStatusError):
    default_suggestion = "The server rejected the request; fix the parameter it names and try again."


class ContentFilterError(BadRequestError):
    default_suggestion = (
        "The provider's content filter blocked this prompt or answer; rephrase the prompt "
        "or review the filter settings of the deployment."
    )


class AuthenticationError(APIStatusError):
    default_suggestion = (
        "Check the API key (argument api_key or the provider's environment variable) "
        "and that it may use this model."
    )


class NotFoundError(APIStatusError):
    default_suggestion = "Check model_name and the endpoint URL (a base URL such as http://host:8000/v1)."


class RateLimitError(APIStatusError):
    retryable_default = True
    default_suggestion = (
        "The server is rate limiting; lower concurrency, raise max_retries, or wait and retry."
    )


class ServerError(APIStatusError):
    retryable_default = True
    default_suggestion = "The server failed; this is usually temporary, retry later."


class APIConnectionError(GenAIError):
    retryable_default = True
    default_suggestion = "Check that the server is running and that the endpoint URL is right."


class APITimeoutError(APIConnectionError):
    default_suggestion = "The server did not answer in time; raise timeout or lower max_tokens."


class ResponseError(GenAIError):
    default_suggestion = (
        "The server's answer was not the JSON this API returns; check that the endpoint points "
        "at the API and not at a proxy or web page."
    )


class StreamError(GenAIError):
    default_suggestion = "The stream failed part-way; retry the request."


class StreamTruncatedError(StreamError):
    retryable_default = True
    default_suggestion = (
        "The connection closed before the stream finished; the text so far is incomplete. Retry."
    )


class SchemaValidationError(GenAIError):
    default_suggestion = (
        "The model's answer did not match guided_json; raise schema_retries or max_tokens, "
        "or simplify the schema."
    )

    def __init__(self, message: str, *, text: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.text = text


class ToolCallError(GenAIError):
    """A tool call gen_ai cannot use; ``tool_name`` names the tool the model asked for."""

    default_suggestion = "Check the tool definitions passed in tools=, or let run_tools report it to the model."

    def __init__(self, message: str, *, tool_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.tool_name = tool_name


class InvalidToolArgumentsError(ToolCallError):
    default_suggestion = ("The model wrote arguments that are not a JSON object; raise max_tokens if they "
                          "were cut off, or describe the parameters more plainly.")


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}

# Statuses worth retrying: timeouts, conflicts, rate limits and every server error.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def error_class_for_status(status: int) -> type[APIStatusError]:
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if status >= 500:
        return ServerError
    if status >= 400:
        return BadRequestError
    return APIStatusError


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


__all__ = [
    "GenAIError",
    "InvalidInputError",
    "ConfigurationError",
    "APIStatusError",
    "RedirectError",
    "BadRequestError",
    "ContentFilterError",
    "AuthenticationError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "APIConnectionError",
    "APITimeoutError",
    "ResponseError",
    "StreamError",
    "StreamTruncatedError",
    "SchemaValidationError",
    "ToolCallError",
    "InvalidToolArgumentsError",
    "error_class_for_status",
    "is_retryable_status",
]
