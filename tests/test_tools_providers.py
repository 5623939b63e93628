"""Tools on every provider: request bodies (tools, tool_choice, parallel_tool_calls and a history
with tool turns) validated against each provider's spec, tool calls parsed from loopback servers
that speak each protocol, streamed tool calls split at every byte boundary, and run_tools across
providers."""

from __future__ import annotations

import json
from typing import Any

import pytest
import test_provider_anthropic as ant_t
import test_provider_bedrock as bed_t
import test_provider_gemini as gem_t
from conftest import spec_validator
from fault_server import FaultServer

from gen_ai.errors import InvalidInputError
from gen_ai.factory import create_client
from gen_ai.tools import normalize_tools
from gen_ai.types import Call, ToolCall

service_model = bed_t.service_model
proto = gem_t.proto
_no_ambient_aws = bed_t._no_ambient_aws


def get_weather(city: str, unit: str = "celsius") -> str:
    """Get the weather for a city.

    Args:
        city: The city.
        unit: celsius or fahrenheit.
    """
    return f"sunny in {city}"


def get_time(zone: str) -> str:
    """The time in a time zone."""
    return "12:00"


TOOLS = normalize_tools([get_weather, get_time])
CALL_1 = ToolCall("call_1", "get_weather", '{"city": "Paris"}', 0)
CALL_2 = ToolCall("call_2", "get_time", '{"zone": "CET"}', 1)
HISTORY = [
    {"role": "system", "content": "Use the tools."},
    {"role": "user", "content": "Weather and time in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL_1.to_dict(), CALL_2.to_dict()]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny", "temp": 21}'},
    {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
    {"role": "assistant", "content": "Sunny, and it is noon.", "tool_calls": [CALL_1.to_dict()]},
    {"role": "tool", "tool_call_id": "call_1", "content": "still sunny"},
    {"role": "user", "content": "Thanks"},
]
CHOICES = [None, "auto", "none", "required", "get_weather"]


def calls_for(messages: list[dict[str, Any]] = HISTORY) -> list[Call]:
    out = []
    for choice in CHOICES:
        for parallel in (None, False):
            for stream in (False, True):
                out.append(Call("chat", messages=messages, max_tokens=16, tools=TOOLS, tool_choice=choice,
                                parallel_tool_calls=parallel, stream=stream))
    return out


# -- OpenAI / Azure ------------------------------------------------------------------------------


def test_openai_bodies_validate(openai_spec):
    validator = spec_validator(openai_spec, "CreateChatCompletionRequest")
    codec = create_client("openai", endpoint="http://x/v1", model_name="gpt-4o-mini", api_key="k").codec
    azure = create_client("azure", endpoint="https://r.openai.azure.com", deployment="d", api_key="k").codec
    for call in calls_for():
        for c in (codec, azure):
            body = json.loads(c.build_request(call).body)
            assert [e.message for e in validator.iter_errors(body)] == [], body
    body = json.loads(codec.build_request(calls_for()[-1]).body)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["messages"] == HISTORY  # passed through as given
    # The oracle is not vacuous.
    assert list(validator.iter_errors({**body, "tool_choice": {"type": "function"}}))


def test_openai_tool_choice_as_string_fallback():
    """llama.cpp's server refuses an object tool_choice; the codec learns to send "required"
    with only the named tool, which is the same request."""
    server = FaultServer()
    try:
        server.add(500, {"error": {"code": 500, "message": "[json.exception.type_error.302] type must be string, "
                                   "but is object", "type": "server_error"}})
        server.add(200, {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
                                                                    "tool_calls": [CALL_1.to_dict()]}}]})
        client = create_client(endpoint=server.url, model_name="m", max_retries=0)
        result = client.run_chat_completions(HISTORY[:2], tools=[get_weather, get_time], tool_choice="get_weather")
        assert result.tool_calls == [CALL_1]
        first, second = (r.json() for r in server.requests)
        assert first["tool_choice"]["function"]["name"] == "get_weather"
        assert second["tool_choice"] == "required" and [t["function"]["name"] for t in second["tools"]] == \
            ["get_weather"]
        assert client._state.tool_choice_string
    finally:
        server.close()


