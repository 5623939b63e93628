"""provider="gemini": request conformance against Google's own protos
(../shared/specs/gemini-v1beta/*.proto, REST JSON = lowerCamelCase field names), and every client
method against a loopback server that speaks generateContent / streamGenerateContent?alt=sse with
bodies shaped as the protos say."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest
from conftest import SPECS
from fault_server import FaultServer, Step

from gen_ai.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentFilterError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ResponseError,
    ServerError,
    StreamError,
    StreamTruncatedError,
)
from gen_ai.factory import create_client
from gen_ai.structured import Schema
from gen_ai.types import Call

KEY = "AIzaSyTESTKEY_abcdefghijklmnop0123456"
MODEL = "gemini-test-1"
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
GEN_PATH = f"/v1/models/{MODEL}:generateContent"
STREAM_PATH = f"/v1/models/{MODEL}:streamGenerateContent?alt=sse"


# -- a small .proto reader: message -> fields, enum -> values ----------------------------------

_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][\w.]*|-?\d+(?:\.\d+)?|[{}\[\];=(),<>]')
_SCALARS = {
    "string": str, "bytes": str, "bool": bool,
    "int32": int, "int64": (int, str), "uint32": int, "uint64": (int, str), "sint32": int,
    "float": (int, float), "double": (int, float),
}


class Proto:
    def __init__(self, texts: list[str]) -> None:
        self.messages: dict[str, dict[str, tuple[str, bool]]] = {}  # full name -> field -> (type, repeated)
        self.enums: dict[str, set[str]] = {}
        for text in texts:
            self._parse(_TOKEN_RE.findall(re.sub(r"//[^\n]*", "", text)))

    def _parse(self, toks: list[str]) -> None:
        scope: list[str] = []  # message names; "" for a oneof block
        i = 0
        while i < len(toks):
            tok = toks[i]
            if tok in ("syntax", "package", "import", "option", "reserved"):
                while toks[i] != ";":
                    i += 1
                i += 1
            elif tok == "service":
                depth, i = 0, i + 2
                while True:
                    depth += {"{": 1, "}": -1}.get(toks[i], 0)
                    i += 1
                    if depth == 0:
                        break
            elif tok == "message" and toks[i + 2] == "{":
                scope.append(toks[i + 1])
                self.messages[self._name(scope)] = {}
                i += 3
            elif tok == "oneof" and toks[i + 2] == "{":
                scope.append("")
                i += 3
            elif tok == "enum" and toks[i + 2] == "{":
                name = self._name(scope + [toks[i + 1]])
                j = i + 3
                values = set()
                while toks[j] != "}":
                    if toks[j + 1] == "=":
                        values.add(toks[j])
                    while toks[j] != ";":
                        j += 1
                    j += 1
                self.enums[name] = values
                i = j + 1
            elif tok == "}":
                scope.pop()
                i += 1
            elif tok == ";":
                i += 1
            else:  # a field: [optional|repeated] type name = N [options];
                repeated = tok == "repeated"
                if tok in ("optional", "repeated"):
                    i += 1
                if tok == "map":  # map<K, V> name = N: a JSON object of V
                    i += 5
                    tok = "google.protobuf.Struct"
                    ftype, fname = tok, toks[i + 1]
                else:
                    ftype, fname = toks[i], toks[i + 1]
                assert toks[i + 2] == "=", toks[i: i + 5]
                self.messages[self._name([s for s in scope if s])][fname] = (ftype, repeated)
                while toks[i] != ";":
                    i += 1
                i += 1

    @staticmethod
    def _name(scope: list[str]) -> str:
        return ".".join(s for s in scope if s)

    def _resolve(self, ftype: str, scope: str, table: dict[str, Any]) -> str | None:
        parts = scope.split(".")
        for k in range(len(parts), -1, -1):
            candidate = ".".join(parts[:k] + [ftype])
            if candidate in table:
                return candidate
        return None

    def check(self, value: Any, message: str, path: str = "$") -> list[str]:
        """Errors where the REST JSON ``value`` does not fit proto message ``message``."""
        if not isinstance(value, dict):
            return [f"{path}: expected an object for {message}"]
        fields = self.messages[message]
        camel = {re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name): name for name in fields}
        errors = []
        for key, item in value.items():
            if key not in camel:
                errors.append(f"{path}.{key}: not a field of {message}")
                continue
            ftype, repeated = fields[camel[key]]
            if repeated:
                if not isinstance(item, list):
                    errors.append(f"{path}.{key}: expected a list")
                    continue
                for n, element in enumerate(item):
                    errors += self._check_value(element, ftype, message, f"{path}.{key}[{n}]")
            else:
                errors += self._check_value(item, ftype, message, f"{path}.{key}")
        return errors

    def _check_value(self, value: Any, ftype: str, scope: str, path: str) -> list[str]:
        if ftype in ("google.protobuf.Value",):
            return []
        if ftype == "google.protobuf.Struct":
            return [] if isinstance(value, dict) else [f"{path}: expected an object"]
        if ftype in _SCALARS:
            ok = isinstance(value, _SCALARS[ftype]) and not (isinstance(value, bool) and ftype != "bool")
            return [] if ok else [f"{path}: {value!r} is not a {ftype}"]
        enum = self._resolve(ftype, scope, self.enums)
        if enum is not None:
            return [] if value in self.enums[enum] else [f"{path}: {value!r} is not a {ftype} value"]
        message = self._resolve(ftype, scope, self.messages)
        if message is None:
            return [f"{path}: unknown type {ftype}"]
        return self.check(value, message, path)


@pytest.fixture(scope="module")
def proto() -> Proto:
    folder = SPECS / "gemini-v1beta"
    return Proto([(folder / name).read_text() for name in
                  ("content.proto", "generative_service.proto", "safety.proto", "citation.proto")])


# -- bodies shaped like Gemini's -----------------------------------------------------------------


def generate_body(*texts: str, finish: str = "STOP", prompt_tokens: int = 9, out_tokens: int = 3) -> dict[str, Any]:
    texts = texts or ("Hello!",)
    return {
        "candidates": [{"content": {"parts": [{"text": t}], "role": "model"}, "finishReason": finish,
                        "index": i, "avgLogprobs": -0.1} for i, t in enumerate(texts)],
        "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": out_tokens,
                          "totalTokenCount": prompt_tokens + out_tokens,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]},
        "modelVersion": MODEL,
        "responseId": "resp-abc123",
    }


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\r\n\r\n"


def stream_chunks(deltas: list[str], *, finish: str | None = "STOP") -> list[bytes]:
    out = []
    for n, d in enumerate(deltas):
        chunk: dict[str, Any] = {
            "candidates": [{"content": {"parts": [{"text": d}], "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": n + 1, "totalTokenCount": 10 + n},
            "modelVersion": MODEL, "responseId": "resp-s1",
        }
        if finish and n == len(deltas) - 1:
            chunk["candidates"][0]["finishReason"] = finish
        out.append(sse(chunk))
    return out


def error_body(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture
def gem(server):
    c = create_client("gemini", api_key=KEY, endpoint=server.url, model_name=MODEL, max_retries=2)
    yield c
    c.close()


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Say hello again."},
]


def _person_model():
    import pydantic

    class Person(pydantic.BaseModel):
        name: str
        age: int

    return Person


# -- conformance ---------------------------------------------------------------------------------


def test_proto_reader_reads_the_fields_we_rely_on(proto):
    config = proto.messages["GenerationConfig"]
    for name in ("max_output_tokens", "temperature", "top_p", "candidate_count", "response_mime_type",
                 "response_json_schema", "stop_sequences"):
        assert name in config
    assert proto.messages["Part"]["inline_data"] == ("Blob", False)
    assert proto.messages["Content"]["parts"] == ("Part", True)
    assert "SAFETY" in proto.enums["Candidate.FinishReason"]
    assert "PROHIBITED_CONTENT" in proto.enums["GenerateContentResponse.PromptFeedback.BlockReason"]


def test_request_bodies_conform_to_the_protos(proto):
    codec = create_client("gemini", api_key=KEY, model_name=MODEL).codec
    calls = [
        Call("chat", messages=MESSAGES, max_tokens=16),
        Call("chat", messages=MESSAGES, max_tokens=16, stream=True, top_p=0.9, temperature=0.5, n=2),
        Call("chat", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]}],
            max_tokens=16),
        Call("chat", messages=MESSAGES, max_tokens=16, schema=Schema.from_user(_person_model())),
        Call("chat", messages=MESSAGES, max_tokens=16, extra={"stop": ["\n"], "topK": 4, "seed": 7}),
        Call("completion", prompt="Once upon a time", max_tokens=16),
        Call("completion", prompt="Once upon a time", max_tokens=16, stream=True,
             schema=Schema.from_user({"type": "object", "properties": {"a": {"type": "integer"}}})),
    ]
    for call in calls:
        body = json.loads(codec.build_request(call).body)
        assert proto.check(body, "GenerateContentRequest") == [], body
        assert body["generationConfig"]["maxOutputTokens"] == 16
    # The checker rejects snake_case keys, unknown fields and wrong types.
    body = json.loads(codec.build_request(calls[0]).body)
    assert proto.check({**body, "generation_config": {}}, "GenerateContentRequest") != []
    assert proto.check({**body, "generationConfig": {"maxTokens": 3}}, "GenerateContentRequest") != []
    assert proto.check({**body, "generationConfig": {"candidateCount": "2"}}, "GenerateContentRequest") != []
    assert proto.check({"contents": [{"parts": [{"inlineData": {"mime_type": "x"}}]}]}, "GenerateContentRequest") != []


def test_fixture_bodies_conform_to_the_protos(proto):
    assert proto.check(generate_body("a", "b"), "GenerateContentResponse") == []
    for chunk in stream_chunks(["a", "b"]):
        assert proto.check(json.loads(chunk[6:]), "GenerateContentResponse") == []
    blocked = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]}}
    assert proto.check(blocked, "GenerateContentResponse") == []


# -- the loopback server -------------------------------------------------------------------------


def test_chat_request_and_result(gem, server):
    server.add(200, generate_body("Hello there.", prompt_tokens=20, out_tokens=4))
    result = gem.run_chat_completions(MESSAGES, max_tokens=32, temperature=0.2)
    assert result == "Hello there." and result.finish_reason == "stop"
    assert result.usage.to_dict() == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24,
                                      "cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert result.model == MODEL and result.id == "resp-abc123" and result.latency > 0
    (req,) = server.requests
    assert req.method == "POST" and req.path == GEN_PATH
    assert req.headers["x-goog-api-key"] == KEY and KEY not in req.path
    body = req.json()
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Hello."}]},
        {"role": "user", "parts": [{"text": "Say hello again."}]},
    ]
    assert body["generationConfig"] == {"maxOutputTokens": 32, "temperature": 0.2, "topP": 1.0}


def test_max_tokens_finish_and_model_path_forms(server):
    with create_client("gemini", api_key=KEY, endpoint=server.url, model_name=f"models/{MODEL}") as c:
        server.add(200, generate_body("cut", finish="MAX_TOKENS"))
        assert c.run_chat_completions([{"role": "user", "content": "x"}], max_tokens=2).finish_reason == "length"
    assert server.requests[0].path == GEN_PATH


def test_endpoint_default_path_and_env_key(server, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    base = server.url[: -len("/v1")]
    with create_client("gemini", endpoint=base, model_name=MODEL) as c:
        server.add(200, generate_body())
        assert c.run_chat_completions([{"role": "user", "content": "x"}], max_tokens=2) == "Hello!"
    assert server.requests[0].path == f"/v1beta/models/{MODEL}:generateContent"
    assert server.requests[0].headers["x-goog-api-key"] == KEY


def test_missing_key_and_model_are_configuration_errors(monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="API key"):
        create_client("gemini", model_name=MODEL)
    with pytest.raises(ConfigurationError, match="model_name"):
        create_client("gemini", api_key=KEY)


def test_stream_chat(gem, server):
    server.add(200, chunks=stream_chunks(["Hel", "lo", "!"]))
    stream = gem.run_chat_completions_stream(MESSAGES, max_tokens=16)
    assert list(stream) == ["Hel", "lo", "!"]
    assert stream.text == "Hello!" and stream.finish_reason == "stop"
    assert stream.usage.to_dict() == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                                      "cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert stream.model == MODEL and stream.latency > 0
    assert server.requests[0].path == STREAM_PATH


def test_completions_become_one_user_message(gem, server):
    server.add(200, generate_body(" there lived a fox."))
    server.add(200, chunks=stream_chunks([" there", " lived"], finish="MAX_TOKENS"))
    assert gem.run_completions("Once upon a time", max_tokens=8) == " there lived a fox."
    stream = gem.run_completions_stream("Once upon a time", max_tokens=2)
    assert "".join(stream) == " there lived" and stream.finish_reason == "length"
    for req in server.requests:
        body = req.json()
        assert body["contents"] == [{"role": "user", "parts": [{"text": "Once upon a time"}]}]
        assert "systemInstruction" not in body


@pytest.mark.parametrize("status,rpc,cls", [
    (400, "INVALID_ARGUMENT", BadRequestError),
    (403, "PERMISSION_DENIED", AuthenticationError),
    (404, "NOT_FOUND", NotFoundError),
])
def test_error_bodies(gem, server, status, rpc, cls):
    server.add(status, error_body(status, rpc, f"the {rpc} message"))
    with pytest.raises(cls) as info:
        gem.run_chat_completions(MESSAGES, max_tokens=4)
    err = info.value
    assert err.message == f"the {rpc} message" and err.status_code == status
    assert err.error_type == rpc and err.provider == "gemini" and not err.retryable
    server.add(status, error_body(status, rpc, "again"))
    result, error = gem.run_chat_completions(MESSAGES, max_tokens=4, return_error=True)
    assert result is None and error["type"] == cls.__name__ and error["message"] == "again"
    assert len(server.requests) == 2


def test_invalid_api_key_is_an_authentication_error(gem, server):
    server.add(400, error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]))
    with pytest.raises(AuthenticationError):
        gem.run_chat_completions(MESSAGES, max_tokens=4)


def test_resource_exhausted_then_success_honours_retry_info(gem, server):
    server.add(429, error_body(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.05s"}]))
    server.add(200, generate_body("ok"))
    assert gem.run_chat_completions(MESSAGES, max_tokens=4) == "ok"
    assert len(server.requests) == 2


def test_unavailable_then_success_and_exhausted(server):
    with create_client("gemini", api_key=KEY, endpoint=server.url, model_name=MODEL, max_retries=1) as c:
        server.add(503, error_body(503, "UNAVAILABLE", "The model is overloaded."), headers={"Retry-After": "0"})
        server.add(200, generate_body("ok"))
        assert c.run_chat_completions(MESSAGES, max_tokens=4) == "ok"
        for _ in range(2):
            server.add(503, error_body(503, "UNAVAILABLE", "The model is overloaded."), headers={"Retry-After": "0"})
        with pytest.raises(ServerError) as info:
            c.run_chat_completions(MESSAGES, max_tokens=4)
        assert info.value.retryable and info.value.error_type == "UNAVAILABLE"
        c.max_retries = 0
        server.add(400, error_body(400, "RESOURCE_EXHAUSTED", "quota"))  # odd status, rpc status decides
        with pytest.raises(RateLimitError):
            c.run_chat_completions(MESSAGES, max_tokens=4)
    assert len(server.requests) == 5


def test_prompt_blocked_is_a_content_filter_error(gem, server):
    server.add(200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                     "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}, "modelVersion": MODEL})
    with pytest.raises(ContentFilterError) as info:
        gem.run_chat_completions(MESSAGES, max_tokens=4)
    assert "PROHIBITED_CONTENT" in info.value.message and "prompt" in info.value.message
    assert info.value.error_type == "PROHIBITED_CONTENT" and not info.value.retryable


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT"])
def test_answer_blocked_is_a_content_filter_error(gem, server, reason):
    body = generate_body("")
    body["candidates"][0] = {"finishReason": reason, "index": 0}
    server.add(200, body)
    _, error = gem.run_chat_completions(MESSAGES, max_tokens=4, return_error=True)
    assert error["type"] == "ContentFilterError" and reason in error["message"]


def test_stream_safety_block(gem, server):
    chunks = stream_chunks(["Fine so far"], finish=None)
    chunks.append(sse({"candidates": [{"finishReason": "SAFETY", "index": 0}], "modelVersion": MODEL}))
    server.add(200, chunks=chunks)
    stream = gem.run_chat_completions_stream(MESSAGES, max_tokens=16)
    with pytest.raises(ContentFilterError, match="SAFETY"):
        list(stream)
    assert stream.text == "Fine so far"


def test_mid_stream_error_event(gem, server):
    chunks = stream_chunks(["Hel"], finish=None) + [sse(error_body(503, "UNAVAILABLE", "The model is overloaded."))]
    server.add(200, chunks=chunks)
    seen = []
    with pytest.raises(StreamError) as info:
        for delta in gem.run_chat_completions_stream(MESSAGES, max_tokens=16):
            seen.append(delta)
    assert seen == ["Hel"] and "overloaded" in info.value.message
    assert info.value.retryable and info.value.error_type == "UNAVAILABLE"
    assert not isinstance(info.value, StreamTruncatedError)


def test_truncated_stream(gem, server):
    server.add(200, chunks=stream_chunks(["Hel", "lo"], finish=None))
    stream = gem.run_chat_completions_stream(MESSAGES, max_tokens=16, return_error=True)
    assert list(stream) == ["Hel", "lo"]
    assert stream.error["type"] == "StreamTruncatedError" and stream.error["retryable"]


def test_guided_json_with_pydantic_model(gem, server):
    Person = _person_model()
    server.add(200, generate_body('{"name": "Ada"}'))  # misses "age": re-asked
    server.add(200, generate_body('{"name": "Ada", "age": 36}'))
    result = gem.run_chat_completions([{"role": "user", "content": "Who?"}], max_tokens=32, guided_json=Person)
    assert isinstance(result.parsed, Person) and result.parsed.age == 36
    first, second = (r.json() for r in server.requests)
    config = first["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == Person.model_json_schema()
    assert second["contents"][-1]["role"] == "user" and "rejected" in second["contents"][-1]["parts"][0]["text"]
    assert second["contents"][-2] == {"role": "model", "parts": [{"text": '{"name": "Ada"}'}]}


def test_n_2_is_candidate_count(gem, server):
    server.add(200, generate_body("one", "two", out_tokens=2))
    results = gem.run_chat_completions(MESSAGES, max_tokens=4, n=2, temperature=1.0)
    assert list(results) == ["one", "two"] and [r.finish_reason for r in results] == ["stop", "stop"]
    assert results.usage.completion_tokens == 2
    assert server.requests[0].json()["generationConfig"]["candidateCount"] == 2
    # A model that returns fewer candidates: the flow asks again with n=1 (no candidateCount).
    server.add(200, generate_body("only"))
    server.add(200, generate_body("extra"))
    assert list(gem.run_chat_completions(MESSAGES, max_tokens=4, n=2)) == ["only", "extra"]
    assert "candidateCount" not in server.requests[-1].json()["generationConfig"]


def test_images(gem, server):
    server.add(200, generate_body("a red dot"))
    gem.run_chat_completions([{"role": "user", "content": [
        {"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": PNG}}]}], max_tokens=8)
    parts = server.requests[0].json()["contents"][0]["parts"]
    assert parts == [{"text": "Describe"},
                     {"inlineData": {"mimeType": "image/png", "data": PNG.split(",", 1)[1]}}]
    with pytest.raises(InvalidInputError, match="cannot fetch images from URLs") as info:
        gem.run_chat_completions([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}], max_tokens=8)
    assert info.value.field == "messages[0].content[0]" and "inline" in info.value.suggestion
    assert len(server.requests) == 1


def test_async_methods(server):
    async def main():
        c = create_client("gemini", api_key=KEY, endpoint=server.url, model_name=MODEL)
        try:
            server.add(200, generate_body("async chat"))
            chat = await c.arun_chat_completions(MESSAGES, max_tokens=4)
            server.add(200, generate_body("async text"))
            text = await c.arun_completions("Say", max_tokens=4)
            server.add(200, chunks=stream_chunks(["a", "b"]))
            chat_stream = c.arun_chat_completions_stream(MESSAGES, max_tokens=4)
            chat_deltas = [d async for d in chat_stream]
            server.add(200, chunks=stream_chunks(["c"]))
            text_deltas = [d async for d in c.arun_completions_stream("Say", max_tokens=4)]
            server.add(429, error_body(429, "RESOURCE_EXHAUSTED", "quota"), headers={"Retry-After": "0"})
            server.add(200, generate_body("after retry"))
            retried = await c.arun_chat_completions(MESSAGES, max_tokens=4)
            return chat, text, chat_deltas, chat_stream, text_deltas, retried
        finally:
            await c.aclose()

    chat, text, chat_deltas, chat_stream, text_deltas, retried = asyncio.run(main())
    assert chat == "async chat" and chat.usage.total_tokens == 12 and chat.finish_reason == "stop"
    assert text == "async text" and retried == "after retry"
    assert chat_deltas == ["a", "b"] and chat_stream.finish_reason == "stop" and chat_stream.usage is not None
    assert text_deltas == ["c"]
    assert [r.path for r in server.requests] == [GEN_PATH, GEN_PATH, STREAM_PATH, STREAM_PATH, GEN_PATH, GEN_PATH]
    assert all(r.headers["x-goog-api-key"] == KEY for r in server.requests)


def test_key_never_leaks(gem, server, caplog):
    caplog.set_level(logging.DEBUG, logger="gen_ai")
    echo = f"API key {KEY} has exceeded its quota"
    assert KEY not in repr(gem) and KEY not in repr(gem.codec)
    server.add(429, error_body(429, "RESOURCE_EXHAUSTED", echo), headers={"Retry-After": "0"})
    server.add(403, error_body(403, "PERMISSION_DENIED", f"key {KEY} may not use this model"))
    with pytest.raises(AuthenticationError) as info:
        gem.run_chat_completions(MESSAGES, max_tokens=4)
    err = info.value
    assert "***" in err.message
    for text in (str(err), repr(err), err.body or "", err.url or "", json.dumps(err.to_dict())):
        assert KEY not in text
    server.add(403, error_body(403, "PERMISSION_DENIED", f"key {KEY} may not use this model"))
    _, error = gem.run_chat_completions(MESSAGES, max_tokens=4, return_error=True)
    assert KEY not in json.dumps(error) and "***" in error["message"]
    server.add(200, chunks=stream_chunks(["x"], finish=None) + [sse(error_body(500, "INTERNAL", echo))])
    stream = gem.run_chat_completions_stream(MESSAGES, max_tokens=4, return_error=True)
    list(stream)
    assert stream.error is not None and KEY not in json.dumps(stream.error)
    assert caplog.records, "the retry should have been logged"
    for record in caplog.records:
        assert KEY not in record.getMessage()


# -- embeddings: embedContent / batchEmbedContents ----------------------------------------------

EMBED_PATH = f"/v1/models/{MODEL}:embedContent"
BATCH_EMBED_PATH = f"/v1/models/{MODEL}:batchEmbedContents"


def _gemini_embedder(rec):
    """Answers like Gemini: one ContentEmbedding per request, values derived from the text."""
    body = rec.json()
    if rec.path.endswith(":embedContent"):
        text = body["content"]["parts"][0]["text"]
        return Step(200, {"embedding": {"values": [float(len(text)), 1.5]}})
    if rec.path.endswith(":batchEmbedContents"):
        return Step(200, {"embeddings": [{"values": [float(len(r["content"]["parts"][0]["text"])), 1.5]}
                                         for r in body["requests"]]})
    return Step(404, error_body(404, "NOT_FOUND", f"no route {rec.path}"))


def test_embeddings_bodies_match_the_protos(gem, server, proto):
    server.default = _gemini_embedder
    one = gem.run_embeddings(["hello"], dimensions=2, task_type="RETRIEVAL_QUERY")
    assert one == [[5.0, 1.5]] and one.model == MODEL and one.usage is None
    rec = server.requests[-1]
    assert rec.path == EMBED_PATH and rec.headers["x-goog-api-key"] == KEY
    body = rec.json()
    assert proto.check(body, "EmbedContentRequest") == [], body
    assert body == {"model": f"models/{MODEL}", "content": {"parts": [{"text": "hello"}]},
                    "outputDimensionality": 2, "taskType": "RETRIEVAL_QUERY"}

    texts = [f"t{'x' * i}" for i in range(230)]
    many = gem.run_embeddings(texts)
    assert many == [[float(len(t)), 1.5] for t in texts]
    batch_recs = [r for r in server.requests if r.path == BATCH_EMBED_PATH]
    assert sorted(len(r.json()["requests"]) for r in batch_recs) == [30, 100, 100]  # at most 100 per request
    for r in batch_recs:
        assert proto.check(r.json(), "BatchEmbedContentsRequest") == []
    assert proto.check({"embedding": {"values": [1.0]}}, "EmbedContentResponse") == []
    assert proto.check({"embeddings": [{"values": [1.0]}]}, "BatchEmbedContentsResponse") == []
    assert proto.check({"requests": [{"model": "m", "content": {}, "output_dimensionality": 3}]},
                       "BatchEmbedContentsRequest") != []  # the checker does catch snake_case


def test_embeddings_errors_async_and_key_scrubbing(gem, server):
    server.add(Step(429, error_body(429, "RESOURCE_EXHAUSTED", "quota"), headers={"Retry-After": "0"}))
    server.default = _gemini_embedder

    async def main():
        out = await gem.arun_embeddings(["abc", "de"])
        await gem.aclose()
        return out

    assert asyncio.run(main()) == [[3.0, 1.5], [2.0, 1.5]]
    assert len(server.requests) == 2  # the 429 was retried
    server.default = Step(400, error_body(400, "INVALID_ARGUMENT", f"API key not valid: {KEY}"))
    none, error = gem.run_embeddings(["a"], return_error=True)
    assert none is None and error["type"] == "AuthenticationError" and KEY not in repr(error)
    server.default = Step(200, {"embeddings": [{"values": [1.0]}]})
    with pytest.raises(ResponseError, match="1 embeddings for 2 inputs"):
        gem.run_embeddings(["a", "b"])
    count = len(server.requests)
    with pytest.raises(InvalidInputError):
        gem.run_embeddings(["a", ""])
    assert len(server.requests) == count
