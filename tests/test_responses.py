"""The Responses API codec (create_client(provider="openai", api="responses")): requests validated
against the Responses schemas of the OpenAI spec, recorded bodies and typed stream events (also
validated against the spec) parsed, streams split at every byte boundary, and whole calls against
a loopback server answering in the Responses shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import spec_validator
from fault_server import FaultServer, Step

from gen_ai.errors import ConfigurationError, StreamTruncatedError
from gen_ai.factory import create_client
from gen_ai.providers.openai_responses import OpenAIResponsesCodec, ResponsesStreamParser
from gen_ai.structured import Schema
from gen_ai.types import Call

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 17 * 23?"}]
ENCRYPTED = "gAAAAABoISQ24OyVRYbkYfukHuMHyR1dpVb3rBhqf0WsTpWLXm8zw6Q=="


def codec(model: str = "gpt-4.1") -> OpenAIResponsesCodec:
    return OpenAIResponsesCodec(api_key="k", endpoint="https://api.openai.com/v1", model_name=model)


def body_of(call: Call, model: str = "gpt-4.1") -> dict[str, Any]:
    request = codec(model).build_request(call)
    assert request.url == "https://api.openai.com/v1/responses"
    return json.loads(request.body)


class _CreateResponse:
    """CreateResponse, with each ``input`` item checked against the InputItem branches one by one:
    the spec's ``oneOf`` of EasyInputMessage and Item overlaps (a user message with content parts
    matches both, so strict oneOf rejects what the official SDK itself sends)."""

    def __init__(self, spec: Any) -> None:
        self.request = spec_validator(spec, "CreateResponse")
        self.branches = [spec_validator(spec, name) for name in ("EasyInputMessage", "Item")]

    def validate(self, body: dict[str, Any]) -> None:
        items = body.get("input")
        if isinstance(items, list):
            for item in items:
                errors = [list(b.iter_errors(item)) for b in self.branches]
                assert any(not e for e in errors), (item, [x.message for e in errors for x in e][:3])
            body = {**body, "input": "x"}
        self.request.validate(body)


@pytest.fixture(scope="module")
def create_response(openai_spec):
    return _CreateResponse(openai_spec)


def test_plain_and_stream_requests_validate(create_response):
    body = body_of(Call("chat", messages=MESSAGES, max_tokens=50))
    assert body["input"] == [{"type": "message", "role": "system", "content": "Be brief."},
                             {"type": "message", "role": "user", "content": "What is 17 * 23?"}]
    assert body["max_output_tokens"] == 50 and body["temperature"] == 0 and "stream" not in body
    create_response.validate(body)
    body = body_of(Call("chat", messages=MESSAGES, stream=True))
    assert body["stream"] is True
    create_response.validate(body)
    body = body_of(Call("completion", prompt="Once upon a time"))
    assert body["input"] == "Once upon a time"
    create_response.validate(body)


def test_reasoning_schema_logprobs_requests_validate(create_response):
    body = body_of(Call("chat", messages=MESSAGES, reasoning_effort="high"), model="o4-mini")
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"] and body["store"] is False
    assert "temperature" not in body and "top_p" not in body
    create_response.validate(body)
    schema = Schema.from_user({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
                               "additionalProperties": False})
    body = body_of(Call("chat", messages=MESSAGES, schema=schema, logprobs=True, top_logprobs=3))
    assert body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["schema"] == schema.json_schema
    assert body["include"] == ["message.output_text.logprobs"] and body["top_logprobs"] == 3
    create_response.validate(body)


def test_history_with_images_tools_and_reasoning_validates(create_response):
    history = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"x\": 1}"}}],
         "reasoning_details": [{"type": "openai.reasoning", "item": {"type": "reasoning", "id": "rs_1", "summary": [],
                                                                     "encrypted_content": ENCRYPTED}},
                               {"type": "anthropic.thinking", "thinking": "x", "signature": "y"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": "Sure?"},
    ]
    body = body_of(Call("chat", messages=history))
    items = body["input"]
    assert items[1] == {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": ENCRYPTED}
    assert items[2] == {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{\"x\": 1}"}
    assert items[3] == {"type": "function_call_output", "call_id": "call_1", "output": "a cat"}
    assert items[4] == {"type": "message", "role": "assistant", "content": "A cat."}
    assert items[0]["content"][1]["type"] == "input_image"
    create_response.validate(body)


# -- recorded responses ---------------------------------------------------------------------------


def response_body(output: list[dict[str, Any]], *, status: str = "completed", incomplete: str | None = None,
                  usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "object": "response", "created_at": 1741476542,
        "status": status, "background": False, "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None, "max_output_tokens": None, "model": "o4-mini-2025-04-16", "output": output,
        "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "metadata": {},
        "usage": usage or {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                           "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 123},

    }


MESSAGE_ITEM = {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "391", "annotations": [], "logprobs": []}]}
REASONING_ITEM = {"type": "reasoning", "id": "rs_1", "encrypted_content": ENCRYPTED,
                  "summary": [{"type": "summary_text", "text": "Multiply 17 by 23."}]}


def parse(body: dict[str, Any]) -> Any:
    from test_reasoning_out import result_of

    return result_of(codec("o4-mini"), body)


def test_recorded_response_validates_and_parses(openai_spec):
    body = response_body([REASONING_ITEM, MESSAGE_ITEM])
    spec_validator(openai_spec, "Response").validate(body)
    result = parse(body)
    assert result == "391" and result.finish_reason == "stop" and result.reasoning == "Multiply 17 by 23."
    assert result.usage.to_dict() == {"prompt_tokens": 36, "completion_tokens": 87, "total_tokens": 123,
                                      "cached_tokens": 4, "cache_write_tokens": 0, "reasoning_tokens": 64}
    message = result.to_message()
    assert message["reasoning_details"] == [{"type": "openai.reasoning", "item": {
        "type": "reasoning", "summary": REASONING_ITEM["summary"], "id": "rs_1", "encrypted_content": ENCRYPTED}}]
    # Sent back: the reasoning item goes before the assistant message, and the request validates.
    body = body_of(Call("chat", messages=[*MESSAGES, message, {"role": "user", "content": "And 17 * 24?"}]))
    assert body["input"][2]["type"] == "reasoning"
    assert body["input"][3] == {"type": "message", "role": "assistant", "content": "391"}
    _CreateResponse(openai_spec).validate(body)


def test_vllm_reasoning_text_content_and_incomplete(openai_spec):
    """vLLM puts the thinking text in the reasoning item's content (reasoning_text parts)."""
    item = {"type": "reasoning", "id": "rs_2", "summary": [],
            "content": [{"type": "reasoning_text", "text": "17*23 = 391"}]}
    body = response_body([item, MESSAGE_ITEM], status="incomplete", incomplete="max_output_tokens")
    spec_validator(openai_spec, "Response").validate(body)
    result = parse(body)
    assert result.reasoning == "17*23 = 391" and result.finish_reason == "length"


