"""Unknown keyword arguments are refused before anything is sent, with a "did you mean"; the
frozen keyword lists in gen_ai/_keywords.py match the specs they were generated from."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import typing
from pathlib import Path

import pytest
from fault_server import chat_body, chat_chunks, completion_body

from gen_ai import InvalidInputError, create_client
from gen_ai import _keywords as kw

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs"
MESSAGES = [{"role": "user", "content": "hi"}]


# -- the lists against the specs -----------------------------------------------------------------


def _openai_properties(name: str) -> set[str]:
    schemas = json.loads((SPECS / "openai" / "openapi.json").read_text())["components"]["schemas"]
    found: set[str] = set()

    def walk(node: dict) -> None:
        if "$ref" in node:
            walk(schemas[node["$ref"].rsplit("/", 1)[-1]])
            return
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key, ()):
                walk(sub)
        found.update(node.get("properties", {}))

    walk(schemas[name])
    return found


def test_openai_lists_are_the_spec_request_properties():
    assert kw.OPENAI_CHAT == _openai_properties("CreateChatCompletionRequest")
    assert kw.OPENAI_COMPLETION == _openai_properties("CreateCompletionRequest")


def test_bedrock_list_is_the_converse_request_minus_what_gen_ai_sets():
    shapes = json.loads((SPECS / "bedrock-runtime" / "service-2.json").read_text())["shapes"]
    members = set(shapes["ConverseRequest"]["members"])
    assert kw.BEDROCK == members - {"modelId", "messages"}  # modelId is in the URL, messages are ours


def _proto_fields(message: str) -> set[str]:
    text = (SPECS / "gemini-v1beta" / "generative_service.proto").read_text()
    body = re.search(r"\nmessage " + message + r" \{(.*?)\n\}", text, re.S).group(1)
    names = re.findall(r"^  (?:optional |repeated )?[\w.]+ (\w+) = \d+", body, re.M)
    return {re.sub(r"_(\w)", lambda m: m.group(1).upper(), n) for n in names}  # REST lowerCamelCase


def test_gemini_lists_are_proto_fields():
    assert kw.GEMINI_REQUEST == _proto_fields("GenerateContentRequest") - {"model"}
    generation = _proto_fields("GenerationConfig")
    assert kw.GEMINI_GENERATION <= generation
    # What gen_ai itself sets is not an extra: it would be overwritten or clash.
    assert not kw.GEMINI_GENERATION & {"maxOutputTokens", "temperature", "topP", "candidateCount"}


def test_anthropic_list_covers_the_sdk_request():
    from anthropic.types import message_create_params

    sdk = set(typing.get_type_hints(message_create_params.MessageCreateParamsBase))
    assert sdk <= kw.ANTHROPIC
    assert kw.ANTHROPIC - sdk == kw.ANTHROPIC_SAMPLING | kw.ANTHROPIC_BETA


def test_local_lists_are_llama_cpp_parameters():
    import llama_cpp

    own = {"self", "messages", "prompt", "model", "max_tokens", "temperature", "top_p", "stream"}
    chat = set(inspect.signature(llama_cpp.Llama.create_chat_completion).parameters) - own
    completion = set(inspect.signature(llama_cpp.Llama.create_completion).parameters) - own
    assert kw.LOCAL_CHAT == chat and kw.LOCAL_COMPLETION == completion


def test_every_list_takes_the_cross_provider_keywords():
    codecs = [kw.OPENAI_KEYWORDS, kw.AZURE_KEYWORDS, kw.ANTHROPIC_KEYWORDS, kw.GEMINI_KEYWORDS,
              kw.BEDROCK_KEYWORDS, kw.LOCAL_KEYWORDS]
    for allowed in codecs:
        for kind in ("chat", "completion"):
            assert kw.COMMON <= allowed[kind]
    for name in ("tools", "tool_choice", "parallel_tool_calls", "reasoning_effort", "logprobs",
                 "top_logprobs", "dimensions", "extra_body", "stop"):
        assert name in kw.COMMON


# -- refusal before the network ------------------------------------------------------------------


@pytest.fixture
def client(fault_server):
    c = create_client(endpoint=fault_server.url, model_name="m", max_retries=0)
    yield c
    c.close()


@pytest.mark.parametrize("typo,meant", [("temprature", "temperature"), ("max_token", "max_tokens"),
                                         ("top_kk", "top_k"), ("presence_penalti", "presence_penalty"),
                                         ("repetition_penality", "repetition_penalty")])
def test_typo_is_refused_with_a_suggestion_and_nothing_is_sent(fault_server, client, typo, meant):
    calls = [lambda: client.run_chat_completions(MESSAGES, **{typo: 1}),
             lambda: client.run_completions("x", **{typo: 1}),
             lambda: client.run_chat_completions_stream(MESSAGES, **{typo: 1}),
             lambda: asyncio.run(client.arun_chat_completions(MESSAGES, **{typo: 1}))]
    for call in calls:
        with pytest.raises(InvalidInputError) as info:
            call()
        assert info.value.field == typo
        assert f"Did you mean {meant!r}" in info.value.suggestion and "extra_body" in info.value.suggestion
    batch = client.run_chat_completions_batch([MESSAGES], **{typo: 1})  # a batch reports it per item
    assert batch[0] is None and f"Did you mean {meant!r}" in str(batch.errors)
    _, error = client.run_chat_completions(MESSAGES, return_error=True, **{typo: 1})
    assert error["type"] == "InvalidInputError" and error["field"] == typo
    assert fault_server.requests == []


def test_unrelated_name_gets_no_bogus_suggestion(client):
    with pytest.raises(InvalidInputError) as info:
        client.run_chat_completions(MESSAGES, zzqx=1)
    assert "Did you mean" not in info.value.suggestion


def test_known_keywords_and_server_extras_reach_the_body(fault_server, client):
    fault_server.add(200, chat_body("ok"))
    fault_server.add(200, completion_body("ok"))
    extras = {"seed": 1, "stop": ["\n"], "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1,
              "chat_template_kwargs": {"enable_thinking": False}, "logprobs": True, "top_logprobs": 2}
    assert client.run_chat_completions(MESSAGES, **extras) == "ok"
    assert client.run_completions("x", suffix="!", repeat_penalty=1.1, mirostat=2) == "ok"
    body = fault_server.requests[0].json()
    assert {k: body[k] for k in extras} == extras
    assert fault_server.requests[1].json()["suffix"] == "!"


def test_extra_body_passes_anything_through_unchecked(fault_server, client):
    fault_server.add(200, chat_body("ok"))
    fault_server.add(200, chunks=chat_chunks(["a"]))
    assert client.run_chat_completions(MESSAGES, extra_body={"my_gateway_flag": 1, "temprature": 9}) == "ok"
    assert "".join(client.run_chat_completions_stream(MESSAGES, seed=3, extra_body={"x_custom": [1]})) == "a"
    first, second = (r.json() for r in fault_server.requests)
    assert first["my_gateway_flag"] == 1 and first["temprature"] == 9 and "extra_body" not in first
    assert second["x_custom"] == [1] and second["seed"] == 3


def test_extra_body_must_be_a_dict(fault_server, client):
    with pytest.raises(InvalidInputError) as info:
        client.run_chat_completions(MESSAGES, extra_body=["x"])
    assert info.value.field == "extra_body"
    assert fault_server.requests == []


def test_each_provider_has_its_own_list(fault_server):
    anthropic = create_client("anthropic", api_key="sk-ant-x", endpoint=fault_server.url, model_name="c")
    gemini = create_client("gemini", api_key="g-key", endpoint=fault_server.url, model_name="g")
    with pytest.raises(InvalidInputError) as info:
        anthropic.run_chat_completions(MESSAGES, stop_sequence=["x"])
    assert "'stop_sequences'" in info.value.suggestion
    with pytest.raises(InvalidInputError) as info:
        gemini.run_chat_completions(MESSAGES, top_k=3)  # Gemini's REST name is topK
    assert "'topK'" in info.value.suggestion
    with pytest.raises(InvalidInputError):  # an OpenAI-only field is not an Anthropic one
        anthropic.run_chat_completions(MESSAGES, frequency_penalty=0.5)
    assert fault_server.requests == []
    fault_server.add(200, {"id": "m", "type": "message", "role": "assistant", "model": "c",
                           "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                           "usage": {"input_tokens": 1, "output_tokens": 1}})
    assert anthropic.run_chat_completions(MESSAGES, top_k=3, stop=["\n"], metadata={"user_id": "u"}) == "ok"
    body = fault_server.requests[0].json()
    assert body["top_k"] == 3 and body["stop_sequences"] == ["\n"] and body["metadata"] == {"user_id": "u"}
