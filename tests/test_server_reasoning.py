"""reasoning_effort against real servers (SmolLM2-135M has no thinking, so this checks what the
servers accept): llama.cpp's server (xllamacpp), vLLM on CPU, llama-cpp-python's server; both
wire protocols where served."""

from __future__ import annotations

import pytest

from gen_ai.factory import create_client

MESSAGES = [{"role": "user", "content": "Say hello."}]
SERVERS = ["xllamacpp_server", pytest.param("vllm_server", marks=pytest.mark.heavy)]


@pytest.fixture(params=SERVERS)
def handle(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("effort", ["low", "none"])
def test_reasoning_effort_is_accepted(handle, api, effort):
    client = create_client(endpoint=handle.url, model_name=handle.model, api_key=handle.api_key, timeout=120,
                           api=api)
    result = client.run_chat_completions(MESSAGES, max_tokens=8, reasoning_effort=effort)
    assert result.strip() and result.reasoning is None
    stream = client.run_chat_completions_stream(MESSAGES, max_tokens=8, reasoning_effort=effort)
    assert "".join(stream).strip() and stream.reasoning is None and stream.first_reasoning_latency is None
    # Seen: llama.cpp and vLLM 0.32 take both values (no adaptation needed).
    print(f"\n{handle.name} {api} {effort}: learned {client.server_state!r}")
    assert "reasoning_effort" not in client.server_state.rejected_fields
    client.close()


def test_llama_cpp_python_server_takes_reasoning_effort(client):
    """llama-cpp-python's server (fixture ``client``) ignores the unknown fields with 200."""
    assert client.run_chat_completions(MESSAGES, max_tokens=4, reasoning_effort="none").strip()