def test_function_call_output(openai_spec):
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "get_weather",
            "arguments": "{\"city\":\"Paris\"}", "status": "completed"}
    body = response_body([call])
    spec_validator(openai_spec, "Response").validate(body)
    result = parse(body)
    assert result == "" and result.finish_reason == "tool_calls"
    assert [c.to_dict() for c in result.tool_calls] == [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]
    assert result.tool_calls[0].parsed_arguments == {"city": "Paris"}
    assert result.to_message()["tool_calls"][0]["id"] == "call_9"


# -- streams --------------------------------------------------------------------------------------


def stream_events() -> list[dict[str, Any]]:
    done = response_body([REASONING_ITEM, MESSAGE_ITEM])
    created = {**done, "status": "in_progress", "output": []}
    del created["usage"]
    seq = iter(range(100))
    ev = [
        {"type": "response.created", "response": created},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "reasoning", "id": "rs_1", "summary": []}},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0, "summary_index": 0,
         "delta": "Multiply "},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0, "summary_index": 0,
         "delta": "17 by 23."},
        {"type": "response.output_item.done", "output_index": 0, "item": REASONING_ITEM},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}},
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0,
         "delta": "39", "logprobs": []},
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0,
         "delta": "1", "logprobs": []},
        {"type": "response.output_item.done", "output_index": 1, "item": MESSAGE_ITEM},
        {"type": "response.completed", "response": done},
    ]
    for e in ev:
        e["sequence_number"] = next(seq)
    return ev


def sse_bytes(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent", "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.reasoning_summary_text.delta": "ResponseReasoningSummaryTextDeltaEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent", "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.completed": "ResponseCompletedEvent",
}


def test_stream_events_validate_against_the_spec(openai_spec):
    union = spec_validator(openai_spec, "ResponseStreamEvent")
    for e in stream_events():
        spec_validator(openai_spec, EVENT_SCHEMAS[e["type"]]).validate(e)
        union.validate(e)


def test_stream_at_every_split():
    from test_reasoning_out import feed_all

    data = sse_bytes(stream_events())
    item = {"type": "openai.reasoning", "item": {"type": "reasoning", "summary": REASONING_ITEM["summary"],
                                                  "id": "rs_1", "encrypted_content": ENCRYPTED}}
    for seen in feed_all(lambda: ResponsesStreamParser("openai"), data):
        assert seen == ("391", "Multiply 17 by 23.", [item])
    parser = ResponsesStreamParser("openai")
    parser.feed(data)
    parser.close()
    assert parser.finish_reason == "stop" and parser.usage.reasoning_tokens == 64 and parser.id.startswith("resp_")


