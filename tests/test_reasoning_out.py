"""Reasoning out: ``result.reasoning`` and the opaque items needed to continue, for every provider
and server shape, from bodies and streams recorded in each one's documented shape (both field
names; streams split at every byte boundary); ``to_message()`` carries them and each codec sends
them back when it encodes the history."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import spec_validator
from fault_server import FaultServer, Step, sse

from gen_ai.factory import create_client
from gen_ai.providers.anthropic import AnthropicCodec, AnthropicStreamParser
from gen_ai.providers.gemini import GeminiCodec, GeminiStreamParser
from gen_ai.providers.openai import OpenAICodec, OpenAIStreamParser
from gen_ai.types import Call, ChatResult, RawResponse

MESSAGES = [{"role": "user", "content": "What is 17 * 23?"}]
THINK = "17*20=340, 17*3=51, 340+51=391."


def raw(body: Any) -> RawResponse:
    return RawResponse(200, {}, json.dumps(body).encode(), "http://x/v1/chat/completions", "POST")


def result_of(codec: Any, body: Any, call: Call | None = None) -> ChatResult:
    """The ChatResult the call flow makes from one response body (the real flow, driven here)."""
    from gen_ai import _core

    call = call or Call("chat", messages=MESSAGES)
    flow = _core.call_flow(codec, call, 0)
    flow.send(None)  # -> Send(request)
    try:
        flow.send(raw(body))
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the flow asked for more")


def splits(data: bytes):
    """Every way of cutting ``data`` in two, plus one byte at a time."""
    for k in range(len(data) + 1):
        yield [data[:k], data[k:]]
    yield [data[i:i + 1] for i in range(len(data))]


def feed_all(make_parser: Any, data: bytes) -> list[tuple[str, str | None, Any]]:
    seen = []
    for pieces in splits(data):
        parser = make_parser()
        text = "".join(d for piece in pieces for d in parser.feed(piece)) + "".join(parser.close())
        seen.append((text, parser.reasoning, parser.reasoning_details))
    return seen


# -- OpenAI-compatible servers --------------------------------------------------------------------


def chat_body(message: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40}}


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_openai_compatible_reasoning_field_names(field):
    """vLLM (since early 2026), Ollama /v1 and LM Studio: "reasoning"; SGLang, llama.cpp, DeepSeek: "reasoning_content"."""
    codec = OpenAICodec(api_key="k", endpoint="http://127.0.0.1:1/v1", model_name="m")
    result = result_of(codec, chat_body({"content": "391", field: THINK}))
    assert result == "391" and result.reasoning == THINK
    assert result.to_message() == {"role": "assistant", "content": "391"}  # nothing to send back
    plain = result_of(codec, chat_body({"content": "391"}))
    assert plain.reasoning is None and "reasoning" not in plain.__dict__


def test_openai_n_choices_keep_their_own_reasoning():
    codec = OpenAICodec(api_key="k", endpoint="http://127.0.0.1:1/v1", model_name="m")
    body = chat_body({"content": "a", "reasoning": "r0"})
    body["choices"].append({"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "stop"})
    results = result_of(codec, body, Call("chat", messages=MESSAGES, n=2))
    assert [r.reasoning for r in results] == ["r0", None]


def openai_stream(field: str) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    out = [chunk({"role": "assistant", "content": ""}), chunk({field: "17*20=340, "}),
           chunk({field: "17*3=51, 340+51=391."}), chunk({"content": "39"}), chunk({"content": "1"}),
           chunk({}, "stop"), b"data: [DONE]\n\n"]
    return b"".join(out)


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_openai_stream_reasoning_at_every_split(field):
    data = openai_stream(field)
    for text, reasoning, details in feed_all(lambda: OpenAIStreamParser("chat", "openai", {}), data):
        assert (text, reasoning, details) == ("391", THINK, None)


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def test_stream_iterates_only_the_answer_and_times_both(server):
    pieces = openai_stream("reasoning")
    chunks = [c + b"\n\n" for c in pieces.split(b"\n\n") if c]
    server.add(Step(200, chunks=chunks, chunk_delay=0.02))
    client = create_client(endpoint=server.url, model_name="m", api_key="k")
    stream = client.run_chat_completions_stream(MESSAGES)
    assert list(stream) == ["39", "1"]
    assert stream.text == "391" and stream.reasoning == THINK
    assert 0 < stream.first_reasoning_latency < stream.first_token_latency
    assert stream.to_result().reasoning == THINK
    client.close()


def test_other_providers_items_are_not_sent_to_chat_completions(openai_spec):
    codec = OpenAICodec(api_key="k", endpoint="https://api.openai.com/v1", model_name="gpt-4o")
    history = [*MESSAGES, {"role": "assistant", "content": "391", "reasoning_details": [
        {"type": "anthropic.thinking", "thinking": THINK, "signature": "sig"}]}, {"role": "user", "content": "Why?"}]
    body = json.loads(codec.build_request(Call("chat", messages=history)).body)
    assert body["messages"][1] == {"role": "assistant", "content": "391"}
    assert "reasoning_details" in history[1]  # the caller's list is not changed
    spec_validator(openai_spec, "CreateChatCompletionRequest").validate(body)


# -- Anthropic ------------------------------------------------------------------------------------

SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"


def anthropic_message(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": content, "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 50}}


def test_anthropic_thinking_blocks_round_trip():
    from test_provider_anthropic import conform

    codec = AnthropicCodec(api_key="k", model_name="claude-sonnet-4-5", sampling_params=False)
    result = result_of(codec, anthropic_message([
        {"type": "thinking", "thinking": THINK, "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": REDACTED},
        {"type": "text", "text": "391"}]))
    assert result == "391" and result.reasoning == THINK
    message = result.to_message()
    assert message["content"] == "391" and message["reasoning_details"] == [
        {"type": "anthropic.thinking", "thinking": THINK, "signature": SIGNATURE},
        {"type": "anthropic.redacted_thinking", "data": REDACTED}]
    history = [*MESSAGES, message, {"role": "user", "content": "And 17 * 24?"}]
    call = Call("chat", messages=history, max_tokens=4000, reasoning_effort="low")
    body = json.loads(codec.build_request(call).body)
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": THINK, "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": REDACTED},
        {"type": "text", "text": "391"}]
    assert conform(body) == []
    # Gemini's items in the same history are not Anthropic's: skipped.
    history[1] = {**message, "reasoning_details": [{"type": "gemini.thought_signature", "signature": "x", "part": "text"}]}
    body = json.loads(codec.build_request(Call("chat", messages=history)).body)
    assert body["messages"][1]["content"] == [{"type": "text", "text": "391"}]


def anthropic_stream() -> bytes:
    def ev(name: str, obj: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **obj})}\n\n".encode()
    start = anthropic_message([])
    start["stop_reason"] = None
    return b"".join([
        ev("message_start", {"message": start}),
        ev("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ev("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "17*20=340, "}}),
        ev("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "17*3=51, 340+51=391."}}),
        ev("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": SIGNATURE}}),
        ev("content_block_stop", {"index": 0}),
        ev("content_block_start", {"index": 1, "content_block": {"type": "redacted_thinking", "data": REDACTED}}),
        ev("content_block_stop", {"index": 1}),
        ev("content_block_start", {"index": 2, "content_block": {"type": "text", "text": ""}}),
        ev("content_block_delta", {"index": 2, "delta": {"type": "text_delta", "text": "39"}}),
        ev("content_block_delta", {"index": 2, "delta": {"type": "text_delta", "text": "1"}}),
        ev("content_block_stop", {"index": 2}),
        ev("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 60}}),
        ev("message_stop", {}),
    ])


def test_anthropic_stream_thinking_and_signature_at_every_split():
    expected = ("391", THINK, [{"type": "anthropic.thinking", "thinking": THINK, "signature": SIGNATURE},
                               {"type": "anthropic.redacted_thinking", "data": REDACTED}])
    for seen in feed_all(lambda: AnthropicStreamParser("anthropic"), anthropic_stream()):
        assert seen == expected


# -- Gemini ---------------------------------------------------------------------------------------

THOUGHT_SIG = "CiQB0e2Kb7/vp9xX0n2YdA3yiG5uxJ0i7Iv3lqTqbkT1jtlXQ0AKVQHR"


def gemini_body(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "thoughtsTokenCount": 40,
                              "totalTokenCount": 50},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"}


def test_gemini_thoughts_and_signature_round_trip():
    codec = GeminiCodec(api_key="k", model_name="gemini-2.5-flash")
    result = result_of(codec, gemini_body([{"text": THINK, "thought": True},
                                           {"text": "391", "thoughtSignature": THOUGHT_SIG}]))
    assert result == "391" and result.reasoning == THINK and result.usage.reasoning_tokens == 40
    message = result.to_message()
    assert message["reasoning_details"] == [{"type": "gemini.thought_signature", "signature": THOUGHT_SIG,
                                             "part": "text"}]
    history = [*MESSAGES, message, {"role": "user", "content": "And 17 * 24?"}]
    body = json.loads(codec.build_request(Call("chat", messages=history)).body)
    assert body["contents"][1] == {"role": "model", "parts": [{"text": "391", "thoughtSignature": THOUGHT_SIG}]}


def test_gemini_signature_is_a_part_field_in_the_proto():
    from conftest import SPECS

    proto = (SPECS / "gemini-v1beta" / "content.proto").read_text()
    assert "bytes thought_signature = 13" in proto and "bool thought = 11" in proto


def test_gemini_stream_thoughts_at_every_split():
    def chunk(parts: list[dict[str, Any]], finish: str | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return b"data: " + json.dumps({"candidates": [candidate], "modelVersion": "gemini-2.5-flash"}).encode() + b"\r\n\r\n"
    data = (chunk([{"text": "17*20=340, ", "thought": True}]) + chunk([{"text": "17*3=51, 340+51=391.", "thought": True}])
            + chunk([{"text": "39"}]) + chunk([{"text": "1", "thoughtSignature": THOUGHT_SIG}], "STOP"))
    for seen in feed_all(lambda: GeminiStreamParser("gemini"), data):
        assert seen == ("391", THINK, [{"type": "gemini.thought_signature", "signature": THOUGHT_SIG, "part": "text"}])


# -- Bedrock --------------------------------------------------------------------------------------


def test_bedrock_reasoning_content_round_trip():
    from test_provider_bedrock import MODEL, to_api_params  # noqa: F401  (same model id as the provider tests)

    from gen_ai.providers.bedrock import BedrockCodec

    codec = BedrockCodec(model_name="us.anthropic.claude-sonnet-4-5-20250929-v1:0", region="us-east-1",
                         bearer_token="tok")
    body = {"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": THINK, "signature": SIGNATURE}}},
        {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}},
        {"text": "391"}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 10, "outputTokens": 60, "totalTokens": 70}}
    result = result_of(codec, body)
    assert result == "391" and result.reasoning == THINK
    message = result.to_message()
    assert message["reasoning_details"] == [{"type": "bedrock.reasoning", "text": THINK, "signature": SIGNATURE},
                                            {"type": "bedrock.redacted", "data": "cmVkYWN0ZWQ="}]
    sent = codec.build_body(Call("chat", messages=[*MESSAGES, message, {"role": "user", "content": "More?"}],
                                 max_tokens=4000, reasoning_effort="low"))
    assert sent["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": THINK, "signature": SIGNATURE}}},
        {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}},
        {"text": "391"}]
    import base64

    from botocore.model import ServiceModel
    from botocore.validate import ParamValidator
    from conftest import SPECS

    model = ServiceModel(json.loads((SPECS / "bedrock-runtime" / "service-2.json").read_text()), "bedrock-runtime")
    params = json.loads(json.dumps(sent))
    params["modelId"] = "m"
    block = params["messages"][1]["content"][1]["reasoningContent"]
    block["redactedContent"] = base64.b64decode(block["redactedContent"])
    report = ParamValidator().validate(params, model.operation_model("Converse").input_shape)
    assert not report.has_errors(), report.generate_report()


def test_bedrock_stream_reasoning_at_every_split():
    from test_provider_bedrock import event

    from gen_ai.providers.bedrock import BedrockStreamParser

    data = b"".join([
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "17*20=340, "}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "17*3=51, 340+51=391."}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": SIGNATURE}}}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "39"}}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "1"}}),
        event("contentBlockStop", {"contentBlockIndex": 1}),
        event("messageStop", {"stopReason": "end_turn"}),
        event("metadata", {"usage": {"inputTokens": 5, "outputTokens": 9, "totalTokens": 14}}),
    ])
    for seen in feed_all(lambda: BedrockStreamParser("bedrock", "m"), data):
        assert seen == ("391", THINK, [{"type": "bedrock.reasoning", "text": THINK, "signature": SIGNATURE}])


@pytest.mark.parametrize("asynchronous", [False, True])
def test_reasoning_events_come_apart_from_text(server, asynchronous):
    """stream.events(): "reasoning" events for the thinking, "text" for the answer, then "done"."""
    import asyncio

    pieces = openai_stream("reasoning_content")
    chunks = [c + b"\n\n" for c in pieces.split(b"\n\n") if c]
    server.add(Step(200, chunks=chunks))
    client = create_client(endpoint=server.url, model_name="m", api_key="k")
    if asynchronous:
        async def collect():
            stream = client.arun_chat_completions_stream(MESSAGES)
            return [e async for e in stream.events()], stream
        events, stream = asyncio.run(collect())
    else:
        stream = client.run_chat_completions_stream(MESSAGES)
        events = list(stream.events())
    kinds = [(e.type, e.text) for e in events if e.type in ("reasoning", "text")]
    assert kinds == [("reasoning", "17*20=340, "), ("reasoning", "17*3=51, 340+51=391."), ("text", "39"), ("text", "1")]
    assert events[-1].type == "done" and stream.reasoning == THINK and stream.text == "391"
    assert stream.first_reasoning_latency is not None and stream.first_reasoning_latency <= stream.first_token_latency
    client.close()


def test_anthropic_reasoning_events():
    parser = AnthropicStreamParser("anthropic")
    parser.want_events = True
    parser.feed(anthropic_stream())
    parser.close()
    assert [(e.type, e.text) for e in parser.events if e.type in ("reasoning", "text")] == [
        ("reasoning", "17*20=340, "), ("reasoning", "17*3=51, 340+51=391."), ("text", "39"), ("text", "1")]


def test_thinking_travels_with_tool_calls():
    """A tool loop with thinking on: each codec puts its reasoning items beside the tool calls."""
    from test_provider_anthropic import conform

    call_msg = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\": 17}"}}],
        "reasoning_details": [{"type": "anthropic.thinking", "thinking": THINK, "signature": SIGNATURE},
                              {"type": "gemini.thought_signature", "signature": THOUGHT_SIG, "part": "function_call",
                               "name": "calc"},
                              {"type": "bedrock.reasoning", "text": THINK, "signature": SIGNATURE}]}
    history = [*MESSAGES, call_msg, {"role": "tool", "tool_call_id": "toolu_1", "content": "391"}]
    body = json.loads(AnthropicCodec(api_key="k", model_name="claude-sonnet-4-5", sampling_params=False)
                      .build_request(Call("chat", messages=history)).body)
    assert [b["type"] for b in body["messages"][1]["content"]] == ["thinking", "tool_use"]
    assert body["messages"][1]["content"][0]["signature"] == SIGNATURE and conform(body) == []
    body = json.loads(GeminiCodec(api_key="k", model_name="gemini-2.5-flash").build_request(
        Call("chat", messages=history)).body)
    [part] = body["contents"][1]["parts"]
    assert part["functionCall"]["name"] == "calc" and part["thoughtSignature"] == THOUGHT_SIG

    from gen_ai.providers.bedrock import BedrockCodec

    sent = BedrockCodec(model_name="anthropic.claude-sonnet-4-5", region="us-east-1", bearer_token="t").build_body(
        Call("chat", messages=history))
    assert [next(iter(b)) for b in sent["messages"][1]["content"]] == ["reasoningContent", "toolUse"]
