"""Honest usage: one meaning of Usage for every provider, from bodies in each provider's documented
shape (prompt_tokens counts every input token, cached included; total = prompt + completion)."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from gen_ai.providers import anthropic, bedrock, gemini, openai
from gen_ai.types import Usage


def test_usage_fields_pickle_add_and_dict():
    u = Usage(100, 20, None, cached_tokens=80, cache_write_tokens=5, reasoning_tokens=12)
    assert u.total_tokens == 120
    assert pickle.loads(pickle.dumps(u)) == u
    assert u.to_dict() == {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                           "cached_tokens": 80, "cache_write_tokens": 5, "reasoning_tokens": 12}
    s = u + Usage(1, 2)
    assert (s.prompt_tokens, s.completion_tokens, s.total_tokens, s.cached_tokens, s.cache_write_tokens,
            s.reasoning_tokens) == (101, 22, 123, 80, 5, 12)
    assert "cached_tokens=80" in repr(u) and "cached" not in repr(Usage(1, 2))
    assert not hasattr(u, "__dict__")  # slots: cheap


def test_openai_details():
    # OpenAI's documented shape (CompletionUsage in the OpenAPI spec).
    u = openai.usage_from_json({
        "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (2006, 300, 2306)
    assert (u.cached_tokens, u.reasoning_tokens, u.cache_write_tokens) == (1920, 256, 0)


def test_openai_compatible_servers():
    # llama.cpp's server: prompt_tokens_details.cached_tokens; vLLM: details null unless enabled.
    u = openai.usage_from_json({"completion_tokens": 5, "prompt_tokens": 30, "total_tokens": 35,
                                "prompt_tokens_details": {"cached_tokens": 29}})
    assert (u.cached_tokens, u.reasoning_tokens) == (29, 0)
    u = openai.usage_from_json({"prompt_tokens": 3, "total_tokens": 8, "completion_tokens": 5,
                                "prompt_tokens_details": None})
    assert (u.prompt_tokens, u.total_tokens, u.cached_tokens) == (3, 8, 0)
    # DeepSeek: prompt_cache_hit_tokens / prompt_cache_miss_tokens.
    u = openai.usage_from_json({"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60,
                                "prompt_cache_hit_tokens": 40, "prompt_cache_miss_tokens": 10,
                                "completion_tokens_details": {"reasoning_tokens": 7}})
    assert (u.cached_tokens, u.reasoning_tokens) == (40, 7)
    # total is prompt + completion even when a server's own total disagrees (llama.cpp, n > 1).
    u = openai.usage_from_json({"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 12})
    assert u.total_tokens == 14


def test_anthropic_cache_tokens_are_added_to_prompt():
    # Messages API: input_tokens excludes cache reads and writes.
    u = anthropic.usage_from_json({"input_tokens": 12, "cache_creation_input_tokens": 1000,
                                   "cache_read_input_tokens": 3000, "output_tokens": 50})
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (4012, 50, 4062)
    assert (u.cached_tokens, u.cache_write_tokens, u.reasoning_tokens) == (3000, 1000, 0)


def test_anthropic_stream_usage_keeps_cache_counts():
    parser = anthropic.AnthropicStreamParser("anthropic")
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "model": "claude", "usage": {"input_tokens": 5, "cache_read_input_tokens": 100,
                                                        "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    raw = b"".join(f"event: {n}\ndata: {json.dumps(o)}\n\n".encode() for n, o in events)
    parser.feed(raw)
    parser.close()
    assert parser.usage.to_dict() == {"prompt_tokens": 105, "completion_tokens": 9, "total_tokens": 114,
                                      "cached_tokens": 100, "cache_write_tokens": 0, "reasoning_tokens": 0}


@pytest.mark.parametrize("usage, prompt", [
    # Claude on Bedrock: inputTokens leaves the cache out, totalTokens counts it.
    ({"inputTokens": 4, "outputTokens": 183, "totalTokens": 4237, "cacheReadInputTokens": 4050,
      "cacheWriteInputTokens": 0}, 4054),
    # A model that counts cached tokens inside inputTokens (total = input + output): not added twice.
    ({"inputTokens": 4054, "outputTokens": 183, "totalTokens": 4237, "cacheReadInputTokens": 4050}, 4054),
])
def test_bedrock_cache_tokens(usage: dict[str, Any], prompt: int):
    u = bedrock._usage(usage)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens) == (prompt, 183, 4237, 4050)


def test_bedrock_cache_write():
    u = bedrock._usage({"inputTokens": 10, "outputTokens": 5, "totalTokens": 2015, "cacheWriteInputTokens": 2000})
    assert (u.prompt_tokens, u.cache_write_tokens, u.total_tokens) == (2010, 2000, 2015)


def test_gemini_cached_and_thoughts():
    # UsageMetadata: promptTokenCount includes cachedContentTokenCount; thoughts are output.
    u = gemini.usage_from_json({"promptTokenCount": 1200, "candidatesTokenCount": 40, "thoughtsTokenCount": 300,
                                "cachedContentTokenCount": 1024, "totalTokenCount": 1540})
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (1200, 340, 1540)
    assert (u.cached_tokens, u.reasoning_tokens) == (1024, 300)
    u = gemini.usage_from_json({"promptTokenCount": 10, "candidatesTokenCount": 2, "toolUsePromptTokenCount": 7,
                                "totalTokenCount": 19})
    assert (u.prompt_tokens, u.total_tokens) == (17, 19)


def test_batch_stats_sum_the_details():
    from gen_ai.batch import BatchStats

    stats = BatchStats(2)
    stats.add_usage(Usage(10, 5, None, 8, 1, 3))
    stats.add_usage(Usage(20, 5, None, 2, 0, 1))
    assert stats.usage == Usage(30, 10, 40, 10, 1, 4)
    assert stats.to_dict()["cached_tokens"] == 10


def test_usage_of_one_response_with_several_answers_is_not_repeated(fault_server):
    """n=3 answered in one response: its usage is on the first answer only; they add up to the total."""
    from fault_server import chat_body

    from gen_ai.factory import create_client

    fault_server.add(200, chat_body("x", n=3))
    answers = create_client(endpoint=fault_server.url, model_name="m").run_chat_completions(
        [{"role": "user", "content": "hi"}], n=3)
    assert len(answers) == 3
    assert [a.usage.total_tokens if a.usage else None for a in answers] == [7, None, None]
    assert answers.usage.total_tokens == 7