def test_openai_stream_chunks_validate(openai_spec):
    from test_tools import stream_tool_chunks

    validator = spec_validator(openai_spec, "CreateChatCompletionStreamResponse")
    for chunk in stream_tool_chunks(['{"city"', ': "Paris"}']):
        if chunk.startswith(b"data: {"):
            assert [e.message for e in validator.iter_errors(json.loads(chunk[6:]))] == []


# -- Anthropic -----------------------------------------------------------------------------------


def test_anthropic_bodies_conform():
    codec = create_client("anthropic", api_key="k", model_name="claude-x", sampling_params=False).codec
    for call in calls_for():
        body = json.loads(codec.build_request(call).body)
        assert ant_t.conform(body) == [], body
    body = json.loads(codec.build_request(Call("chat", messages=HISTORY, tools=TOOLS, tool_choice="get_weather",
                                               parallel_tool_calls=False)).body)
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert body["tools"][0] == {"name": "get_weather", "description": "Get the weather for a city.",
                                "input_schema": TOOLS[0].parameters}
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"zone": "CET"}}]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": '{"sky": "sunny", "temp": 21}'},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "12:00"}]
    assert body["messages"][3]["content"][0] == {"type": "text", "text": "Sunny, and it is noon."}
    choices = {c: json.loads(codec.build_request(Call("chat", messages=HISTORY[:2], tools=TOOLS,
                                                      tool_choice=c)).body).get("tool_choice")
               for c in CHOICES}
    assert choices == {None: None, "auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"},
                       "get_weather": {"type": "tool", "name": "get_weather"}}


