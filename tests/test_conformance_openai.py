"""Request bodies the openai codec builds validate against the official OpenAPI schemas."""

from __future__ import annotations

import json

import pytest
from conftest import spec_validator
from pydantic import BaseModel

from gen_ai.providers.openai import OpenAICodec
from gen_ai.structured import Schema
from gen_ai.types import Call

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": [{"type": "text", "text": "Describe"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                                     "detail": "low"}}]},
]


class Answer(BaseModel):
    answer: int


def body(call: Call, **options) -> dict:
    codec = OpenAICodec(api_key="k", endpoint="http://x", model_name="gpt-4o-mini", **options)
    return json.loads(codec.build_request(call).body)


CHAT_CALLS = {
    "plain": Call("chat", messages=MESSAGES),
    "stream": Call("chat", messages=MESSAGES, stream=True),
    "n": Call("chat", messages=MESSAGES, n=3, temperature=0.7, top_p=0.9),
    "guided_json": Call("chat", messages=MESSAGES, schema=Schema.from_user(Answer)),
    "extras": Call("chat", messages=MESSAGES, extra={"stop": ["\n"], "seed": 1, "presence_penalty": 0.5,
                                                      "frequency_penalty": 0.1, "logprobs": True}),
}
COMPLETION_CALLS = {
    "plain": Call("completion", prompt="Once upon a time"),
    "stream": Call("completion", prompt="Once upon a time", stream=True),
    "n": Call("completion", prompt="Once upon a time", n=2),
    "guided_json": Call("completion", prompt="JSON:", schema=Schema.from_user(Answer)),
}


@pytest.mark.parametrize("name", sorted(CHAT_CALLS))
def test_chat_request_validates(openai_spec, name):
    validator = spec_validator(openai_spec, "CreateChatCompletionRequest")
    errors = [e.message for e in validator.iter_errors(body(CHAT_CALLS[name]))]
    assert errors == []


@pytest.mark.parametrize("name", sorted(COMPLETION_CALLS))
def test_completion_request_validates(openai_spec, name):
    # Plain OpenAI has no guided_json on /completions; the json_schema dialect still sends
    # response_format, which vLLM and SGLang read. Validate the rest of the body.
    payload = body(COMPLETION_CALLS[name])
    payload.pop("response_format", None)
    errors = [e.message for e in spec_validator(openai_spec, "CreateCompletionRequest").iter_errors(payload)]
    assert errors == []


def test_validator_catches_a_bad_body(openai_spec):
    """The oracle itself is not vacuous: a wrong body fails."""
    payload = body(CHAT_CALLS["plain"])
    payload["messages"][0]["role"] = "wizard"
    payload["max_tokens"] = "many"
    assert list(spec_validator(openai_spec, "CreateChatCompletionRequest").iter_errors(payload))


def test_guided_json_dialect_bodies():
    schema = Schema.from_user(Answer)
    call = Call("chat", messages=MESSAGES[:2], schema=schema)
    assert body(call)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "Answer", "schema": schema.json_schema, "strict": True}}
    assert body(call, dialect="llama-cpp-python")["response_format"] == {
        "type": "json_object", "schema": schema.json_schema}
    legacy = body(call, dialect="vllm-legacy")
    assert legacy["guided_json"] == schema.json_schema and "response_format" not in legacy
    assert body(call, dialect="structured_outputs")["structured_outputs"] == {"json": schema.json_schema}


def test_responses_parse_per_spec(openai_spec):
    """Our test fixtures' response shapes are themselves valid per the spec."""
    from fault_server import chat_body

    response = chat_body("hi")
    for choice in response["choices"]:
        choice["message"]["refusal"] = None
    errors = [e.message for e in spec_validator(openai_spec, "CreateChatCompletionResponse").iter_errors(response)]
    assert errors == []
