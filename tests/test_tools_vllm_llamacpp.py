"""Tool calls on vLLM (CPU) and llama.cpp's own server (xllamacpp), SmolLM2-135M, what each does.

vLLM takes tool_choice only when started with ``--enable-auto-tool-choice --tool-call-parser``:
without them the 400 must reach the user with vLLM's message and a suggestion; with the
``hermes`` parser a streamed ``"required"`` call arrives as ``tool_calls`` chunks whose later
fragments carry no id or name (the shape litellm mis-assembles), which gen_ai must merge.

llama.cpp's server (Jinja on by default) ignores tools when the model's template cannot render
them (SmolLM2's: ``chat_template_caps.supports_tools`` is false) and answers in text; with a
tool-aware template (tests/hermes_tools.jinja) it renders the tools and a history with tool
turns into the prompt.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from servers import start_vllm, start_xllamacpp

from gen_ai.errors import BadRequestError, InvalidToolArgumentsError
from gen_ai.factory import create_client
from gen_ai.types import Call

ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
HERE = Path(__file__).resolve().parent


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: The name of the city.
    """
    return f"Sunny in {city}."


# -- vLLM ------------------------------------------------------------------------------------------


@pytest.mark.heavy
def test_vllm_without_a_tool_parser_refuses_tool_choice(vllm_server):
    client = create_client(endpoint=vllm_server.url, model_name=vllm_server.model, max_retries=0)
    # No tool_choice means "auto" to vLLM: refused as well.
    for choice in (None, "auto", "required", "get_weather"):
        with pytest.raises(BadRequestError) as info:
            client.run_chat_completions(ASK, tools=[get_weather], tool_choice=choice, max_tokens=16)
        error = info.value
        assert error.status_code == 400 and "tool-call-parser" in error.message
        assert "--enable-auto-tool-choice" in error.suggestion
    # "none" is taken: the tools are not used.
    result = client.run_chat_completions(ASK, tools=[get_weather], tool_choice="none", max_tokens=8)
    assert isinstance(result.text, str) and result.tool_calls == []


@pytest.fixture(scope="module")
def vllm_tools(tmp_path_factory):
    with start_vllm(tmp_path_factory.mktemp("vllm-tools"),
                    ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]) as handle:
        yield handle


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}


