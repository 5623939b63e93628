"""The openai codec and SSE decoder as pure functions: bytes in, objects out."""

from __future__ import annotations

import json

import pytest

from gen_ai._retry import backoff_delay, parse_retry_after
from gen_ai._sse import SSEDecoder
from gen_ai.errors import ServerError, StreamError, StreamTruncatedError
from gen_ai.providers.openai import OpenAICodec, OpenAIStreamParser
from gen_ai.types import Call, RawResponse


def test_sse_decoder_handles_any_split():
    raw = b"event: x\ndata: {\"a\": 1}\n\n: comment\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n"
    for size in (1, 2, 3, 5, 64):
        decoder = SSEDecoder()
        events = []
        for i in range(0, len(raw), size):
            events += decoder.feed(raw[i:i + size])
        events += decoder.close()
        assert events == [("x", b'{"a": 1}'), (None, b"line1\nline2"), (None, b"[DONE]")]


def test_sse_decoder_crlf_split_between_reads():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r\ndata: b\r\n\r\n") == [(None, b"a"), (None, b"b")]


def test_stream_parser_n_choices_and_usage():
    parser = OpenAIStreamParser("chat", "openai", {"content-type": "text/event-stream"})
    chunk = (b'data: {"id":"1","model":"m","choices":[{"index":0,"delta":{"content":"a"}},'
             b'{"index":1,"delta":{"content":"b"}}]}\n\n'
             b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
             b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n'
             b"data: [DONE]\n\n")
    assert parser.feed(chunk) == ["a"]
    assert parser.close() == []
    assert parser.texts == ["a", "b"] and parser.finish_reason == "stop" and parser.usage.total_tokens == 3


def test_stream_parser_truncation_and_errors():
    parser = OpenAIStreamParser("completion", "openai", {})
    parser.feed(b'data: {"choices":[{"index":0,"text":"x"}]}\n\n')
    with pytest.raises(StreamTruncatedError):
        parser.close()
    parser = OpenAIStreamParser("chat", "openai", {})
    with pytest.raises(StreamError, match="overloaded"):
        parser.feed(b'data: {"object":"error","message":"overloaded","code":503}\n\n')


def test_parse_error_html_and_retry_after():
    codec = OpenAICodec(endpoint="http://x", model_name="m")
    raw = RawResponse(503, {"retry-after": "7"}, b"<html><title>503 Service Unavailable</title></html>",
                      "http://x/v1/chat/completions", "POST")
    err = codec.parse_error(raw)
    assert isinstance(err, ServerError) and err.retryable and err.retry_after == 7
    assert "503 Service Unavailable" in err.message


def test_retry_after_parsing_and_backoff():
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "2"}) == 2
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0
    assert backoff_delay(0, 3.0) == 3.0
    delays = [backoff_delay(i) for i in range(6)]
    assert all(0 < d <= 8 for d in delays) and delays[3] > delays[0]


def test_dialect_learning_and_fallback():
    from gen_ai._state import ServerState
    from gen_ai.structured import Schema

    codec = OpenAICodec(endpoint="http://x", model_name="m")
    state = ServerState()
    call = Call("chat", messages=[{"role": "user", "content": "x"}], schema=Schema.from_user({"type": "object"}))
    probe = codec.probe_request(call, state)
    assert probe.url == "http://x/v1/models"
    found = {}
    follow = codec.learn(call, probe, RawResponse(200, {}, b'{"data":[{"id":"a","owned_by":"vllm"}]}', "", "GET"),
                         found)
    assert follow.url == "http://x/version" and found == {"server": "vllm"}
    assert codec.learn(call, follow, RawResponse(200, {}, b'{"version":"0.32.0"}', "", "GET"), found) is None
    state.learn(found)
    assert state.server == "vllm" and codec.probe_request(call, state) is None
    err = codec.parse_error(RawResponse(400, {}, b'{"error":{"message":"response_format json_schema unsupported"}}',
                                        "", "POST"))
    first = codec.build_request(call, state)
    assert first.facts == (None, "json_schema")
    changes = codec.fallback(call, first, err, state)
    assert changes == {"chat_dialect": (None, "structured_outputs")}
    assert state.apply(changes) and state.chat_dialect == "structured_outputs"
    # A second request that failed with the same (old) dialect does not move the state again.
    assert codec.fallback(call, first, err, state) == changes and not state.apply(changes)
    second = codec.build_request(call, state)
    assert json.loads(second.body)["structured_outputs"] == {"json": {"type": "object"}}
    # The end of vLLM's list: nothing enforceable is left, and the error says so.
    assert codec.fallback(call, second, err, state) is None
    assert "no other structured-output field" in err.suggestion
    other = codec.parse_error(RawResponse(400, {}, b'{"error":{"message":"bad max_tokens"}}', "", "POST"))
    assert codec.fallback(call, second, other, state) is None
