"""Tools: what the model may call, in any form a user has them, checked before anything is sent.

``tools=[...]`` takes, mixed freely:

    OpenAI tool dicts       {"type": "function", "function": {"name", "description", "parameters"}}
                            (also the bare {"name", "description", "parameters"} form)
    Python functions        the schema comes from the signature, type hints and docstring
                            (Google "Args:" or Sphinx ":param x:" lines describe parameters);
                            pydantic, when installed, describes rich types (models, dataclasses,
                            TypedDicts, constrained types) and checks the arguments before a run
    pydantic model classes  the model's JSON schema; the tool has no function (run_tools treats
                            a call to it as the final, structured answer)
    gen_ai.tools.Tool       already normalised

``tool_choice`` is "auto", "none", "required", a tool name (or the OpenAI
``{"type": "function", "function": {"name": ...}}`` dict); ``parallel_tool_calls`` a bool.
Each codec maps these to its wire format; see docs/tools.md.

Normalising is cached per function / model class / dict content, so a batch of thousands of
calls with the same tools inspects each function once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .errors import InvalidInputError

TOOL_CHOICES = ("auto", "none", "required")
# OpenAI's rule for function names (Anthropic's and Bedrock's are the same or looser).
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CACHE: dict[Any, "Tool"] = {}


class Tool:
    """One tool, normalised: ``name``, ``description``, ``parameters`` (a JSON schema of type
    object), the Python ``function`` that runs it (None for schema-only tools) and, for
    functions described with pydantic, the ``validator`` that checks and converts arguments.
    ``openai`` is the OpenAI wire dict, built once."""

    __slots__ = ("name", "description", "parameters", "function", "model", "strict", "validator", "openai")

    def __init__(self, name: str, description: str, parameters: dict[str, Any],
                 function: Callable[..., Any] | None = None, *,
                 model: Any = None, strict: bool | None = None, validator: Any = None) -> None:
        self.name = name
        self.description = description
        self.parameters = parameters
        self.function = function
        self.model = model
        self.strict = strict
        self.validator = validator
        spec: dict[str, Any] = {"name": name}
        if description:
            spec["description"] = description
        spec["parameters"] = parameters
        if strict is not None:
            spec["strict"] = strict
        self.openai: dict[str, Any] = {"type": "function", "function": spec}

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, function={getattr(self.function, '__qualname__', None)!r})"

    def parse(self, arguments: dict[str, Any]) -> Any:
        """The arguments as the tool takes them: a model instance for a pydantic model tool,
        pydantic-checked keyword arguments for a function described with pydantic, else as is.
        Raises ValueError (pydantic's ValidationError is one) when they do not fit."""
        if self.model is not None:
            return self.model.model_validate(arguments)
        if self.validator is not None:
            validated = self.validator.model_validate(arguments)
            return {name: getattr(validated, name) for name in type(validated).model_fields}
        missing = [name for name in self._required if name not in arguments]
        if missing:
            raise ValueError(f"missing required argument{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        props = self.parameters.get("properties")
        if isinstance(props, dict) and self.parameters.get("additionalProperties") is False:
            unknown = [k for k in arguments if k not in props]
            if unknown:
                raise ValueError(f"unknown argument{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        return arguments

    @property
    def _required(self) -> list[str]:
        required = self.parameters.get("required")
        return [str(r) for r in required] if isinstance(required, list) else []


def _bad(field: str, message: str, suggestion: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {message}", suggestion=suggestion, field=field)


def normalize_tools(tools: Any) -> list[Tool]:
    """Every accepted form -> a list of Tool; InvalidInputError naming ``tools[i]`` otherwise."""
    if isinstance(tools, (dict, str, bytes)) or not isinstance(tools, (list, tuple)):
        if callable(tools) or isinstance(tools, dict):
            raise _bad("tools", f"must be a list, got a single {type(tools).__name__}",
                       "Wrap it in a list: tools=[...].")
        raise _bad("tools", f"must be a list of tools, got {type(tools).__name__}",
                   "Pass tool dicts, Python functions or pydantic model classes in a list.")
    out: list[Tool] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(tools):
        tool = _one(item, i)
        if tool.name in seen:
            raise _bad(f"tools[{i}].name", f"{tool.name!r} is already the name of tools[{seen[tool.name]}]",
                       "Give every tool a distinct name.")
        seen[tool.name] = i
        out.append(tool)
    return out


def _one(item: Any, i: int) -> Tool:
    if isinstance(item, Tool):
        return item
    if isinstance(item, dict):
        try:
            key: Any = ("dict", json.dumps(item, sort_keys=False))
        except (TypeError, ValueError):
            key = None
    elif isinstance(item, type) or callable(item):
        key = item
    else:
        raise _bad(f"tools[{i}]", f"{type(item).__name__} is not a tool",
                   "Pass an OpenAI tool dict, a Python function or a pydantic model class.")
    try:
        cached = _CACHE.get(key) if key is not None else None
    except TypeError:  # an unhashable callable object
        key, cached = None, None
    if cached is not None:
        return cached
    if isinstance(item, dict):
        tool = _from_dict(item, i)
    elif isinstance(item, type) and hasattr(item, "model_json_schema"):
        schema = _clean(item.model_json_schema())
        tool = Tool(_check_name(item.__name__, i), _first_paragraph(item.__doc__), _check_schema(schema, i),
                    model=item)
    elif callable(item):
        tool = _from_function(item, i)
    else:
        raise _bad(f"tools[{i}]", f"class {item.__name__} is not a tool",
                   "Pass a pydantic model class (its fields become the parameters) or a function.")
    if key is not None:
        if len(_CACHE) >= 512:
            _CACHE.clear()
        _CACHE[key] = tool
    return tool


def _check_name(name: Any, i: int) -> str:
    if not isinstance(name, str) or not name:
        raise _bad(f"tools[{i}].name", "is missing" if not name else f"must be a string, got {type(name).__name__}",
                   'Every tool needs a name, e.g. {"type": "function", "function": {"name": "get_weather", ...}}.')
    if not _NAME_RE.match(name):
        raise _bad(f"tools[{i}].name", f"{name!r} may only hold letters, digits, '_' and '-' (at most 64)",
                   "Rename the tool, e.g. 'get_weather'.")
    return name


def _check_schema(schema: Any, i: int) -> dict[str, Any]:
    field = f"tools[{i}].parameters"
    if not isinstance(schema, dict):
        raise _bad(field, f"must be a JSON schema object (a dict), got {type(schema).__name__}",
                   'Use e.g. {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}.')
    if schema.get("type", "object") != "object":
        raise _bad(field, f"must describe an object (type 'object'), got type {schema.get('type')!r}",
                   "Tool arguments are always a JSON object: wrap the value in a property.")
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise _bad(field, f"is not a valid JSON schema: {exc.message}" + (f" (at {where})" if where else ""),
                   "Fix the schema; check it with jsonschema.Draft202012Validator.check_schema().") from None
    checked: dict[str, Any] = schema if "type" in schema else {"type": "object", **schema}
    return checked


def _from_dict(item: dict[str, Any], i: int) -> Tool:
    if item.get("type", "function") != "function":
        raise _bad(f"tools[{i}].type", f"{item.get('type')!r} is not supported; only function tools are",
                   "Provider built-in tools (web search, code execution) can be passed with extra_body.")
    spec = item.get("function") if "function" in item else item
    if not isinstance(spec, dict):
        raise _bad(f"tools[{i}].function", f"must be a dict, got {type(spec).__name__}",
                   '{"type": "function", "function": {"name": ..., "parameters": {...}}}')
    name = _check_name(spec.get("name"), i)
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise _bad(f"tools[{i}].description", f"must be a string, got {type(description).__name__}",
                   "Describe what the tool does in a sentence.")
    parameters = spec.get("parameters", spec.get("input_schema", {"type": "object", "properties": {}}))
    strict = spec.get("strict")
    return Tool(name, description, _check_schema(parameters, i), strict=strict if isinstance(strict, bool) else None)


# -- functions ------------------------------------------------------------------------------------

_SIMPLE: dict[Any, dict[str, Any]] = {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"},
                                      bool: {"type": "boolean"}, dict: {"type": "object"}, list: {"type": "array"},
                                      type(None): {"type": "null"}}


def _from_function(fn: Callable[..., Any], i: int) -> Tool:
    import inspect
    import typing

    name = _check_name(getattr(fn, "__name__", None) or type(fn).__name__, i)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise _bad(f"tools[{i}]", f"the parameters of {name!r} cannot be read",
                   "Pass a plain Python function.") from None
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - a bad forward reference raises NameError and others
        raise _bad(f"tools[{i}]", f"the type hints of {name!r} cannot be resolved ({exc})",
                   "Import every type its hints name, or use builtin types.") from None
    doc = inspect.getdoc(fn) or ""
    described = _param_docs(doc)
    params: list[tuple[str, Any, Any]] = []
    for pname, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            if param.kind is param.VAR_KEYWORD:
                continue  # **kwargs takes nothing the schema must describe
            raise _bad(f"tools[{i}]", f"{name!r} takes *{pname}, which a JSON object cannot describe",
                       "Take a list parameter instead (e.g. items: list[str]).")
        if param.kind is param.POSITIONAL_ONLY:
            raise _bad(f"tools[{i}]", f"{name!r} has the positional-only parameter {pname!r}; tools are called "
                       "with keyword arguments", "Remove the '/' from the signature.")
        if pname not in hints:
            raise _bad(f"tools[{i}]", f"parameter {pname!r} of {name!r} has no type hint, so its type cannot be "
                       "described to the model", f"Annotate it, e.g. def {name}({pname}: str).")
        params.append((pname, hints[pname], param.default))
    schema, validator = _pydantic_schema(name, params, described)
    if schema is None:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for pname, hint, default in params:
            prop = _simple_schema(hint)
            if prop is None:
                raise _bad(f"tools[{i}]", f"parameter {pname!r} of {name!r} has type {hint!r}, which gen_ai "
                           "cannot describe as JSON schema", "Use str, int, float, bool, list, dict, Literal, Enum "
                           "or Optional types, or (with pydantic installed) a pydantic model or dataclass.")
            prop = dict(prop)
            if pname in described:
                prop["description"] = described[pname]
            if default is inspect.Parameter.empty:
                required.append(pname)
            elif _jsonable(default):
                prop["default"] = default
            properties[pname] = prop
        schema = {"type": "object", "properties": properties, "required": required}
    return Tool(name, _first_paragraph(doc), _check_schema(schema, i), fn, validator=validator)


def _pydantic_schema(name: str, params: list[tuple[str, Any, Any]],
                     described: dict[str, str]) -> tuple[dict[str, Any] | None, Any]:
    import inspect

    try:
        import pydantic
    except ImportError:
        return None, None
    fields: dict[str, Any] = {}
    for pname, hint, default in params:
        info = pydantic.Field(... if default is inspect.Parameter.empty else default,
                              description=described.get(pname))
        fields[pname] = (hint, info)
    try:
        model = pydantic.create_model(f"{name}_arguments", **fields)
        schema = model.model_json_schema()
    except Exception:  # noqa: BLE001 - pydantic raises several types for types it cannot describe
        return None, None
    schema = _clean(schema)
    schema.pop("description", None)
    return schema, model


def _simple_schema(hint: Any) -> dict[str, Any] | None:
    import enum
    import typing

    if hint in _SIMPLE:
        return _SIMPLE[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _simple_schema(args[0])
    if origin is typing.Literal:
        return {"enum": list(args)}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    if origin in (list, tuple, set, frozenset):
        if not args:
            return {"type": "array"}
        item = _simple_schema(args[0])
        return None if item is None else {"type": "array", "items": item}
    if origin is dict:
        return {"type": "object"}
    import types

    if origin in (typing.Union, types.UnionType):
        arms = [_simple_schema(a) for a in args]
        if any(a is None for a in arms):
            return None
        return {"anyOf": arms}
    return None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _clean(schema: Any) -> Any:
    """Drop pydantic's auto-generated ``title`` keys (noise in the prompt); keep a property
    called "title"."""
    if isinstance(schema, list):
        return [_clean(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: _clean(v) for k, v in value.items()}
        else:
            out[key] = _clean(value)
    return out


def _first_paragraph(doc: str | None) -> str:
    import inspect

    text = inspect.cleandoc(doc or "")
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.lower() in ("args:", "arguments:", "parameters:", "returns:", "raises:") \
                or stripped.startswith(":param"):
            if lines:
                break
            continue
        lines.append(stripped)
    return " ".join(lines)


_SPHINX_RE = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_GOOGLE_RE = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _param_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from Google-style ``Args:`` sections and Sphinx ``:param x:`` lines."""
    out: dict[str, str] = {}
    section = False
    current: str | None = None
    indent = 0
    for line in doc.splitlines():
        stripped = line.strip()
        match = _SPHINX_RE.match(stripped)
        if match:
            current = match.group(1)
            out[current] = match.group(2).strip()
            continue
        if stripped.lower() in ("args:", "arguments:", "parameters:"):
            section, current = True, None
            continue
        if section:
            if not stripped:
                continue
            this_indent = len(line) - len(line.lstrip())
            if stripped.endswith(":") and this_indent == 0:  # the next section
                section, current = False, None
                continue
            match = _GOOGLE_RE.match(stripped)
            if match and (current is None or this_indent <= indent):
                current, indent = match.group(1), this_indent
                out[current] = match.group(2).strip()
            elif current is not None:
                out[current] = f"{out[current]} {stripped}".strip()
        elif current is not None and stripped and not stripped.startswith(":"):
            out[current] = f"{out[current]} {stripped}"
        else:
            current = None
    return out


# -- tool_choice, parallel_tool_calls, messages ----------------------------------------------------


def normalize_tool_choice(choice: Any, tools: list[Tool] | None) -> str | None:
    """None, "auto", "none", "required" or the name of one of ``tools``."""
    if choice is None:
        return None
    name: Any = choice
    if isinstance(choice, dict):
        function = choice.get("function") if choice.get("type") == "function" else None
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if not isinstance(name, str):
            raise _bad("tool_choice", f"{choice!r} names no tool",
                       'Use "auto", "none", "required", a tool name, or '
                       '{"type": "function", "function": {"name": ...}}.')
    elif isinstance(choice, type) or callable(choice):
        name = getattr(choice, "__name__", None)
    if not isinstance(name, str):
        raise _bad("tool_choice", f"must be a string, got {type(choice).__name__}",
                   'Use "auto", "none", "required" or the name of one of the tools.')
    if not tools:
        if name == "none" or name == "auto":
            return name
        raise _bad("tool_choice", f"{name!r} was given but tools= is empty", "Pass tools=[...] as well.")
    if name in TOOL_CHOICES and not isinstance(choice, dict):
        return name
    names = [t.name for t in tools]
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        raise _bad("tool_choice", f"{name!r} is not one of the tools ({', '.join(names)})",
                   f"Did you mean {close[0]!r}?" if close else 'Use "auto", "none", "required" or a tool name.')
    return name


def check_parallel(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _bad("parallel_tool_calls", f"must be True or False, got {value!r}",
               "Pass parallel_tool_calls=False to ask for at most one call per turn.")


def check_tool_message(message: dict[str, Any], i: int) -> None:
    """A ``role: "tool"`` message must name the call it answers."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"messages[{i}].tool_call_id", "is missing" if call_id is None else f"must be a non-empty "
                   f"string, got {call_id!r}", "Copy the id of the tool call it answers: "
                   '{"role": "tool", "tool_call_id": call.id, "content": "..."}.')


def check_assistant_tool_calls(calls: Any, i: int) -> None:
    if not isinstance(calls, list):
        raise _bad(f"messages[{i}].tool_calls", f"must be a list, got {type(calls).__name__}",
                   "Append result.to_message() to the conversation instead of building it by hand.")
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(f"messages[{i}].tool_calls[{j}]", "must be {\"id\", \"type\": \"function\", \"function\": "
                       "{\"name\", \"arguments\"}}", "Append result.to_message() instead of building it by hand.")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise _bad(f"messages[{i}].tool_calls[{j}].id", "is missing",
                       "Every tool call needs the id its tool result names.")


def tool_result_text(content: Any) -> str:
    """A tool message's content as text (strings kept; parts joined; anything else as JSON)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if texts:
            return "\n".join(texts)
    if content is None:
        return ""
    return json.dumps(content, ensure_ascii=False, default=str)


def tool_names_by_id(messages: list[dict[str, Any]]) -> dict[str, str]:
    """tool_call_id -> function name, from the assistant messages (Gemini's functionResponse
    needs the name; a tool message only carries the id)."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[str(call.get("id"))] = str(call["function"].get("name") or "")
    return names


def arguments_object(arguments: Any) -> Any:
    """The JSON arguments of a history tool call as an object (Anthropic, Gemini and Bedrock
    send objects); text that is not JSON is kept under "arguments" rather than lost."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}
