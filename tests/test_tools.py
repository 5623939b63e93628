"""tools=, tool_choice=, parallel_tool_calls=: normalising every accepted form, bad input refused
before any request, and the run_tools loop against a scripted loopback OpenAI-compatible server
(the real-server runs are in test_tools_servers.py)."""

from __future__ import annotations

import asyncio
import enum
import json
import threading
import time
from typing import Literal

import pytest
from fault_server import FaultServer, Step, sse

from gen_ai.errors import APITimeoutError, InvalidInputError, ToolCallError
from gen_ai.factory import create_client
from gen_ai.tools import Tool, normalize_tool_choice, normalize_tools

KEY = "sk-test-SECRET-0123456789"
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
       "rkJggg==")


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.C, days: int = 1) -> str:
    """Get the weather forecast for a city.

    Longer text that is not part of the description.

    Args:
        city: The city's name, e.g. Paris.
        unit: Temperature unit.
        days: How many days
            to forecast.
    """
    return f"{city}: sunny"


def search(query: str, tags: list[str] | None = None, mode: Literal["fast", "deep"] = "fast") -> dict:
    """Search the notes.

    :param query: what to look for
    :param mode: how hard to look
    """
    return {"hits": [query]}


class Opaque:
    pass


WEATHER_DICT = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


# -- normalising ---------------------------------------------------------------------------------


def test_function_schema_from_signature_hints_and_docstring():
    (tool,) = normalize_tools([get_weather])
    assert tool.name == "get_weather" and tool.function is get_weather
    assert tool.description == "Get the weather forecast for a city."
    params = tool.parameters
    assert params["type"] == "object" and params["required"] == ["city"]
    props = params["properties"]
    assert props["city"]["type"] == "string" and props["city"]["description"] == "The city's name, e.g. Paris."
    assert props["days"]["type"] == "integer" and props["days"]["default"] == 1
    assert props["days"]["description"] == "How many days to forecast."
    assert "title" not in props["city"]
    text = json.dumps(params)
    assert "celsius" in text and "fahrenheit" in text  # the enum, however pydantic places it


def test_function_schema_sphinx_docstring_optional_and_literal():
    (tool,) = normalize_tools([search])
    props = tool.parameters["properties"]
    assert tool.description == "Search the notes."
    assert props["query"]["description"] == "what to look for"
    assert props["mode"]["enum"] == ["fast", "deep"] and props["mode"]["default"] == "fast"
    assert tool.parameters["required"] == ["query"]
    assert tool.parse({"query": "x"}) == {"query": "x", "tags": None, "mode": "fast"}
    with pytest.raises(ValueError):
        tool.parse({"query": "x", "mode": "slow"})


def test_function_schema_without_pydantic(monkeypatch):
    import builtins

    import gen_ai.tools as tools_module

    real_import = builtins.__import__

    def no_pydantic(name, *args, **kwargs):
        if name == "pydantic" or name.startswith("pydantic."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydantic)
    monkeypatch.setattr(tools_module, "_CACHE", {})

    def add(a: int, b: float = 2.0, flags: list[bool] | None = None) -> float:
        """Add numbers."""
        return a + b

    (tool,) = normalize_tools([add])
    assert tool.parameters == {"type": "object", "required": ["a"], "properties": {
        "a": {"type": "integer"}, "b": {"type": "number", "default": 2.0},
        "flags": {"anyOf": [{"type": "array", "items": {"type": "boolean"}}, {"type": "null"}], "default": None}}}
    assert tool.validator is None
    with pytest.raises(ValueError, match="missing required argument: a"):
        tool.parse({"b": 1})


def test_pydantic_model_and_dict_tools():
    import pydantic

    class Person(pydantic.BaseModel):
        """A person found in the text."""

        name: str
        age: int

    model_tool, dict_tool, bare = normalize_tools([Person, WEATHER_DICT, {"name": "ping"}])
    assert model_tool.name == "Person" and model_tool.function is None
    assert model_tool.description == "A person found in the text."
    assert model_tool.parameters["required"] == ["name", "age"]
    assert model_tool.parse({"name": "Ada", "age": 36}) == Person(name="Ada", age=36)
    assert dict_tool.openai == WEATHER_DICT
    assert bare.parameters == {"type": "object", "properties": {}}
    # Cached: a batch inspects each function once.
    assert normalize_tools([get_weather])[0] is normalize_tools([get_weather])[0]


