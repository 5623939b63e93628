"""provider="anthropic": request conformance against the official ``anthropic`` package's request
types, and every client method against a loopback server that speaks the Messages API (JSON
bodies, SSE events, error bodies and statuses shaped as Anthropic sends them)."""

from __future__ import annotations

import asyncio
import collections.abc
import json
import logging
import types
import typing

import pytest
import typing_extensions
from fault_server import FaultServer

from gen_ai.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamError,
    StreamTruncatedError,
)
from gen_ai.factory import create_client
from gen_ai.structured import Schema
from gen_ai.types import Call

KEY = "sk-ant-api03-SECRETKEY1234567890"
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


# -- bodies shaped like Anthropic's --------------------------------------------------------------


def message_body(text: str = "Hello!", *, stop_reason: str = "end_turn", input_tokens: int = 12,
                 output_tokens: int = 3) -> dict[str, typing.Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-test-1", "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def error_body(error_type: str, message: str) -> dict[str, typing.Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def event(name: str, obj: dict[str, typing.Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode()


def stream_events(deltas: list[str], *, stop_reason: str = "end_turn", finish: bool = True) -> list[bytes]:
    start = message_body("", input_tokens=25, output_tokens=1)
    start["content"], start["stop_reason"] = [], None
    out = [event("message_start", {"type": "message_start", "message": start}),
           event("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
           event("ping", {"type": "ping"})]
    out += [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": d}}) for d in deltas]
    if finish:
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        out.append(event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                           "usage": {"output_tokens": len(deltas) + 5}}))
        out.append(event("message_stop", {"type": "message_stop"}))
    return out


def parse_events(chunks: list[bytes]) -> list[dict[str, typing.Any]]:
    return [json.loads(c.split(b"data: ", 1)[1]) for c in chunks]


# -- a checker for the anthropic package's request TypedDicts ----------------------------------

_REQUIRED = {typing.Required, typing_extensions.Required}
_NOT_REQUIRED = {typing.NotRequired, typing_extensions.NotRequired}


def _unwrap(tp: typing.Any) -> tuple[typing.Any, bool]:
    required = False
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in _REQUIRED:
            required, tp = True, typing.get_args(tp)[0]
        elif origin in _NOT_REQUIRED:
            tp = typing.get_args(tp)[0]
        else:
            return tp, required


def check_type(value: typing.Any, tp: typing.Any, path: str = "$") -> list[str]:
    """Errors where ``value`` does not fit the (TypedDict-based) type ``tp``; [] if it fits."""
    tp, _ = _unwrap(tp)
    origin = typing.get_origin(tp)
    if tp is typing.Any or tp is object:
        return []
    if origin in (typing.Union, types.UnionType):
        branches = [check_type(value, arm, path) for arm in typing.get_args(tp)]
        if any(not b for b in branches):
            return []
        return [f"{path}: matches no branch of the union; closest: {min(branches, key=len)[:3]}"]
    if origin is typing.Literal or origin is typing_extensions.Literal:
        return [] if value in typing.get_args(tp) else [f"{path}: {value!r} not in {typing.get_args(tp)}"]
    if typing_extensions.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: expected an object for {tp.__name__}"]
        hints = typing.get_type_hints(tp, include_extras=True)
        errors = [f"{path}.{key}: not a field of {tp.__name__}" for key in value if key not in hints]
        for key, hint in hints.items():
            inner, required = _unwrap(hint)
            if key in value:
                errors += check_type(value[key], hint, f"{path}.{key}")
            elif required or key in getattr(tp, "__required_keys__", ()) and tp.__total__:
                errors.append(f"{path}.{key}: required by {tp.__name__} but missing")
        return errors
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence) or \
            getattr(origin, "__name__", "") == "SequenceNotStr":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        (item_type,) = typing.get_args(tp) or (typing.Any,)
        return [e for i, item in enumerate(value) for e in check_type(item, item_type, f"{path}[{i}]")]
    if origin in (dict, collections.abc.Mapping) or tp in (dict, dict):
        return [] if isinstance(value, dict) else [f"{path}: expected an object"]
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null"]
    if tp is float:
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{path}: expected a number"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if isinstance(tp, type):
        try:
            return [] if isinstance(value, tp) else [f"{path}: expected {tp.__name__}"]
        except TypeError:
            return [f"{path}: cannot check against {tp!r}"]
    return [f"{path}: cannot check against {tp!r}"]


def conform(body: dict[str, typing.Any]) -> list[str]:
    from anthropic.types import message_create_params as params

    cls = params.MessageCreateParamsStreaming if body.get("stream") else params.MessageCreateParamsNonStreaming
    return check_type(body, cls)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture
def ant(server):
    c = create_client("anthropic", api_key=KEY, endpoint=server.url, model_name="claude-test-1", max_retries=2)
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


# The official SDK no longer lists sampling parameters; the API still takes them from older
# models under anthropic-version 2023-06-01, so the default codec may send exactly these.
LEGACY_SAMPLING = {"temperature", "top_p"}


def test_request_bodies_conform_to_the_anthropic_package_types():
    codec = create_client("anthropic", api_key=KEY, model_name="claude-test-1").codec
    strict = create_client("anthropic", api_key=KEY, model_name="claude-test-1", sampling_params=False).codec
    person = Schema.from_user(_person_model())
    calls = [
        Call("chat", messages=MESSAGES, max_tokens=16),
        Call("chat", messages=MESSAGES, max_tokens=16, stream=True, top_p=0.9, temperature=0.5),
        Call("chat", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]}], max_tokens=16),
        Call("chat", messages=MESSAGES, max_tokens=16, schema=person),
        Call("chat", messages=MESSAGES, max_tokens=16, n=3, extra={"stop": ["\n"]}),
        Call("completion", prompt="Once upon a time", max_tokens=16),
        Call("completion", prompt="Once upon a time", max_tokens=16, stream=True, schema=person),
    ]
    for call in calls:
        body = json.loads(strict.build_request(call).body)
        assert conform(body) == [], body
        assert "n" not in body and body["max_tokens"] == 16 and not LEGACY_SAMPLING & set(body)
        body = json.loads(codec.build_request(call).body)
        assert "temperature" in body
        assert conform({k: v for k, v in body.items() if k not in LEGACY_SAMPLING}) == [], body
    # The checker itself rejects what the API would reject.
    good = json.loads(codec.build_request(calls[0]).body)
    assert conform({**good, "n": 2}) != []
    assert conform({k: v for k, v in good.items() if k != "max_tokens"}) != []
    bad_image = {**good, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "mime_type": "image/png", "data": "AA"}}]}]}
    assert conform(bad_image) != []


