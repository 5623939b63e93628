"""guided_json dialects, detection and n top-ups against real servers: llama.cpp's own server
(xllamacpp, 2 slots), vLLM on CPU and litellm's proxy in front of llama.cpp (fixtures in
tests/servers.py). The scripted side (32 concurrent calls, refusals) is tests/test_dialects.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from gen_ai.errors import SchemaValidationError
from gen_ai.factory import create_client

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"],
          "additionalProperties": False}
MESSAGES = [{"role": "user", "content": "Name a city in France. Answer in JSON."}]
PROMPT = "A city in France, as JSON: "
SERVERS = ["xllamacpp_server", pytest.param("vllm_server", marks=pytest.mark.heavy)]
EXPECTED = {"xllamacpp_server": ("llama.cpp", "json_schema", "json_schema_field"),
            "vllm_server": ("vllm", "json_schema", "json_schema")}


@pytest.fixture(params=SERVERS)
def real(request):
    handle = request.getfixturevalue(request.param)
    return request.param, handle


def client_for(handle, **options):
    return create_client(endpoint=handle.url, model_name=handle.model, api_key=handle.api_key, timeout=120,
                         **options)


def check(parsed):
    assert isinstance(parsed, dict) and isinstance(parsed["city"], str) and parsed["city"]


def test_detection_and_guided_chat(real):
    name, handle = real
    client = client_for(handle)
    result = client.run_chat_completions(MESSAGES, guided_json=SCHEMA, max_tokens=60)
    check(result.parsed)
    server, chat, completion = EXPECTED[name]
    state = client.server_state
    assert state.server == server
    assert client.codec.dialects("chat", state)[0] == chat
    assert client.codec.dialects("completion", state)[0] == completion
    if server == "vllm":
        assert state.version  # from GET /version; 0.12 and later: no guided_json


def test_guided_chat_stream(real):
    _, handle = real
    stream = client_for(handle).run_chat_completions_stream(MESSAGES, guided_json=SCHEMA, max_tokens=60)
    text = "".join(stream)
    assert text == stream.text and stream.finish_reason == "stop"
    check(stream.parsed)


def test_guided_completion(real):
    """llama.cpp's /completions ignores response_format: the top-level json_schema is what makes
    the answer valid here (vLLM enforces response_format on /completions)."""
    _, handle = real
    result = client_for(handle).run_completions(PROMPT, guided_json=SCHEMA, max_tokens=60)
    check(result.parsed)
    assert result.finish_reason == "stop"


def test_guided_completion_stream(real):
    _, handle = real
    stream = client_for(handle).run_completions_stream(PROMPT, guided_json=SCHEMA, max_tokens=60)
    assert "".join(stream) == stream.text
    check(stream.parsed)


def test_cut_off_answer_names_max_tokens(real):
    _, handle = real
    with pytest.raises(SchemaValidationError) as info:
        client_for(handle, schema_retries=2).run_chat_completions(MESSAGES, guided_json=SCHEMA, max_tokens=4)
    assert "max_tokens=4" in info.value.message and "cut off" in info.value.message
    assert "max_tokens=64" in info.value.suggestion


def test_concurrent_guided_calls_probe_once(real):
    _, handle = real
    client = client_for(handle)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: client.run_chat_completions(MESSAGES, guided_json=SCHEMA, max_tokens=40),
                                range(8)))
    for result in results:
        check(result.parsed)
    assert client.server_state.probe.runs == 1


def test_concurrent_guided_calls_probe_once_async(real):
    _, handle = real
    client = client_for(handle)

    async def main():
        try:
            return await asyncio.gather(*(client.arun_chat_completions(MESSAGES, guided_json=SCHEMA, max_tokens=40)
                                          for _ in range(8)))
        finally:
            await client.aclose()

    for result in asyncio.run(main()):
        check(result.parsed)
    assert client.server_state.probe.runs == 1


def test_n3_on_llama_cpp_with_2_slots(xllamacpp_server):
    """llama.cpp's server answers n=3 with a 400 (`Field 'n': Value must be between 1 <= value <= 2`
    with 2 slots): the client tops up with n=1 calls, and learns it once."""
    client = client_for(xllamacpp_server)
    answers = client.run_chat_completions(MESSAGES, n=3, max_tokens=8, temperature=0.8)
    assert len(answers) == 3 and all(isinstance(a, str) and a for a in answers)
    assert client.server_state.max_n == 2
    assert answers.usage.total_tokens == sum(a.usage.total_tokens for a in answers)
    assert answers.usage.prompt_tokens == 3 * answers[0].usage.prompt_tokens  # three requests, each counted
    again = client.run_chat_completions(MESSAGES, n=3, max_tokens=8, temperature=0.8)
    assert len(again) == 3


def test_n3_async_on_llama_cpp(xllamacpp_server):
    client = client_for(xllamacpp_server)

    async def main():
        try:
            return await client.arun_chat_completions(MESSAGES, n=3, max_tokens=8, temperature=0.8)
        finally:
            await client.aclose()

    answers = asyncio.run(main())
    assert len(answers) == 3 and client.server_state.max_n == 2


@pytest.mark.heavy
def test_n3_on_vllm_is_one_request(vllm_server):
    client = client_for(vllm_server)
    answers = client.run_chat_completions(MESSAGES, n=3, max_tokens=8, temperature=0.8)
    assert len(answers) == 3 and client.server_state.max_n is None


def litellm_client(proxy, model):
    return create_client(endpoint=proxy.url, model_name=model, api_key=proxy.api_key, timeout=120)


def test_guided_json_through_litellm_to_llama_cpp(litellm_proxy):
    """litellm's proxy answers /v1/models with owned_by "openai"; its /v1/model/info names it
    (and the route). Chat: response_format passes through to llama.cpp. Completions: litellm
    answers response_format with a 500, the client falls back to a GBNF grammar, passed on."""
    client = litellm_client(litellm_proxy, "via-xllamacpp")
    check(client.run_chat_completions(MESSAGES, guided_json=SCHEMA, max_tokens=60).parsed)
    assert client.server_state.server == "litellm"
    check(client.run_completions(PROMPT, guided_json=SCHEMA, max_tokens=60).parsed)
    assert client.server_state.completion_dialect == "grammar"
    stream = client.run_completions_stream(PROMPT, guided_json=SCHEMA, max_tokens=60)
    "".join(stream)
    check(stream.parsed)
    answers = client.run_chat_completions(MESSAGES, n=3, max_tokens=8, temperature=0.8)
    assert len(answers) == 3 and client.server_state.max_n == 2  # llama.cpp's 400, relayed by litellm


def test_guided_json_through_litellm_to_vllm(litellm_proxy):
    """A hosted_vllm/ route is detected as vLLM: completions go json_schema (litellm's 500) ->
    structured_outputs, which litellm passes on and vLLM enforces; never guided_json."""
    client = litellm_client(litellm_proxy, "via-vllm")
    check(client.run_chat_completions(MESSAGES, guided_json=SCHEMA, max_tokens=60).parsed)
    assert client.server_state.server == "vllm"
    check(client.run_completions(PROMPT, guided_json=SCHEMA, max_tokens=60).parsed)
    assert client.server_state.completion_dialect == "structured_outputs"
