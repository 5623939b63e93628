"""Property tests: every codec's response, error and stream parsers, fed arbitrary and mutated
bodies (valid JSON of the wrong shape, truncated UTF-8, huge numbers, nested nulls, binary
garbage), raise nothing but gen_ai errors; text a stream delivered before an error stays on the
parser; and through a real loopback server ``return_error=True`` always returns a dict.

Bounded (a few hundred examples in all, a few seconds) so it runs with the rest of the suite.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import pytest
from fault_server import FaultServer, Step, chat_body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen_ai import GenAIError, create_client
from gen_ai.types import Call, RawResponse

FIELDS = ["choices", "message", "content", "delta", "text", "index", "finish_reason", "usage", "prompt_tokens",
          "completion_tokens", "total_tokens", "error", "type", "model", "id", "tool_calls", "candidates", "parts",
          "finishReason", "usageMetadata", "promptFeedback", "blockReason", "promptTokenCount", "output",
          "stopReason", "inputTokens", "outputTokens", "input_tokens", "output_tokens", "stop_reason", "code",
          "status", "details", "retryDelay", "innererror", "content_filter_result", "detail", "loc", "msg",
          "object", "data", "responseId", "modelVersion", "thought", "toolUse", "input", "__type", "Message"]
KEYS = st.one_of(st.sampled_from(FIELDS), st.text(max_size=6))
LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                 st.sampled_from(["stop", "length", "SAFETY", "end_turn", "tool_use", "message_stop",
                                  "content_block_delta", "text_delta", "message_delta", "error", "1e400"]))
JSON = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                  st.dictionaries(KEYS, inner, max_size=5)), max_leaves=25)

VALID = {
    "openai": chat_body("hi"),
    "anthropic": {"id": "m", "type": "message", "role": "assistant", "model": "c", "stop_reason": "end_turn",
                  "content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 1, "output_tokens": 1}},
    "gemini": {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "hi"}]},
                               "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}},
    "bedrock": {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                "stopReason": "end_turn", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}},
}


@st.composite
def mutated(draw: Any, base: Any) -> Any:
    """``base`` with one subtree (chosen by walking down from the root) replaced."""
    if isinstance(base, dict) and base and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(base)))
        return {**base, key: draw(mutated(base[key]))}
    if isinstance(base, list) and base and draw(st.booleans()):
        i = draw(st.integers(0, len(base) - 1))
        return base[:i] + [draw(mutated(base[i]))] + base[i + 1:]
    return draw(JSON)


def as_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def bodies(draw: Any, base: Any) -> bytes:
    kind = draw(st.sampled_from(["json", "mutated", "truncated", "garbage", "utf8"]))
    if kind == "json":
        return as_bytes(draw(JSON))
    if kind == "mutated":
        return as_bytes(draw(mutated(base)))
    if kind == "truncated":
        raw = as_bytes(draw(mutated(base)))
        return raw[: draw(st.integers(0, len(raw)))]
    if kind == "utf8":  # a multibyte character cut in half, inside otherwise valid JSON
        text = json.dumps({"choices": [{"message": {"content": "é漢"}}]}, ensure_ascii=False).encode()
        cut = text.index("漢".encode()) + 1
        return text[:cut] + text[cut + 2:]
    return draw(st.binary(max_size=64))


CODECS: dict[str, Any] = {}


def codec(name: str) -> Any:
    if name not in CODECS:
        options: dict[str, Any] = {
            "openai": {"endpoint": "http://127.0.0.1:9/v1", "model_name": "m"},
            "azure": {"endpoint": "http://127.0.0.1:9", "deployment": "d", "api_key": "k-123456"},
            "anthropic": {"endpoint": "http://127.0.0.1:9", "api_key": "sk-ant-1", "model_name": "c"},
            "gemini": {"endpoint": "http://127.0.0.1:9", "api_key": "g-key-1", "model_name": "g"},
            "bedrock": {"endpoint": "http://127.0.0.1:9", "api_key": "AKIAFUZZ", "secret_key": "fuzz-secret",
                        "region": "us-east-1", "model_name": "amazon.nova-lite-v1:0"},
            "local": {},
        }[name]
        CODECS[name] = create_client(name, **options).codec
    return CODECS[name]


PROVIDERS = ["openai", "azure", "anthropic", "gemini", "bedrock", "local"]
BASE = {"openai": VALID["openai"], "azure": VALID["openai"], "local": VALID["openai"],
        "anthropic": VALID["anthropic"], "gemini": VALID["gemini"], "bedrock": VALID["bedrock"]}
CALLS = [Call("chat", messages=[{"role": "user", "content": "hi"}]), Call("completion", prompt="hi"),
         Call("chat", messages=[{"role": "user", "content": "hi"}], n=2)]
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def only_gen_ai_errors(fn: Any) -> Any:
    try:
        return fn()
    except GenAIError as exc:
        assert isinstance(str(exc), str) and isinstance(exc.to_dict(), dict)
        return exc
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{type(exc).__name__} escaped the error tree: {exc!r}")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_parse_response_raises_only_gen_ai_errors(provider):
    c = codec(provider)

    @FUZZ
    @given(body=bodies(BASE[provider]), call=st.sampled_from(CALLS))
    def check(body: bytes, call: Call) -> None:
        response = RawResponse(200, {}, body, "http://127.0.0.1:9/x", "POST")
        result = only_gen_ai_errors(lambda: c.parse_response(call, response))
        if not isinstance(result, GenAIError):  # a parsed answer has the promised shape
            assert all(isinstance(t, str) for t in result.texts)
            assert len(result.finish_reasons) == len(result.texts)
            assert result.usage is None or isinstance(result.usage.total_tokens, int)

    check()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_parse_error_always_gives_a_gen_ai_error(provider):
    c = codec(provider)
    error_base = {"error": {"message": "m", "type": "t", "code": "c", "status": "UNAVAILABLE",
                            "details": [{"retryDelay": "1s"}], "innererror": {"code": "content_filter"}}}

    @FUZZ
    @given(body=bodies(error_base), status=st.sampled_from([400, 401, 403, 404, 408, 422, 429, 500, 503, 529]),
           headers=st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "x-amzn-errortype"]),
                                   st.text(max_size=12), max_size=2))
    def check(body: bytes, status: int, headers: dict[str, str]) -> None:
        response = RawResponse(status, headers, body, "http://127.0.0.1:9/x", "POST")
        error = c.parse_error(response)  # must not raise at all: it *returns* the error
        assert isinstance(error, GenAIError) and error.status_code == status
        assert error.retry_after is None or error.retry_after >= 0

    check()


def sse_events(provider: str, values: list[Any]) -> bytes:
    out = b""
    for value in values:
        name = value.get("type") if isinstance(value, dict) and isinstance(value.get("type"), str) else None
        head = f"event: {name}\n".encode() if provider == "anthropic" and name else b""
        out += head + b"data: " + as_bytes(value) + b"\n\n"
    return out


STREAM_BASE = {
    "openai": {"choices": [{"index": 0, "delta": {"content": "tok"}, "finish_reason": None}]},
    "anthropic": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tok"}},
    "gemini": {"candidates": [{"index": 0, "content": {"parts": [{"text": "tok"}]}}]},
}


def aws_frame(headers: dict[str, str], payload: bytes) -> bytes:
    raw = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                   for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(raw) + len(payload) + 4, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw + payload
    return message + struct.pack(">I", zlib.crc32(message))


@st.composite
def stream_bytes(draw: Any, provider: str) -> bytes:
    if provider == "bedrock":
        frames = []
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["event", "exception", "error"]))
            name = draw(st.sampled_from(["contentBlockDelta", "messageStop", "metadata", "messageStart", "x"]))
            payload = as_bytes(draw(mutated({"delta": {"text": "tok"}, "stopReason": "end_turn",
                                             "usage": {"inputTokens": 1}})))
            frames.append(aws_frame({":event-type": name, ":message-type": kind, ":exception-type": name,
                                     ":error-code": name}, payload))
        raw = b"".join(frames)
        if draw(st.booleans()):
            raw = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=16))
        return raw
    key = "openai" if provider in ("openai", "azure", "local") else provider
    values = draw(st.lists(st.one_of(mutated(STREAM_BASE[key]), JSON), max_size=5))
    raw = sse_events(provider, values)
    if draw(st.booleans()):
        raw += draw(st.sampled_from([b"data: [DONE]\n\n", b"data: {\"error\": {\"message\": \"x\"}}\n\n",
                                     b"data: {not json\n\n", b"data: \xff\xfe\n\n", b""]))
    return raw


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_parsers_raise_only_gen_ai_errors_and_keep_delivered_text(provider):
    c = codec(provider)

    @FUZZ
    @given(raw=stream_bytes(provider), cuts=st.lists(st.integers(0, 400), max_size=4),
           call=st.sampled_from(CALLS[:2]), json_answer=st.booleans())
    def check(raw: bytes, cuts: list[int], call: Call, json_answer: bool) -> None:
        call = call.replace(stream=True)
        headers = {"content-type": "application/json" if json_answer and provider != "bedrock"
                   else "text/event-stream"}
        parser = c.stream_parser(call, headers)
        bounds = sorted({min(x, len(raw)) for x in cuts} | {0, len(raw)})
        chunks = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        delivered: list[str] = []

        def run() -> None:
            for chunk in chunks:
                delivered.extend(parser.feed(chunk))
            delivered.extend(parser.close())

        only_gen_ai_errors(run)
        assert all(isinstance(d, str) for d in delivered)
        assert parser.text == "".join(delivered), "text handed out must be the text the parser keeps"

    check()


# -- through a real loopback server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_return_error_always_returns_a_dict_over_http(server, provider):
    options = {"openai": {"model_name": "m", "endpoint": server.url},
               "anthropic": {"model_name": "c", "api_key": "sk-ant-fuzz-1", "endpoint": f"http://127.0.0.1:{server.port}"},
               "gemini": {"model_name": "g", "api_key": "g-fuzz-key-1", "endpoint": f"http://127.0.0.1:{server.port}"}}
    client = create_client(provider, max_retries=0, **options[provider])
    messages = [{"role": "user", "content": "hi"}]

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies(BASE[provider]), status=st.sampled_from([200, 200, 200, 400, 429, 500]),
           n=st.sampled_from([1, 2]), stream=st.booleans())
    def check(body: bytes, status: int, n: int, stream: bool) -> None:
        server.script.clear()
        server.default = Step(status, body, content_type="application/json")
        if stream:
            s = client.run_chat_completions_stream(messages, n=n, return_error=True)
            deltas = list(s)
            assert s.error is None or (isinstance(s.error, dict) and s.error["type"])
            assert "".join(deltas) == s.text
        else:
            result, error = client.run_chat_completions(messages, n=n, return_error=True)
            assert (result is None) != (error is None)
            assert error is None or (isinstance(error, dict) and isinstance(error["message"], str))

    try:
        check()
    finally:
        server.default = None
        client.close()