def test_fixture_bodies_match_the_anthropic_response_models():
    import pydantic
    from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent

    Message.model_validate(message_body())
    adapter = pydantic.TypeAdapter(RawMessageStreamEvent)
    for obj in parse_events(stream_events(["a", "b"])):
        if obj["type"] != "ping":
            adapter.validate_python(obj)
    ErrorResponse.model_validate(error_body("overloaded_error", "Overloaded"))


# -- the loopback server -------------------------------------------------------------------------


def test_chat_request_and_result(ant, server):
    server.add(200, message_body("Hello there.", input_tokens=20, output_tokens=4))
    result = ant.run_chat_completions(MESSAGES, max_tokens=32, temperature=0.2)
    assert result == "Hello there."
    assert result.finish_reason == "stop"
    assert result.usage.to_dict() == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24,
                                      "cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert result.model == "claude-test-1" and result.id.startswith("msg_")
    assert result.latency > 0
    (req,) = server.requests
    assert req.method == "POST" and req.path == "/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    body = req.json()
    assert body["system"] == "You are terse."
    assert body["messages"] == MESSAGES[1:]
    assert body["max_tokens"] == 32 and body["temperature"] == 0.2 and "top_p" not in body
    assert body["model"] == "claude-test-1"


@pytest.mark.parametrize("stop,expected", [("max_tokens", "length"), ("stop_sequence", "stop"),
                                           ("tool_use", "tool_calls"), ("refusal", "content_filter")])