def anthropic_tool_events() -> list[bytes]:
    start = ant_t.message_body("", input_tokens=30, output_tokens=1)
    start["content"], start["stop_reason"] = [], None
    e = ant_t.event
    return [
        e("message_start", {"type": "message_start", "message": start}),
        e("content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}),
        e("content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": "Checking."}}),
        e("content_block_stop", {"type": "content_block_stop", "index": 0}),
        e("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
        e("content_block_delta", {"type": "content_block_delta", "index": 1,
                                  "delta": {"type": "input_json_delta", "partial_json": ""}}),
        e("content_block_delta", {"type": "content_block_delta", "index": 1,
                                  "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}}),
        e("content_block_delta", {"type": "content_block_delta", "index": 1,
                                  "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}}),
        e("content_block_stop", {"type": "content_block_stop", "index": 1}),
        e("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}}),
        e("content_block_delta", {"type": "content_block_delta", "index": 2,
                                  "delta": {"type": "input_json_delta", "partial_json": '{"zone": "CET"}'}}),
        e("content_block_stop", {"type": "content_block_stop", "index": 2}),
        e("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                            "usage": {"output_tokens": 40}}),
        e("message_stop", {"type": "message_stop"}),
    ]


ANT_EXPECTED = [ToolCall("toolu_01", "get_weather", '{"city": "Paris"}', 0),
                ToolCall("toolu_02", "get_time", '{"zone": "CET"}', 1)]


def test_anthropic_fixture_events_match_the_sdk_models():
    import pydantic
    from anthropic.types import Message, RawMessageStreamEvent

    adapter = pydantic.TypeAdapter(RawMessageStreamEvent)
    for obj in ant_t.parse_events(anthropic_tool_events()):
        adapter.validate_python(obj)
    Message.model_validate(anthropic_tool_message())


def anthropic_tool_message() -> dict[str, Any]:
    body = ant_t.message_body("Checking.", stop_reason="tool_use")
    body["content"].append({"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}})
    return body


def test_anthropic_stream_split_at_every_byte_boundary():
    from gen_ai.providers.anthropic import AnthropicStreamParser

    body = b"".join(anthropic_tool_events())
    for cut in range(1, len(body), 3):
        parser = AnthropicStreamParser("anthropic")
        text = parser.feed(body[:cut]) + parser.feed(body[cut:])
        parser.close()
        assert text == ["Checking."] and parser.tool_calls == ANT_EXPECTED, cut
        assert parser.finish_reason == "tool_calls"


def test_anthropic_over_http(tmp_path):
    server = FaultServer()
    try:
        client = create_client("anthropic", api_key="k", endpoint=server.url, model_name="claude-x")
        server.add(200, anthropic_tool_message())
        result = client.run_chat_completions(HISTORY[:2], tools=[get_weather], tool_choice="required")
        assert result == "Checking." and result.finish_reason == "tool_calls"
        assert result.tool_calls == [ToolCall("toolu_01", "get_weather", '{"city": "Paris"}', 0)]
        body = b"".join(anthropic_tool_events())
        server.add(200, chunks=[body[i:i + 11] for i in range(0, len(body), 11)])
        stream = client.run_chat_completions_stream(HISTORY[:2], tools=[get_weather, get_time])
        events = list(stream.events())
        assert [e.type for e in events if e.type != "tool_call_delta"] == \
            ["text", "tool_call_start", "tool_call_start", "done"]
        assert stream.tool_calls == ANT_EXPECTED and stream.text == "Checking."
        # to_message() of a result goes back into the next request
        server.add(200, ant_t.message_body("Sunny."))
        follow = client.run_chat_completions(HISTORY[:2] + [stream.to_result().to_message(),
                                                            {"role": "tool", "tool_call_id": "toolu_01", "content": "ok"},
                                                            {"role": "tool", "tool_call_id": "toolu_02", "content": "ok"}],
                                             tools=[get_weather, get_time])
        assert follow == "Sunny."
        sent = server.requests[-1].json()
        assert ant_t.conform({k: v for k, v in sent.items() if k != "temperature"}) == []
        assert sent["messages"][1]["content"][0] == {"type": "text", "text": "Checking."}
        assert sent["messages"][2]["content"][1]["tool_use_id"] == "toolu_02"
    finally:
        server.close()


# -- Gemini --------------------------------------------------------------------------------------


def test_gemini_bodies_conform(proto):
    codec = create_client("gemini", api_key="k", model_name="gemini-x").codec
    for call in calls_for():
        body = json.loads(codec.build_request(call).body)
        assert proto.check(body, "GenerateContentRequest") == [], body
    body = json.loads(codec.build_request(Call("chat", messages=HISTORY, tools=TOOLS, tool_choice="get_weather")).body)
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    decl = body["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "get_weather" and decl["parametersJsonSchema"] == TOOLS[0].parameters
    contents = body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user", "user"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}},
                                    {"functionCall": {"name": "get_time", "args": {"zone": "CET"}, "id": "call_2"}}]
    assert contents[2]["parts"] == [
        {"functionResponse": {"id": "call_1", "name": "get_weather", "response": {"sky": "sunny", "temp": 21}}},
        {"functionResponse": {"id": "call_2", "name": "get_time", "response": {"result": "12:00"}}}]
    # A result whose call is not in the history cannot be named for Gemini.
    with pytest.raises(InvalidInputError, match="no assistant message has a tool call with id 'zz'"):
        codec.build_request(Call("chat", messages=[HISTORY[1], {"role": "tool", "tool_call_id": "zz", "content": "x"}]))


def gemini_call_body() -> dict[str, Any]:
    body = gem_t.generate_body("")
    body["candidates"][0]["content"]["parts"] = [
        {"text": "Let me check."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "get_time", "args": {"zone": "CET"}}}]
    return body


def test_gemini_response_and_stream(proto):
    assert proto.check(gemini_call_body(), "GenerateContentResponse") == []
    server = FaultServer()
    try:
        client = create_client("gemini", api_key="k", endpoint=server.url, model_name="gemini-x")
        server.add(200, gemini_call_body())
        result = client.run_chat_completions(HISTORY[:2], tools=[get_weather, get_time])
        assert result == "Let me check." and result.finish_reason == "tool_calls"
        assert [(c.name, c.parsed_arguments, c.index) for c in result.tool_calls] == \
            [("get_weather", {"city": "Paris"}, 0), ("get_time", {"zone": "CET"}, 1)]
        # Made-up ids are not sent back; the result is matched by name.
        server.add(200, gem_t.generate_body("Sunny."))
        client.run_chat_completions(HISTORY[:2] + [result.to_message()] + [
            {"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in result.tool_calls], tools=[get_weather])
        sent = server.requests[-1].json()
        assert proto.check(sent, "GenerateContentRequest") == []
        # The call's thought signature goes back on its part (to_message() carries it).
        assert sent["contents"][1]["parts"][1] == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                                   "thoughtSignature": "c2ln"}
        assert "thoughtSignature" not in sent["contents"][1]["parts"][2]
        assert sent["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"
        # Streamed: each function call arrives whole in one part; chunk boundaries anywhere.
        events = [gem_t.sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me check."}]},
                                             "index": 0}]}),
                  gem_t.sse({"candidates": [{"content": {"role": "model", "parts": [
                      {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}, "index": 0}]}),
                  gem_t.sse({"candidates": [{"content": {"role": "model", "parts": [
                      {"functionCall": {"name": "get_time", "args": {"zone": "CET"}}}]},
                      "finishReason": "STOP", "index": 0}],
                      "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14}})]
        for chunk in events:
            assert proto.check(json.loads(chunk[6:]), "GenerateContentResponse") == []
        body = b"".join(events)
        from gen_ai.providers.gemini import GeminiStreamParser

        for cut in range(1, len(body)):
            parser = GeminiStreamParser("gemini")
            assert parser.feed(body[:cut]) + parser.feed(body[cut:]) == ["Let me check."]
            parser.close()
            assert [(c.name, c.arguments) for c in parser.tool_calls] == \
                [("get_weather", '{"city": "Paris"}'), ("get_time", '{"zone": "CET"}')], cut
            assert parser.finish_reason == "tool_calls"
        server.add(200, chunks=[body[i:i + 5] for i in range(0, len(body), 5)])
        stream = client.run_chat_completions_stream(HISTORY[:2], tools=[get_weather, get_time])
        assert [e.type for e in stream.events()] == ["text", "tool_call_start", "tool_call_delta",
                                                     "tool_call_start", "tool_call_delta", "done"]
        assert len(stream.tool_calls) == 2
    finally:
        server.close()


# -- Bedrock -------------------------------------------------------------------------------------


def test_bedrock_bodies_match_the_service_model(service_model):
    server = FaultServer()
    try:
        client = bed_t.bedrock(server)
        for call in calls_for():
            body = bed_t.body_of(client, call)
            bed_t.validate(service_model, "ConverseStream" if call.stream else "Converse", body)
        body = bed_t.body_of(client, Call("chat", messages=HISTORY, tools=TOOLS, tool_choice="get_weather"))
        assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
        assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": TOOLS[0].parameters}
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
        assert messages[1]["content"][0] == {"toolUse": {"toolUseId": "call_1", "name": "get_weather",
                                                         "input": {"city": "Paris"}}}
        assert messages[2]["content"] == [
            {"toolResult": {"toolUseId": "call_1", "content": [{"json": {"sky": "sunny", "temp": 21}}]}},
            {"toolResult": {"toolUseId": "call_2", "content": [{"text": "12:00"}]}}]
        assert messages[4]["content"][-1] == {"text": "Thanks"}  # merged after the tool result
        choices = {c: bed_t.body_of(client, Call("chat", messages=HISTORY[:2], tools=TOOLS, tool_choice=c))
                   ["toolConfig"].get("toolChoice") for c in CHOICES}
        assert choices == {None: None, "auto": {"auto": {}}, "none": None, "required": {"any": {}},
                           "get_weather": {"tool": {"name": "get_weather"}}}
        with pytest.raises(AssertionError):  # the oracle rejects a choice Converse does not have
            bed_t.validate(service_model, "Converse", {**body, "toolConfig": {**body["toolConfig"],
                                                                               "toolChoice": {"none": {}}}})
    finally:
        server.close()


def bedrock_tool_frames() -> list[bytes]:
    e = bed_t.event
    return [
        e("messageStart", {"role": "assistant"}),
        e("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Checking."}}),
        e("contentBlockStop", {"contentBlockIndex": 0}),
        e("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_1",
                                                                               "name": "get_weather"}}}),
        e("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city": '}}}),
        e("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Paris"}'}}}),
        e("contentBlockStop", {"contentBlockIndex": 1}),
        e("messageStop", {"stopReason": "tool_use"}),
        e("metadata", {"usage": {"inputTokens": 9, "outputTokens": 12, "totalTokens": 21}, "metrics": {"latencyMs": 5}}),
    ]


def test_bedrock_response_and_stream():
    from gen_ai.providers.bedrock import BedrockStreamParser

    body = b"".join(bedrock_tool_frames())
    expected = [ToolCall("tooluse_1", "get_weather", '{"city": "Paris"}', 0)]
    for cut in range(1, len(body)):
        parser = BedrockStreamParser("bedrock", "m")
        assert parser.feed(body[:cut]) + parser.feed(body[cut:]) == ["Checking."]
        parser.close()
        assert parser.tool_calls == expected and parser.finish_reason == "tool_calls", cut
    server = FaultServer()
    try:
        client = bed_t.bedrock(server)
        server.add(200, bed_t.converse_body(stop="tool_use", content=[
            {"text": "Checking."}, {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather",
                                                "input": {"city": "Paris"}}}]))
        result = client.run_chat_completions(HISTORY[:2], tools=[get_weather])
        assert result.tool_calls == expected and result.finish_reason == "tool_calls"
        server.add(bed_t.event_stream_step([body[i:i + 13] for i in range(0, len(body), 13)]))
        stream = client.run_chat_completions_stream(HISTORY[:2], tools=[get_weather])
        assert [e.type for e in stream.events()] == ["text", "tool_call_start", "tool_call_delta",
                                                     "tool_call_delta", "done"]
        assert stream.tool_calls == expected
    finally:
        server.close()


# -- run_tools on every provider -----------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "gemini", "bedrock"])
def test_run_tools_loop_on_each_provider(provider, service_model, proto):
    server = FaultServer()
    try:
        if provider == "anthropic":
            client = create_client("anthropic", api_key="k", endpoint=server.url, model_name="claude-x")
            body = ant_t.message_body("", stop_reason="tool_use")
            body["content"] = [{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Rome"}}]
            server.add(200, body)
            server.add(200, ant_t.message_body("Sunny in Rome."))
        elif provider == "gemini":
            client = create_client("gemini", api_key="k", endpoint=server.url, model_name="gemini-x")
            body = gem_t.generate_body("")
            body["candidates"][0]["content"]["parts"] = [{"functionCall": {"id": "fc_9", "name": "get_weather",
                                                                           "args": {"city": "Rome"}}}]
            server.add(200, body)
            server.add(200, gem_t.generate_body("Sunny in Rome."))
        else:
            client = bed_t.bedrock(server)
            server.add(200, bed_t.converse_body(stop="tool_use", content=[
                {"toolUse": {"toolUseId": "tu_9", "name": "get_weather", "input": {"city": "Rome"}}}]))
            server.add(200, bed_t.converse_body("Sunny in Rome."))
        result = client.run_tools([{"role": "user", "content": "Weather in Rome?"}], tools=[get_weather])
        assert result == "Sunny in Rome." and result.turns == 2
        assert result.tool_runs[0].output == "sunny in Rome"
        second = server.requests[1].json()
        if provider == "anthropic":
            assert second["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_9",
                                                         "content": "sunny in Rome"}]
        elif provider == "gemini":
            assert proto.check(second, "GenerateContentRequest") == []
            assert second["contents"][2]["parts"] == [{"functionResponse": {
                "id": "fc_9", "name": "get_weather", "response": {"result": "sunny in Rome"}}}]
        else:
            bed_t.validate(service_model, "Converse", second)
            assert second["messages"][2]["content"] == [{"toolResult": {"toolUseId": "tu_9",
                                                                        "content": [{"text": "sunny in Rome"}]}}]
    finally:
        server.close()


