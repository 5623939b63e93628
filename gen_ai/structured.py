"""guided_json: the user's schema in any form, and validation of what the model returned.

How the schema reaches the server is each provider codec's business (OpenAI-compatible
dialects live in ``providers/openai.py``); this module only normalizes and validates.
jsonschema and pydantic are imported only when a schema is actually used.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidInputError, SchemaValidationError

_NAME_RE = re.compile(r"[^a-zA-Z0-9_-]+")


class Schema:
    """A JSON schema, where it came from (``model`` for pydantic classes) and a request name."""

    __slots__ = ("json_schema", "model", "name", "_validator")

    def __init__(self, json_schema: dict[str, Any], model: Any = None, name: str | None = None) -> None:
        self.json_schema = json_schema
        self.model = model
        self.name = name or _schema_name(json_schema)
        self._validator: Any = None

    @classmethod
    def from_user(cls, value: Any) -> "Schema":
        """Accept a JSON-schema dict, a JSON-schema string, or a pydantic model class.

        Schemas are cached by content, so a batch of thousands of calls with one guided_json
        checks the schema and compiles its validator once, not once per call."""
        if isinstance(value, Schema):
            return value
        if isinstance(value, type) and hasattr(value, "model_json_schema"):
            key: Any = value
        elif isinstance(value, dict):
            try:  # key order kept: property order steers grammar-constrained generation
                key = json.dumps(value)
            except (TypeError, ValueError):
                key = None
        else:
            key = value if isinstance(value, (str, bytes)) else None
        cached = _CACHE.get(key) if key is not None else None
        if cached is None:
            cached = cls._build(json.loads(key) if isinstance(value, dict) and key is not None else value)
            if key is not None:
                if len(_CACHE) >= 256:
                    _CACHE.clear()
                _CACHE[key] = cached
        return cached

    @classmethod
    def _build(cls, value: Any) -> "Schema":
        if isinstance(value, type) and hasattr(value, "model_json_schema"):
            return cls(value.model_json_schema(), model=value, name=value.__name__)
        if isinstance(value, (str, bytes)):
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise InvalidInputError(
                    f"guided_json is a string but not valid JSON: {exc}",
                    suggestion="Pass a JSON schema as a dict, a JSON string, or a pydantic model class.",
                    field="guided_json",
                ) from None
            value = parsed
        if not isinstance(value, dict):
            raise InvalidInputError(
                f"guided_json must be a JSON schema (dict or JSON string) or a pydantic model class, "
                f"got {type(value).__name__}",
                suggestion="For a pydantic model pass the class itself or Model.model_json_schema().",
                field="guided_json",
            )
        schema = cls(value)
        schema._check()
        return schema

    def _check(self) -> None:
        validator_cls = _validator_class(self.json_schema)
        import jsonschema

        try:
            validator_cls.check_schema(self.json_schema)
        except jsonschema.SchemaError as exc:
            path = "/".join(str(p) for p in exc.path) or "(root)"
            raise InvalidInputError(
                f"guided_json is not a valid JSON schema at {path}: {exc.message}",
                suggestion="Fix the schema; see https://json-schema.org for the keywords.",
                field="guided_json",
            ) from None

    def validate(self, text: str) -> Any:
        """Parse and validate the model's text; return the object (a pydantic instance for models).

        Raises SchemaValidationError with a message that can be shown to the model on a re-ask.
        """
        try:
            value = json.loads(_strip_fences(text))
        except ValueError as exc:
            raise SchemaValidationError(
                f"the answer is not valid JSON ({exc})", text=text, field="guided_json"
            ) from None
        if self._validator is None:
            self._validator = _validator_class(self.json_schema)(self.json_schema)
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(root)"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise SchemaValidationError(
                f"the answer does not match the schema at {where}: {first.message}{more}",
                text=text,
                field="guided_json",
            )
        if self.model is not None:
            try:
                return self.model.model_validate(value)
            except Exception as exc:  # pydantic.ValidationError, without importing pydantic here
                raise SchemaValidationError(
                    f"the answer does not validate as {self.name}: {exc}", text=text, field="guided_json"
                ) from None
        return value


# Schemas by content (or pydantic class); see Schema.from_user.
_CACHE: dict[Any, Schema] = {}


def _validator_class(schema: dict[str, Any]) -> Any:
    import jsonschema

    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def _schema_name(schema: dict[str, Any]) -> str:
    title = schema.get("title") if isinstance(schema, dict) else None
    name = _NAME_RE.sub("_", title).strip("_")[:64] if isinstance(title, str) else ""
    return name or "response"


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text


def reask_messages(messages: list[dict[str, Any]], bad_text: str, error: SchemaValidationError) -> list[dict[str, Any]]:
    """The conversation for a re-ask: the bad answer, then what was wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": bad_text},
        {
            "role": "user",
            "content": (
                f"Your answer was rejected: {error.message}. Reply again with only a JSON value "
                "that matches the schema, and nothing else."
            ),
        },
    ]


def cut_off(error: SchemaValidationError, max_tokens: int, provider: str | None = None) -> SchemaValidationError:
    """The error for an answer that failed validation because ``max_tokens`` cut it off
    (finish_reason ``length``). No re-ask is made for it: the same budget is cut off again."""
    cut = SchemaValidationError(
        f"guided_json: the answer was cut off at max_tokens={max_tokens} (finish_reason 'length') before "
        f"its JSON was complete, so it does not validate ({error.message}); no re-ask was made",
        text=error.text,
        field="max_tokens",
        suggestion=(f"Raise max_tokens (e.g. max_tokens={max(2 * max_tokens, 64)}), or ask for a shorter answer "
                    "(fewer or shorter fields, maxLength / maxItems in the schema)."),
    )
    cut.provider = provider
    return cut
