"""ToolCall, ChatResult.tool_calls / to_message(), StreamEvent and the streamed tool-call buffer:
pure, no server."""

from __future__ import annotations

import pickle

import pytest

from gen_ai.errors import InvalidToolArgumentsError, StreamTruncatedError
from gen_ai.providers.openai import OpenAIStreamParser
from gen_ai.types import ChatResult, StreamEvent, ToolCall


def test_tool_call_parsed_arguments_and_errors():
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    assert call.parsed_arguments == {"city": "Paris"}
    assert call.to_dict() == {"id": "call_1", "type": "function",
                              "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert ToolCall("c", "f", "").parsed_arguments == {}
    with pytest.raises(InvalidToolArgumentsError) as info:
        _ = ToolCall("c", "get_weather", '{"city": "Par').parsed_arguments
    assert "get_weather" in str(info.value) and info.value.tool_name == "get_weather"
    with pytest.raises(InvalidToolArgumentsError, match="JSON object"):
        _ = ToolCall("c", "f", "[1, 2]").parsed_arguments
    assert pickle.loads(pickle.dumps(call)) == call


def test_from_dict_tolerates_object_arguments_and_missing_ids():
    call = ToolCall.from_dict({"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}, 2)
    assert call.arguments == '{"a": 1}' and call.index == 2 and call.id.startswith("call_")


def test_chat_result_without_tool_calls_is_lean_and_empty():
    result = ChatResult("hi")
    assert result.tool_calls == [] and result._tool_calls is None
    assert result.to_message() == {"role": "assistant", "content": "hi"}
    assert result.to_dict()["tool_calls"] == []


def test_chat_result_to_message_with_tool_calls():
    calls = [ToolCall("call_1", "f", '{"x": 1}', 0), ToolCall("call_2", "g", "{}", 1)]
    result = ChatResult("", tool_calls=calls, finish_reason="tool_calls")
    assert result.tool_calls == calls
    assert result.to_message() == {"role": "assistant", "content": "",
                                   "tool_calls": [c.to_dict() for c in calls]}
    again = pickle.loads(pickle.dumps(result))
    assert again.tool_calls == calls


def _sse(obj: str) -> bytes:
    return b"data: " + obj.encode() + b"\n\n"


def _chunks() -> list[bytes]:
    head = '{"id":"x","model":"m","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
    frags = [
        '{"role":"assistant","tool_calls":[{"index":0,"id":"call_a","type":"function",'
        '"function":{"name":"get_weather","arguments":""}}]}',
        '{"tool_calls":[{"index":0,"function":{"arguments":"{\\"ci"}}]}',
        '{"tool_calls":[{"index":0,"function":{"arguments":"ty\\": \\"Par"}}]}',
        '{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"get_time","arguments":"{}"}}]}',
        '{"tool_calls":[{"index":0,"function":{"arguments":"is\\"}"}}]}',
    ]
    out = [_sse(head % (f, "null")) for f in frags]
    out.append(_sse(head % ("{}", '"tool_calls"')))
    out.append(b"data: [DONE]\n\n")
    return out


def test_stream_fragments_merge_by_index_at_every_byte_boundary():
    body = b"".join(_chunks())
    expected = [ToolCall("call_a", "get_weather", '{"city": "Paris"}', 0), ToolCall("call_b", "get_time", "{}", 1)]
    for cut in range(1, len(body)):
        parser = OpenAIStreamParser("chat", "openai", {})
        assert parser.feed(body[:cut]) + parser.feed(body[cut:]) == []
        parser.close()
        assert parser.tool_calls == expected, cut
        assert parser.finish_reason == "tool_calls"


def test_stream_events_recorded_only_when_asked():
    parser = OpenAIStreamParser("chat", "openai", {})
    for chunk in _chunks():
        parser.feed(chunk)
    assert parser.events == []
    parser = OpenAIStreamParser("chat", "openai", {})
    parser.want_events = True
    for chunk in _chunks():
        parser.feed(chunk)
    assert parser.events[0] == StreamEvent("tool_call_start", index=0, id="call_a", name="get_weather")
    deltas = "".join(e.arguments for e in parser.events if e.type == "tool_call_delta" and e.index == 0)
    assert deltas == '{"city": "Paris"}'
    assert [e.type for e in parser.events].count("tool_call_start") == 2


def test_stream_cut_mid_arguments_is_truncated():
    head = '{"id":"x","model":"m","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
    parser = OpenAIStreamParser("chat", "openai", {})
    parser.feed(_sse(head % ('{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{\\"a"}}]}',
                              "null")))
    parser.feed(_sse(head % ("{}", '"length"')) + b"data: [DONE]\n\n")
    parser.close()
    with pytest.raises(StreamTruncatedError, match="'f'"):
        parser.check_tool_calls("openai")


def test_stream_without_ids_gets_stable_ids_and_empty_cut_off_call_is_truncated():
    head = '{"id":"x","model":"m","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
    parser = OpenAIStreamParser("chat", "openai", {})
    parser.feed(_sse(head % ('{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}', "null")))
    parser.feed(_sse(head % ("{}", '"tool_calls"')) + b"data: [DONE]\n\n")
    parser.close()
    assert parser.tool_calls == parser.tool_calls and parser.tool_calls[0].id.startswith("call_")
    # vLLM cut off by max_tokens right after the name: no arguments at all.
    parser = OpenAIStreamParser("chat", "openai", {})
    parser.feed(_sse(head % ('{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f"}}]}',
                              "null")))
    parser.feed(_sse(head % ("{}", '"length"')) + b"data: [DONE]\n\n")
    parser.close()
    with pytest.raises(StreamTruncatedError):
        parser.check_tool_calls("openai")
    # The same call finished normally is a call without parameters.
    parser = OpenAIStreamParser("chat", "openai", {})
    parser.feed(_sse(head % ('{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f"}}]}',
                              "null")))
    parser.feed(_sse(head % ("{}", '"tool_calls"')) + b"data: [DONE]\n\n")
    parser.close()
    parser.check_tool_calls("openai")
    assert parser.tool_calls[0].arguments == "{}"
