"""logprobs=True, top_logprobs=k -> result.logprobs (TokenLogprob: token, logprob, top
alternatives), from the real llama-cpp-python server and from bodies in OpenAI's shape."""

from __future__ import annotations

import json
import math
import pickle

import pytest

from conftest import spec_validator

from gen_ai.providers.openai import OpenAICodec, OpenAIStreamParser, logprobs_from_json
from gen_ai.types import Call, TokenLogprob

MESSAGES = [{"role": "user", "content": "Say hello."}]


def test_real_server_chat_logprobs(client):
    result = client.run_chat_completions(MESSAGES, max_tokens=5, logprobs=True, top_logprobs=3)
    lps = result.logprobs
    assert lps and all(isinstance(t, TokenLogprob) for t in lps)
    assert "".join(t.token for t in lps) == result
    for t in lps:
        assert t.logprob <= 0 and 0 < t.prob <= 1
        assert 1 <= len(t.top) <= 3
        assert t.top == sorted(t.top, key=lambda pair: -pair[1])
    # temperature=0: the chosen token is the most likely one.
    assert all(math.isclose(t.top[0][1], t.logprob, abs_tol=1e-4) or t.top[0][1] >= t.logprob for t in lps)
    assert client.run_chat_completions(MESSAGES, max_tokens=3).logprobs is None


def test_real_server_streamed_logprobs(client):
    stream = client.run_chat_completions_stream(MESSAGES, max_tokens=5, logprobs=True, top_logprobs=2)
    text = "".join(stream)
    assert stream.logprobs and "".join(t.token for t in stream.logprobs) == text
    assert all(len(t.top) <= 2 for t in stream.logprobs)


def test_real_server_completion_logprobs(client):
    result = client.run_completions("The capital of France is", max_tokens=4, top_logprobs=2)
    assert result.logprobs and "".join(t.token for t in result.logprobs) == result
    assert all(len(t.top) <= 2 for t in result.logprobs)


def test_request_fields_validate(openai_spec):
    codec = OpenAICodec(api_key="k", endpoint="http://x", model_name="gpt-4o")
    body = json.loads(codec.build_request(Call("chat", messages=MESSAGES, logprobs=True, top_logprobs=4)).body)
    assert body["logprobs"] is True and body["top_logprobs"] == 4
    spec_validator(openai_spec, "CreateChatCompletionRequest").validate(body)
    body = json.loads(codec.build_request(Call("completion", prompt="x", logprobs=True, top_logprobs=2)).body)
    assert body["logprobs"] == 2
    spec_validator(openai_spec, "CreateCompletionRequest").validate(body)


def test_openai_documented_shapes_and_stream_splits():
    chat = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                         "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": None},
                                          {"token": "Hello", "logprob": -2.5, "bytes": None}]}], "refusal": None}
    [t] = logprobs_from_json(chat)
    assert (t.token, t.logprob, t.top, t.bytes) == ("Hi", -0.1, [("Hi", -0.1), ("Hello", -2.5)], [72, 105])
    assert pickle.loads(pickle.dumps(t)) == t and t.to_dict()["top"] == [["Hi", -0.1], ["Hello", -2.5]]
    legacy = {"tokens": [" Paris", "."], "token_logprobs": [-0.2, -1.0],
              "top_logprobs": [{" Paris": -0.2, " Lyon": -3.0}, {".": -1.0}], "text_offset": [0, 6]}
    assert [(t.token, t.top) for t in logprobs_from_json(legacy)] == [(" Paris", [(" Paris", -0.2), (" Lyon", -3.0)]),
                                                                      (".", [(".", -1.0)])]
    events = [{"choices": [{"index": 0, "delta": {"content": tok}, "logprobs": {"content": [
        {"token": tok, "logprob": -0.5, "top_logprobs": []}]}}]} for tok in ("a", "b")]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    for k in range(len(data) + 1):
        parser = OpenAIStreamParser("chat", "openai", {})
        parser.feed(data[:k])
        parser.feed(data[k:])
        parser.close()
        assert [t.token for t in parser.logprobs] == ["a", "b"]


def test_gemini_logprobs_request_and_result():
    from test_reasoning_out import gemini_body, result_of

    from gen_ai.providers.gemini import GeminiCodec

    codec = GeminiCodec(api_key="k", model_name="gemini-2.5-flash")
    call = Call("chat", messages=MESSAGES, logprobs=True, top_logprobs=2)
    config = json.loads(codec.build_request(call).body)["generationConfig"]
    assert config["responseLogprobs"] is True and config["logprobs"] == 2
    body = gemini_body([{"text": "Hi"}])
    body["candidates"][0]["logprobsResult"] = {
        "topCandidates": [{"candidates": [{"token": "Hi", "logProbability": -0.1},
                                          {"token": "Hello", "logProbability": -2.4}]}],
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}]}
    [t] = result_of(codec, body, call).logprobs
    assert (t.token, t.logprob, t.top) == ("Hi", -0.1, [("Hi", -0.1), ("Hello", -2.4)])


def test_local_in_process_model_logprobs():
    """provider="local" (llama-cpp-python in-process) takes the same keywords."""
    from gen_ai.factory import create_client

    from gen_ai.errors import BadRequestError

    with create_client(provider="local", n_threads=1) as local:
        with pytest.raises(BadRequestError, match="logits_all"):
            local.run_chat_completions(MESSAGES, max_tokens=4, logprobs=True)
    with create_client(provider="local", n_threads=1, logits_all=True) as local:
        result = local.run_chat_completions(MESSAGES, max_tokens=4, logprobs=True, top_logprobs=2)
        assert result.logprobs and "".join(t.token for t in result.logprobs) == result
        assert all(1 <= len(t.top) <= 2 for t in result.logprobs)