def test_stop_reasons(ant, server, stop, expected):
    server.add(200, message_body("x", stop_reason=stop))
    assert ant.run_chat_completions(MESSAGES, max_tokens=4).finish_reason == expected


def test_endpoint_without_v1_and_env_key(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    base = server.url[: -len("/v1")]
    with create_client("anthropic", endpoint=base + "/", model_name="claude-test-1") as c:
        server.add(200, message_body())
        assert c.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4) == "Hello!"
    assert server.requests[0].path == "/v1/messages"
    assert server.requests[0].headers["x-api-key"] == KEY


def test_missing_key_and_model_are_configuration_errors(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="API key"):
        create_client("anthropic", model_name="claude-test-1")
    with pytest.raises(ConfigurationError, match="model_name"):
        create_client("anthropic", api_key=KEY)


def test_sampling_params_dropped_when_the_model_rejects_them(ant, server):
    server.add(400, error_body("invalid_request_error",
                               "temperature: This model does not support the temperature parameter."))
    server.add(200, message_body("ok"))
    server.add(200, message_body("ok again"))
    assert ant.run_chat_completions(MESSAGES, max_tokens=4, temperature=0.3) == "ok"
    assert ant.run_chat_completions(MESSAGES, max_tokens=4, temperature=0.3) == "ok again"
    first, second, third = (r.json() for r in server.requests)
    assert first["temperature"] == 0.3 and "temperature" not in second and "temperature" not in third
    # With sampling_params=True the rejection is reported, not worked around.
    with create_client("anthropic", api_key=KEY, endpoint=server.url, model_name="claude-test-1",
                       sampling_params=True) as c:
        server.add(400, error_body("invalid_request_error", "top_p: not supported"))
        with pytest.raises(BadRequestError, match="top_p"):
            c.run_chat_completions(MESSAGES, max_tokens=4, top_p=0.5)
    assert len(server.requests) == 4