@pytest.mark.parametrize("tools,match", [
    ([{"type": "function", "function": {"description": "no name"}}], r"tools\[0\]\.name: is missing"),
    ([{"type": "function", "function": {"name": "has space"}}], "letters, digits"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                    "properties": {"x": {"type": "strin"}}}}}],
     "not a valid JSON schema"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}], "must describe an object"),
    ([{"type": "code_interpreter"}], "only function tools"),
    ([get_weather, WEATHER_DICT], "already the name"),
    ([42], "is not a tool"),
    (get_weather, "must be a list"),
])
def test_bad_tools(tools, match):
    with pytest.raises(InvalidInputError, match=match):
        normalize_tools(tools)


def test_functions_that_cannot_be_described():
    def untyped(city):
        return city

    def star(*cities: str) -> str:
        return ""

    def opaque(thing: Opaque) -> str:
        return ""

    with pytest.raises(InvalidInputError, match="no type hint"):
        normalize_tools([untyped])
    with pytest.raises(InvalidInputError, match=r"\*cities"):
        normalize_tools([star])
    with pytest.raises(InvalidInputError, match="cannot describe"):
        normalize_tools([opaque])


def test_tool_choice_forms():
    tools = normalize_tools([get_weather, search])
    assert normalize_tool_choice("auto", tools) == "auto"
    assert normalize_tool_choice("required", tools) == "required"
    assert normalize_tool_choice("search", tools) == "search"
    assert normalize_tool_choice({"type": "function", "function": {"name": "search"}}, tools) == "search"
    assert normalize_tool_choice(get_weather, tools) == "get_weather"
    with pytest.raises(InvalidInputError, match="Did you mean 'get_weather'"):
        normalize_tool_choice("get_wether", tools)
    with pytest.raises(InvalidInputError, match="tools= is empty"):
        normalize_tool_choice("search", None)