def test_stream_function_call_arguments():
    events = [
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": "{\"a\":"},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": "1}"},
        {"type": "response.completed", "response": response_body([])},
    ]
    parser = ResponsesStreamParser("openai")
    assert parser.feed(sse_bytes(events)) == []
    parser.close()
    assert [c.to_dict() for c in parser.tool_calls] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]
    assert parser.finish_reason == "tool_calls"


def test_truncated_stream_raises():
    parser = ResponsesStreamParser("openai")
    parser.feed(sse_bytes(stream_events()[:7]))
    with pytest.raises(StreamTruncatedError):
        parser.close()


# -- whole calls ----------------------------------------------------------------------------------


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def test_client_calls_through_responses(server):
    client = create_client(endpoint=server.url, model_name="o4-mini", api_key="k", api="responses")
    server.add(200, response_body([REASONING_ITEM, MESSAGE_ITEM]))
    result = client.run_chat_completions(MESSAGES, reasoning_effort="low")
    assert result == "391" and result.reasoning == "Multiply 17 by 23."
    assert server.requests[0].path == "/v1/responses"
    # n=2: the API has no n; the flow asks twice.
    server.add(200, response_body([MESSAGE_ITEM])).add(200, response_body([MESSAGE_ITEM]))
    results = client.run_chat_completions(MESSAGES, n=2)
    assert len(results) == 2 and results.usage.prompt_tokens == 72 and len(server.requests) == 3
    # A stream: only the answer is iterated.
    chunks = [c + b"\n\n" for c in sse_bytes(stream_events()).split(b"\n\n") if c]
    server.add(Step(200, chunks=chunks))
    stream = client.run_chat_completions_stream(MESSAGES)
    assert list(stream) == ["39", "1"] and stream.reasoning == "Multiply 17 by 23."
    assert stream.first_reasoning_latency <= stream.first_token_latency
    client.close()


def test_unknown_api_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="api='assistants'"):
        create_client("anthropic", api_key="k", model_name="m", api="assistants")


def test_completed_answer_that_spent_the_budget_is_length():
    """llama.cpp's server answers status "completed" (no incomplete_details) when cut."""
    from test_reasoning_out import raw

    body = response_body([MESSAGE_ITEM], usage={"input_tokens": 5, "output_tokens": 3, "total_tokens": 8,
                                                "input_tokens_details": {"cached_tokens": 0}})
    c = codec()
    assert c.parse_response(Call("chat", messages=MESSAGES, max_tokens=3), raw(body)).finish_reasons == ["length"]
    assert c.parse_response(Call("chat", messages=MESSAGES, max_tokens=4), raw(body)).finish_reasons == ["stop"]


@pytest.mark.parametrize("api_version, path", [("v1", "/openai/v1/responses"),
                                               ("2025-04-01-preview", "/openai/responses?api-version=2025-04-01-preview")])
def test_azure_responses_route(server, api_version, path):
    root = server.url.removesuffix("/v1")
    client = create_client("azure", endpoint=root, api_key="azure-key-123", deployment="o4-mini-prod",
                           api_version=api_version, api="responses")
    server.add(200, response_body([REASONING_ITEM, MESSAGE_ITEM]))
    result = client.run_chat_completions(MESSAGES, reasoning_effort="low")
    assert result == "391" and result.reasoning == "Multiply 17 by 23."
    rec = server.requests[0]
    assert rec.path == path and rec.headers["api-key"] == "azure-key-123"
    body = rec.json()
    assert body["model"] == "o4-mini-prod" and body["reasoning"]["effort"] == "low"
    assert "temperature" not in body  # o4-mini by the deployment's name
    assert "azure-key-123" not in repr(client) and "azure-key-123" not in repr(client.codec)
    client.close()


def test_keywords_are_the_create_response_properties(server):
    from test_keywords import _openai_properties

    from gen_ai import _keywords
    from gen_ai.errors import InvalidInputError

    assert _keywords.OPENAI_RESPONSES == _openai_properties("CreateResponse")
    client = create_client(endpoint=server.url, model_name="gpt-4.1", api_key="k", api="responses")
    with pytest.raises(InvalidInputError, match="instructons"):
        client.run_chat_completions(MESSAGES, instructons="x")
    server.add(200, response_body([MESSAGE_ITEM]))
    client.run_chat_completions(MESSAGES, instructions="Answer in French.", previous_response_id="resp_1")
    body = server.requests[0].json()
    assert body["instructions"] == "Answer in French." and body["previous_response_id"] == "resp_1"
    client.close()


def test_tools_request_validates(create_response):
    from gen_ai.client import _tool_options

    client_call = Call("chat", messages=MESSAGES)
    tools = _tool_options(
        [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}], "get_weather", False, "chat")
    call = client_call.replace(tools=tools[0], tool_choice=tools[1], parallel_tool_calls=tools[2])
    body = body_of(call)
    assert body["tools"] == [{"type": "function", "name": "get_weather", "description": "Weather in a city",
                              "strict": False,
                              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                             "required": ["city"]}}]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"} and body["parallel_tool_calls"] is False
    create_response.validate(body)
