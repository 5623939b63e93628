"""The OpenAI-compatible client against the real llama-cpp-python server (SmolLM2-135M)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, Field

from gen_ai import ChatResult, ChatResults, Usage
from gen_ai.errors import BadRequestError
from gen_ai.factory import create_client

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


class CodeReview(BaseModel):
    overall_score: float = Field(..., ge=0, le=10, description="Overall code quality score")
    strengths: list[str] = Field(..., description="List of code strengths")
    weaknesses: list[str] = Field(..., description="List of code weaknesses")
    suggestions: list[str] = Field(..., description="List of improvement suggestions")


def test_chat_returns_text_with_metadata(client):
    result = client.run_chat_completions([SYSTEM, {"role": "user", "content": "What is Python?"}], max_tokens=16)
    assert isinstance(result, str) and isinstance(result, ChatResult)
    assert result.strip(), "the model answered nothing"
    assert result.finish_reason in ("stop", "length")
    assert isinstance(result.usage, Usage) and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.model and result.latency > 0
    assert result.raw["choices"][0]["message"]["content"] == result


def test_max_tokens_is_respected(client):
    result = client.run_chat_completions([{"role": "user", "content": "Write a long story."}], max_tokens=3)
    assert result.usage.completion_tokens <= 3
    assert result.finish_reason == "length"


def test_multi_turn_conversation(client):
    messages = [SYSTEM, {"role": "user", "content": "What is Python?"}]
    first = client.run_chat_completions(messages, max_tokens=12)
    messages.append({"role": "assistant", "content": first})
    messages.append({"role": "user", "content": "How does it compare to JavaScript?"})
    second = client.run_chat_completions(messages, max_tokens=12)
    assert second.strip()
    # The second prompt holds the whole conversation, so it is longer than the first.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_stream_yields_deltas_and_final_metadata(client):
    messages = [SYSTEM, {"role": "user", "content": "What is Python?"}]
    stream = client.run_chat_completions_stream(messages, max_tokens=16)
    deltas = list(stream)
    assert len(deltas) > 1 and all(isinstance(d, str) for d in deltas)
    assert "".join(deltas) == stream.text
    assert stream.finish_reason in ("stop", "length")
    assert stream.first_token_latency is not None and stream.latency >= stream.first_token_latency
    # llama-cpp-python is not bit-for-bit deterministic across calls (its prompt-prefix cache
    # changes the arithmetic), so streamed and non-streamed answers are not compared verbatim.
    assert stream.text.strip()


def test_text_completions_and_stream(client):
    text = client.run_completions("The capital of France is", max_tokens=8)
    assert isinstance(text, ChatResult) and text.strip()
    assert text.raw["object"] == "text_completion" and text.usage.completion_tokens > 0
    stream = client.run_completions_stream("The capital of France is", max_tokens=8)
    deltas = list(stream)
    assert len(deltas) > 1 and "".join(deltas) == stream.text
    assert stream.finish_reason in ("stop", "length")


def test_guided_json_with_pydantic_model(client):
    messages = [
        {"role": "system", "content": "You are an expert code reviewer."},
        {"role": "user", "content": "Review this code: def hello(): print('Hello')"},
    ]
    result = client.run_chat_completions(messages, guided_json=CodeReview, max_tokens=300)
    review = CodeReview.model_validate_json(result)  # the text itself is valid JSON for the schema
    assert isinstance(result.parsed, CodeReview)
    assert result.parsed == review
    # llama-cpp-python only understands {type: json_object, schema}: auto-detection must pick it.
    assert client.server_state.server == "llama-cpp-python"
    assert client.codec.dialects("chat", client.server_state) == ("json_object",)


def test_guided_json_as_dict_and_string(client):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    result = client.run_chat_completions([{"role": "user", "content": "What is 2 + 2?"}], guided_json=schema,
                                         max_tokens=30)
    assert isinstance(result.parsed, dict) and isinstance(result.parsed["answer"], int)
    import json

    again = client.run_completions("2 + 2 as JSON: ", guided_json=json.dumps(schema), max_tokens=30)
    assert isinstance(again.parsed["answer"], int)


def test_forced_json_schema_dialect_falls_back(llama_server):
    """With dialect forced to json_schema, the server's rejection of that field makes the client
    fall back to json_object instead of failing."""
    client = create_client(endpoint=llama_server, model_name="smollm2", dialect="json_schema")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    result = client.run_chat_completions([{"role": "user", "content": "Is water wet?"}], guided_json=schema,
                                         max_tokens=20)
    assert isinstance(result.parsed["ok"], bool)
    assert client.server_state.chat_dialect == "json_object"


def test_n_2_returns_two_answers(client):
    """llama-cpp-python ignores n and returns one choice: the client asks again for the rest."""
    results = client.run_chat_completions([{"role": "user", "content": "Say hi."}], n=2, max_tokens=5,
                                          temperature=0.9, seed=None)
    assert isinstance(results, ChatResults) and len(results) == 2
    assert all(isinstance(r, ChatResult) and r.strip() for r in results)
    assert results.usage.completion_tokens >= results[0].usage.completion_tokens // 2


def test_extra_parameters_pass_through(client):
    result = client.run_chat_completions([{"role": "user", "content": "Count: 1, 2, 3,"}], max_tokens=20,
                                         stop=[","], top_k=1, seed=1)
    assert "," not in result


def test_bad_request_raises_and_returns_error(client):
    long_prompt = "word " * 5000  # longer than the server's 2048-token context
    with pytest.raises(BadRequestError) as info:
        client.run_chat_completions([{"role": "user", "content": long_prompt}], max_tokens=5)
    assert info.value.status_code == 400 and "context" in info.value.suggestion.lower()
    result, error = client.run_chat_completions([{"role": "user", "content": long_prompt}], max_tokens=5,
                                                return_error=True)
    assert result is None
    assert error["type"] == "BadRequestError" and error["status_code"] == 400
    assert error["message"] and error["suggestion"] and error["retryable"] is False
    assert error["url"].endswith("/v1/chat/completions") and error["method"] == "POST"


def test_return_error_success_shape(client):
    result, error = client.run_chat_completions([{"role": "user", "content": "Hi"}], max_tokens=4,
                                                return_error=True)
    assert error is None and isinstance(result, ChatResult)


def test_async_twins(client):
    async def main():
        messages = [{"role": "user", "content": "What is Python?"}]
        results = await asyncio.gather(*[client.arun_chat_completions(messages, max_tokens=6) for _ in range(3)])
        deltas = [d async for d in client.arun_chat_completions_stream(messages, max_tokens=6)]
        completion = await client.arun_completions("Hello", max_tokens=4)
        cdeltas = [d async for d in client.arun_completions_stream("Hello", max_tokens=4)]
        await client.aclose()
        return results, deltas, completion, cdeltas

    results, deltas, completion, cdeltas = asyncio.run(main())
    assert len(results) == 3 and all(isinstance(r, ChatResult) and r.strip() for r in results)
    assert all(r.usage.completion_tokens > 0 for r in results)
    assert len(deltas) > 1 and "".join(deltas).strip()
    assert isinstance(completion, ChatResult) and completion.strip() and "".join(cdeltas).strip()


def test_connection_reuse_and_threads(client):
    from concurrent.futures import ThreadPoolExecutor

    messages = [{"role": "user", "content": "Say yes."}]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: client.run_chat_completions(messages, max_tokens=3), range(8)))
    assert len(results) == 8 and all(r.strip() and r.usage.completion_tokens <= 3 for r in results)