def test_bad_input_is_refused_before_any_request(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY)
    user = [{"role": "user", "content": "hi"}]
    cases = [
        (dict(tools=[{"function": {}}]), "name"),
        (dict(tools=[get_weather], tool_choice="nope"), "tool_choice"),
        (dict(tools=[get_weather], parallel_tool_calls="yes"), "parallel_tool_calls"),
    ]
    for kwargs, field in cases:
        for call in (lambda: client.run_chat_completions(user, **kwargs),
                     lambda: list(client.run_chat_completions_stream(user, **kwargs)),
                     lambda: asyncio.run(client.arun_chat_completions(user, **kwargs)),
                     lambda: client.run_vision_request(user, [PNG], **kwargs)):
            with pytest.raises(InvalidInputError) as info:
                call()
            assert field in info.value.field
        # A batch reports bad input per item, as for every other argument.
        results = client.run_chat_completions_batch([user], **kwargs)
        assert results == [None] and field in results.errors[0]["field"]
    with pytest.raises(InvalidInputError, match="tool_call_id"):
        client.run_chat_completions(user + [{"role": "tool", "content": "x"}])
    with pytest.raises(InvalidInputError, match=r"tool_calls\[0\]"):
        client.run_chat_completions(user + [{"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}])
    with pytest.raises(InvalidInputError, match="only for chat"):
        client.run_completions("x", tools=[get_weather])
    assert fault_server.requests == []


# -- OpenAI-shaped wire bodies -------------------------------------------------------------------


def tool_call_body(*calls: tuple[str, str, dict | str], text: str | None = None,
                   finish_reason: str = "tool_calls") -> dict:
    return {
        "id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None, "message": {
            "role": "assistant", "content": text, "refusal": None,
            "tool_calls": [{"id": cid, "type": "function", "function": {
                "name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                for cid, name, args in calls]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def answer_body(text: str) -> dict:
    return {"id": "chatcmpl-a", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text, "refusal": None}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}}


def test_request_body_and_result(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY)
    fault_server.add(200, tool_call_body(("call_1", "get_weather", {"city": "Paris"})))
    result = client.run_chat_completions([{"role": "user", "content": "Weather?"}], tools=[get_weather],
                                         tool_choice="get_weather", parallel_tool_calls=False)
    body = fault_server.requests[0].json()
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert result == "" and result.finish_reason == "tool_calls"
    (call,) = result.tool_calls
    assert (call.id, call.name, call.parsed_arguments) == ("call_1", "get_weather", {"city": "Paris"})
    assert result.to_message() == {"role": "assistant", "content": "", "tool_calls": [call.to_dict()]}


def test_finish_reason_stop_with_tool_calls_is_normalised(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m")
    fault_server.add(200, tool_call_body(("c", "get_weather", {"city": "Rome"}), finish_reason="stop"))
    assert client.run_chat_completions([{"role": "user", "content": "x"}], tools=[get_weather]).finish_reason \
        == "tool_calls"


def stream_tool_chunks(fragments: list[str], *, name: str = "get_weather", finish: str | None = "tool_calls",
                       with_ids_on_every_chunk: bool = False) -> list[bytes]:
    out = []
    for i, fragment in enumerate(fragments):
        call: dict = {"index": 0, "function": {"arguments": fragment}}
        if i == 0 or with_ids_on_every_chunk:
            call.update({"id": "call_s", "type": "function"})
            call["function"]["name"] = name
        out.append(sse({"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m",
                        "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}))
    if finish:
        out.append(sse({"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
        out.append(b"data: [DONE]\n\n")
    return out


def test_stream_over_http_split_at_awkward_boundaries(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m")
    body = b"".join(stream_tool_chunks(['{"ci', 'ty": "Pa', 'ris"}']))
    pieces = [body[i:i + 7] for i in range(0, len(body), 7)]  # cuts through JSON and SSE framing
    fault_server.add(200, chunks=pieces)
    stream = client.run_chat_completions_stream([{"role": "user", "content": "x"}], tools=[get_weather])
    assert list(stream) == []
    assert stream.tool_calls[0].parsed_arguments == {"city": "Paris"}
    assert stream.finish_reason == "tool_calls"
    assert stream.to_result().to_message()["tool_calls"][0]["id"] == "call_s"
    fault_server.add(200, chunks=pieces)
    stream = client.run_chat_completions_stream([{"role": "user", "content": "x"}], tools=[get_weather])
    events = list(stream.events())
    assert [e.type for e in events] == ["tool_call_start"] + ["tool_call_delta"] * 3 + ["done"]
    assert events[-1].tool_calls == stream.tool_calls and events[-1].finish_reason == "tool_calls"


def test_async_stream_events(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m")
    fault_server.add(200, chunks=stream_tool_chunks(['{"city":', ' "Oslo"}'], with_ids_on_every_chunk=True))

    async def main():
        stream = client.arun_chat_completions_stream([{"role": "user", "content": "x"}], tools=[get_weather])
        return [e async for e in stream.events()], stream

    events, stream = asyncio.run(main())
    assert [e.type for e in events] == ["tool_call_start", "tool_call_delta", "tool_call_delta", "done"]
    assert len(stream.tool_calls) == 1 and stream.tool_calls[0].parsed_arguments == {"city": "Oslo"}


def test_stream_ending_mid_arguments_raises_truncation(fault_server):
    from gen_ai.errors import StreamTruncatedError

    client = create_client(endpoint=fault_server.url, model_name="m", max_retries=0)
    fault_server.add(200, chunks=stream_tool_chunks(['{"city": "Pa'], finish=None))
    with pytest.raises(StreamTruncatedError):
        list(client.run_chat_completions_stream([{"role": "user", "content": "x"}], tools=[get_weather]))
    fault_server.add(200, chunks=stream_tool_chunks(['{"city": "Pa'], finish="length"))
    with pytest.raises(StreamTruncatedError, match="get_weather"):
        list(client.run_chat_completions_stream([{"role": "user", "content": "x"}], tools=[get_weather]))


# -- run_tools -----------------------------------------------------------------------------------


def test_run_tools_loop_transcript_and_usage(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY)
    seen = []

    def weather(city: str) -> dict:
        """Weather."""
        seen.append(city)
        return {"city": city, "sky": "sunny"}

    fault_server.add(200, tool_call_body(("c1", "weather", {"city": "Paris"})))
    fault_server.add(200, answer_body("Sunny in Paris."))
    result = client.run_tools([{"role": "user", "content": "Weather in Paris?"}], tools=[weather],
                              tool_choice="weather", max_tokens=32)
    assert result == "Sunny in Paris." and seen == ["Paris"] and result.turns == 2
    assert result.total_usage.total_tokens == 38
    assert [m["role"] for m in result.transcript] == ["user", "assistant", "tool", "assistant"]
    assert result.transcript[2] == {"role": "tool", "tool_call_id": "c1", "content": '{"city": "Paris", "sky": "sunny"}'}
    first, second = (r.json() for r in fault_server.requests)
    assert first["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert second["tool_choice"] == "auto"  # a forced choice applies to the first turn only
    assert second["messages"][1:] == result.transcript[1:3]
    assert first["max_tokens"] == 32 == second["max_tokens"]


def test_run_tools_reports_errors_to_the_model(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY)

    def boom(x: int) -> str:
        """Fails."""
        raise RuntimeError(f"database password rejected for key {KEY}")

    fault_server.add(200, tool_call_body(("a", "boom", {"x": 1}), ("b", "nosuch", {}), ("c", "boom", '{"x": '),
                                         ("d", "boom", {"x": "not a number"})))
    fault_server.add(200, answer_body("Sorry."))
    result = client.run_tools([{"role": "user", "content": "go"}], tools=[boom])
    contents = {m["tool_call_id"]: m["content"] for m in result.transcript if m["role"] == "tool"}
    assert contents["a"].startswith("Error: RuntimeError: database password rejected") and KEY not in contents["a"]
    assert "***" in contents["a"] and "Traceback" not in contents["a"]
    assert "no tool named 'nosuch'" in contents["b"] and "boom" in contents["b"]
    assert "not valid JSON" in contents["c"]
    assert contents["d"].startswith("Error: invalid arguments for 'boom'")
    sent = json.dumps(fault_server.requests[1].json())
    assert KEY not in sent
    # raise_errors=True raises instead of reporting.
    fault_server.add(200, tool_call_body(("a", "boom", {"x": 1})))
    with pytest.raises(ToolCallError, match="boom") as info:
        client.run_tools([{"role": "user", "content": "go"}], tools=[boom], raise_errors=True)
    assert KEY not in str(info.value)


def test_run_tools_runs_parallel_calls_concurrently(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m")
    active, peak, lock = [0], [0], threading.Lock()

    def slow(n: int) -> int:
        """Sleeps."""
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return n * 2

    async def aslow(n: int) -> int:
        """Sleeps, async."""
        await asyncio.sleep(0.3)
        return n * 3

    fault_server.add(200, tool_call_body(*[(f"c{i}", "slow", {"n": i}) for i in range(4)]))
    fault_server.add(200, answer_body("done"))
    start = time.monotonic()
    result = client.run_tools([{"role": "user", "content": "go"}], tools=[slow])
    assert time.monotonic() - start < 1.0 and peak[0] == 4
    assert [m["content"] for m in result.transcript if m["role"] == "tool"] == ["0", "2", "4", "6"]

    fault_server.add(200, tool_call_body(("a", "aslow", {"n": 1}), ("b", "slow", {"n": 2})))
    fault_server.add(200, answer_body("done"))

    async def main():
        return await client.arun_tools([{"role": "user", "content": "go"}], tools=[aslow, slow])

    start = time.monotonic()
    result = asyncio.run(main())
    assert time.monotonic() - start < 1.0
    assert [m["content"] for m in result.transcript if m["role"] == "tool"] == ["3", "4"]
    # A sync run_tools runs an async tool too.
    fault_server.add(200, tool_call_body(("a", "aslow", {"n": 5})))
    fault_server.add(200, answer_body("done"))
    result = client.run_tools([{"role": "user", "content": "go"}], tools=[aslow])
    assert result.tool_runs[0].output == 15


def test_run_tools_max_turns_and_timeout(fault_server):
    client = create_client(endpoint=fault_server.url, model_name="m")

    def again() -> str:
        """Loops."""
        return "again"

    fault_server.default = Step(200, tool_call_body(("x", "again", {})))
    result = client.run_tools([{"role": "user", "content": "go"}], tools=[again], max_turns=3)
    assert result.turns == 3 and result.max_turns_reached and len(result.tool_runs) == 2
    assert [r.json().get("tool_choice") for r in fault_server.requests] == [None, None, "none"]

    def slow() -> str:
        """Slow."""
        time.sleep(1.5)
        return "late"

    fault_server.default = Step(200, tool_call_body(("x", "slow", {})))
    start = time.monotonic()
    with pytest.raises(APITimeoutError, match="run_tools did not finish within timeout=0.5s"):
        client.run_tools([{"role": "user", "content": "go"}], tools=[slow], timeout=0.5)
    assert time.monotonic() - start < 1.2


def test_run_tools_answer_tool_ends_the_loop(fault_server):
    import pydantic

    class Answer(pydantic.BaseModel):
        city: str
        temperature: float

    client = create_client(endpoint=fault_server.url, model_name="m")
    fault_server.add(200, tool_call_body(("f", "Answer", {"city": "Lima", "temperature": 19.5})))
    result = client.run_tools([{"role": "user", "content": "go"}], tools=[get_weather, Answer])
    assert result.parsed == Answer(city="Lima", temperature=19.5) and result.turns == 1


def test_run_tools_bad_arguments():
    client = create_client(endpoint="http://127.0.0.1:9/v1", model_name="m")
    with pytest.raises(InvalidInputError, match="max_turns"):
        client.run_tools([{"role": "user", "content": "x"}], tools=[get_weather], max_turns=0)
    with pytest.raises(InvalidInputError, match="at least one tool"):
        client.run_tools([{"role": "user", "content": "x"}], tools=[])
    assert isinstance(normalize_tools([Tool("t", "", {"type": "object"})])[0], Tool)


@pytest.fixture
def fault_server():
    server = FaultServer()
    yield server
    server.close()