def test_stream_chat(ant, server):
    server.add(200, chunks=stream_events(["Hel", "lo", "!"]))
    stream = ant.run_chat_completions_stream(MESSAGES, max_tokens=16)
    assert list(stream) == ["Hel", "lo", "!"]
    assert stream.text == "Hello!" and stream.finish_reason == "stop"
    assert stream.usage.to_dict() == {"prompt_tokens": 25, "completion_tokens": 8, "total_tokens": 33,
                                      "cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert stream.model == "claude-test-1" and stream.latency > 0
    req = server.requests[0]
    assert req.json()["stream"] is True and req.headers["accept"] == "text/event-stream"


def test_completions_become_one_user_message(ant, server):
    server.add(200, message_body(" there lived a fox."))
    server.add(200, chunks=stream_events([" there", " lived"], stop_reason="max_tokens"))
    result = ant.run_completions("Once upon a time", max_tokens=8)
    assert result == " there lived a fox."
    stream = ant.run_completions_stream("Once upon a time", max_tokens=2)
    assert "".join(stream) == " there lived" and stream.finish_reason == "length"
    for req in server.requests:
        body = req.json()
        assert body["messages"] == [{"role": "user", "content": "Once upon a time"}] and "system" not in body


@pytest.mark.parametrize("status,error_type,cls", [
    (400, "invalid_request_error", BadRequestError),
    (401, "authentication_error", AuthenticationError),
    (403, "permission_error", AuthenticationError),
    (404, "not_found_error", NotFoundError),
])
def test_error_bodies(ant, server, status, error_type, cls):
    server.add(status, error_body(error_type, f"the {error_type} message"))
    with pytest.raises(cls) as info:
        ant.run_chat_completions(MESSAGES, max_tokens=4)
    err = info.value
    assert err.message == f"the {error_type} message" and err.status_code == status
    assert err.error_type == error_type and err.provider == "anthropic" and not err.retryable
    assert len(server.requests) == 1
    server.add(status, error_body(error_type, "again"))
    result, error = ant.run_chat_completions(MESSAGES, max_tokens=4, return_error=True)
    assert result is None and error["type"] == cls.__name__ and error["message"] == "again"


def test_rate_limit_then_success(ant, server):
    server.add(429, error_body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
               headers={"retry-after": "0"})
    server.add(200, message_body("ok"))
    assert ant.run_chat_completions(MESSAGES, max_tokens=4) == "ok"
    assert len(server.requests) == 2


def test_overloaded_529_then_success(ant, server):
    server.add(529, error_body("overloaded_error", "Overloaded"), headers={"retry-after": "0"})
    server.add(200, message_body("ok"))
    assert ant.run_chat_completions(MESSAGES, max_tokens=4) == "ok"
    assert len(server.requests) == 2


def test_overloaded_exhausts_retries(server):
    with create_client("anthropic", api_key=KEY, endpoint=server.url, model_name="claude-test-1",
                       max_retries=1) as c:
        for _ in range(2):
            server.add(529, error_body("overloaded_error", "Overloaded"), headers={"retry-after": "0"})
        with pytest.raises(ServerError) as info:
            c.run_chat_completions(MESSAGES, max_tokens=4)
    assert info.value.retryable and info.value.status_code == 529
    assert info.value.error_type == "overloaded_error" and "overloaded" in info.value.suggestion
    assert len(server.requests) == 2


def test_rate_limit_error_type_with_odd_status_is_rate_limit(ant, server):
    ant.max_retries = 0
    server.add(400, error_body("rate_limit_error", "slow down"))
    with pytest.raises(RateLimitError):
        ant.run_chat_completions(MESSAGES, max_tokens=4)


def test_mid_stream_error_event(ant, server):
    chunks = stream_events(["Hel"], finish=False) + [
        event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]
    server.add(200, chunks=chunks)
    stream = ant.run_chat_completions_stream(MESSAGES, max_tokens=16)
    seen = []
    with pytest.raises(StreamError) as info:
        for delta in stream:
            seen.append(delta)
    assert seen == ["Hel"]
    assert "Overloaded" in info.value.message and info.value.error_type == "overloaded_error"
    assert info.value.retryable and not isinstance(info.value, StreamTruncatedError)
    server.add(200, chunks=chunks)
    stream = ant.run_chat_completions_stream(MESSAGES, max_tokens=16, return_error=True)
    assert list(stream) == ["Hel"]
    assert stream.error["type"] == "StreamError" and stream.error["error_type"] == "overloaded_error"


def test_truncated_stream(ant, server):
    server.add(200, chunks=stream_events(["Hel", "lo"], finish=False))
    stream = ant.run_chat_completions_stream(MESSAGES, max_tokens=16)
    with pytest.raises(StreamTruncatedError):
        list(stream)
    assert stream.text == "Hello"


def test_guided_json_with_pydantic_model(ant, server):
    Person = _person_model()
    server.add(200, message_body('{"name": "Ada", "age": "old"}'))  # fails the schema: re-asked
    server.add(200, message_body('{"name": "Ada", "age": 36}'))
    result = ant.run_chat_completions([{"role": "user", "content": "Who?"}], max_tokens=32, guided_json=Person)
    assert isinstance(result.parsed, Person) and result.parsed.age == 36
    first, second = (r.json() for r in server.requests)
    fmt = first["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["schema"]["properties"] == Person.model_json_schema()["properties"]
    assert fmt["schema"]["additionalProperties"] is False
    assert "rejected" in second["messages"][-1]["content"]


def test_guided_json_dict_stream(ant, server):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    server.add(200, chunks=stream_events(['{"city": ', '"Paris"}']))
    stream = ant.run_chat_completions_stream([{"role": "user", "content": "Where?"}], max_tokens=16,
                                             guided_json=schema)
    assert "".join(stream) == '{"city": "Paris"}' and stream.parsed == {"city": "Paris"}
    assert server.requests[0].json()["output_config"]["format"]["schema"]["required"] == ["city"]


def test_n_2_asks_twice(ant, server):
    server.add(200, message_body("one", input_tokens=10, output_tokens=1))
    server.add(200, message_body("two", input_tokens=10, output_tokens=1))
    results = ant.run_chat_completions(MESSAGES, max_tokens=4, n=2, temperature=1.0)
    assert list(results) == ["one", "two"]
    assert results.usage.to_dict() == {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22,
                                      "cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert len(server.requests) == 2 and all("n" not in r.json() for r in server.requests)


def test_images_in_the_request_body(ant, server):
    server.add(200, message_body("a red dot"))
    ant.run_chat_completions([{"role": "user", "content": [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]}], max_tokens=8)
    content = server.requests[0].json()["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "Describe"}
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": PNG.split(",", 1)[1]}}
    assert content[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


def test_bad_roles_are_clear_input_errors(ant, server):
    with pytest.raises(InvalidInputError, match="tool_call_id"):
        ant.run_chat_completions([{"role": "tool", "content": "42"}], max_tokens=4)
    with pytest.raises(InvalidInputError, match="not supported"):
        ant.run_chat_completions([{"role": "function", "content": "42", "name": "f"}], max_tokens=4)
    with pytest.raises(InvalidInputError, match="at least one user"):
        ant.run_chat_completions([{"role": "system", "content": "x"}], max_tokens=4)
    assert server.requests == []


def test_async_methods(server):
    async def main():
        c = create_client("anthropic", api_key=KEY, endpoint=server.url, model_name="claude-test-1")
        try:
            server.add(200, message_body("async chat"))
            chat = await c.arun_chat_completions(MESSAGES, max_tokens=4)
            server.add(200, message_body("async text"))
            text = await c.arun_completions("Say", max_tokens=4)
            server.add(200, chunks=stream_events(["a", "b"]))
            chat_stream = c.arun_chat_completions_stream(MESSAGES, max_tokens=4)
            chat_deltas = [d async for d in chat_stream]
            server.add(200, chunks=stream_events(["c"]))
            text_stream = c.arun_completions_stream("Say", max_tokens=4)
            text_deltas = [d async for d in text_stream]
            server.add(529, error_body("overloaded_error", "Overloaded"), headers={"retry-after": "0"})
            server.add(200, message_body("after retry"))
            retried = await c.arun_chat_completions(MESSAGES, max_tokens=4)
            return chat, text, chat_deltas, chat_stream, text_deltas, retried
        finally:
            await c.aclose()

    chat, text, chat_deltas, chat_stream, text_deltas, retried = asyncio.run(main())
    assert chat == "async chat" and chat.usage.total_tokens == 15 and chat.finish_reason == "stop"
    assert text == "async text"
    assert chat_deltas == ["a", "b"] and chat_stream.finish_reason == "stop" and chat_stream.usage is not None
    assert text_deltas == ["c"] and retried == "after retry"
    assert [r.path for r in server.requests] == ["/v1/messages"] * 6
    assert server.requests[1].json()["messages"] == [{"role": "user", "content": "Say"}]


def test_key_never_leaks(ant, server, caplog):
    caplog.set_level(logging.DEBUG, logger="gen_ai")
    echo = f"invalid x-api-key: {KEY}"
    assert KEY not in repr(ant) and KEY not in repr(ant.codec)
    # A throttled attempt (logged as a warning) then a 401, both echoing the key.
    server.add(429, error_body("rate_limit_error", echo), headers={"retry-after": "0"})
    server.add(401, error_body("authentication_error", echo))
    with pytest.raises(AuthenticationError) as info:
        ant.run_chat_completions(MESSAGES, max_tokens=4)
    err = info.value
    assert "***" in err.message
    for text in (str(err), repr(err), err.body or "", json.dumps(err.to_dict())):
        assert KEY not in text
    server.add(401, error_body("authentication_error", echo))
    _, error = ant.run_chat_completions(MESSAGES, max_tokens=4, return_error=True)
    assert KEY not in json.dumps(error) and "***" in error["message"]
    # And mid-stream.
    server.add(200, chunks=stream_events(["x"], finish=False)
               + [event("error", {"type": "error", "error": {"type": "api_error", "message": echo}})])
    stream = ant.run_chat_completions_stream(MESSAGES, max_tokens=4, return_error=True)
    list(stream)
    assert stream.error is not None and KEY not in json.dumps(stream.error)
    assert caplog.records, "the retry should have been logged"
    for record in caplog.records:
        assert KEY not in record.getMessage()