@pytest.mark.heavy
def test_vllm_streamed_required_call_is_assembled(vllm_tools):
    from gen_ai.errors import StreamTruncatedError

    client = create_client(endpoint=vllm_tools.url, model_name=vllm_tools.model, timeout=120, max_retries=0)
    body = {"model": vllm_tools.model, "messages": ASK, "max_tokens": 200, "temperature": 0, "stream": True,
            "tools": [WEATHER_TOOL], "tool_choice": "required"}
    request = urllib.request.Request(f"{vllm_tools.url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        raw = response.read().decode()
    fragments = [call for line in raw.splitlines() if line.startswith("data: {")
                 for choice in json.loads(line[6:]).get("choices") or ()
                 for call in (choice.get("delta") or {}).get("tool_calls") or ()]
    assert len(fragments) >= 2, raw[:2000]
    assert fragments[0].get("id") and fragments[0]["function"].get("name") == "get_weather"
    assert any(not f.get("id") for f in fragments[1:]), "later fragments carry no id"
    # What gen_ai must assemble from this very stream: the fragments merged by their wire index,
    # none dropped for lacking an id (fed to the codec's stream parser, split at every 97 bytes).
    expected: dict[int, list[str]] = {}
    for f in fragments:
        expected.setdefault(f.get("index", 0), []).append((f.get("function") or {}).get("arguments") or "")
    parser = client.codec.stream_parser(Call("chat", messages=ASK, stream=True), {"content-type": "text/event-stream"})
    data = raw.encode()
    for i in range(0, len(data), 97):
        parser.feed(data[i:i + 97])
    parser.close()
    assert [c.arguments for c in parser.tool_calls] == ["".join(expected[k]) for k in sorted(expected)]

    # The same through the client, live (the model may write one call or several: it is sampled
    # again, and batch order on the CPU changes the arithmetic).
    # Sampled inside "required", the model sometimes writes on until max_tokens; gen_ai then
    # raises the truncation error (seen at 200 tokens, 256 characters of arguments), so a larger
    # budget is tried before the assembled call is checked.
    for budget in (200, 600):
        stream = client.run_chat_completions_stream(ASK, tools=[WEATHER_TOOL], tool_choice="required",
                                                    max_tokens=budget)
        try:
            events = list(stream.events())
            break
        except StreamTruncatedError as exc:
            assert "get_weather" in exc.message and "finish_reason='length'" in exc.message
            assert "max_tokens" in exc.suggestion
    else:
        events = []
    if events:
        assert stream.tool_calls, "no tool call assembled"
        call = stream.tool_calls[0]
        assert call.name == "get_weather" and all(c.id for c in stream.tool_calls)
        # What this 135M model writes inside vLLM's "required" constraint is often not the object
        # the schema asks for (seen: a JSON list of made-up objects); gen_ai hands it over as sent
        # and says what is wrong when asked to parse it.
        try:
            assert isinstance(call.parsed_arguments.get("city", ""), str)
        except InvalidToolArgumentsError as exc:
            assert "get_weather" in exc.message
        assert events[-1].type == "done" and stream.finish_reason == "tool_calls"
        assert [e.type for e in events].count("tool_call_start") == len(stream.tool_calls)
    # Cut off by max_tokens in the middle of the arguments: the truncation error, not a half call.
    # (vLLM sends no fragment until it has parsed the name, so very short limits give no call.)
    raised = []
    for limit in (12, 25, 40):
        stream = client.run_chat_completions_stream(ASK, tools=[WEATHER_TOOL], tool_choice="required",
                                                    max_tokens=limit)
        try:
            list(stream)
        except StreamTruncatedError as exc:
            assert "get_weather" in exc.message and "length" in exc.message
            raised.append(limit)
        else:
            assert stream.finish_reason != "length" or not stream.tool_calls
    assert raised, "no cut-off call was seen"


# -- llama.cpp's server ------------------------------------------------------------------------------


def test_llamacpp_ignores_tools_with_a_template_that_cannot_render_them(xllamacpp_server):
    with urllib.request.urlopen(xllamacpp_server.url[: -len("/v1")] + "/props", timeout=10) as response:
        caps = json.loads(response.read())["chat_template_caps"]
    assert caps["supports_tools"] is False
    client = create_client(endpoint=xllamacpp_server.url, model_name=xllamacpp_server.model, max_retries=0)
    for choice in ("auto", "required", "get_weather"):  # an object tool_choice is accepted too
        result = client.run_chat_completions(ASK, tools=[get_weather], tool_choice=choice, max_tokens=12)
        assert result.text and result.tool_calls == [] and result.finish_reason != "tool_calls"


def test_llamacpp_with_a_tool_aware_template_takes_tool_history(tmp_path):
    template = (HERE / "hermes_tools.jinja").read_text()
    with start_xllamacpp(tmp_path, slots=1, extra={"chat_template": template}) as handle:
        with urllib.request.urlopen(handle.url[: -len("/v1")] + "/props", timeout=10) as response:
            caps = json.loads(response.read())["chat_template_caps"]
        assert caps["supports_tools"] is True and caps["supports_tool_calls"] is True
        client = create_client(endpoint=handle.url, model_name=handle.model, max_retries=0)
        first = client.run_chat_completions(ASK, tools=[get_weather], max_tokens=12)
        history = ASK + [
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                  "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny in Paris."}]
        second = client.run_chat_completions(history, tools=[get_weather], max_tokens=12)
        assert isinstance(second.text, str)
        # The tools and the tool turns reach the prompt: it grows by far more than the words added.
        assert second.usage.prompt_tokens > first.usage.prompt_tokens + 20
        assert first.usage.prompt_tokens > 60  # the tool list is in the prompt
