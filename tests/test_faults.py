"""Failure handling against a loopback fault server (a real HTTP server, scripted)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from fault_server import FaultServer, Step, chat_body, chat_chunks, completion_body, sse

from gen_ai.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    ResponseError,
    ServerError,
    StreamError,
    StreamTruncatedError,
)
from gen_ai.factory import create_client

MESSAGES = [{"role": "user", "content": "hi"}]
SECRET = "sk-test-SECRET-0123456789"


def make(server: FaultServer, **options):
    return create_client(endpoint=server.url, model_name="m", api_key=SECRET, **options)


def test_429_with_retry_after_then_success(fault_server):
    fault_server.add(429, {"error": {"message": "slow down", "type": "rate_limit"}}, headers={"Retry-After": "0.3"})
    fault_server.add(200, chat_body("done"))
    start = time.monotonic()
    assert make(fault_server).run_chat_completions(MESSAGES) == "done"
    assert time.monotonic() - start >= 0.3  # Retry-After was honoured
    assert len(fault_server.requests) == 2


def test_retry_after_ms_header(fault_server):
    fault_server.add(429, {"error": {"message": "slow"}}, headers={"retry-after-ms": "200"})
    fault_server.add(200, chat_body("ok"))
    start = time.monotonic()
    assert make(fault_server).run_chat_completions(MESSAGES) == "ok"
    assert time.monotonic() - start >= 0.2


def test_503_then_success(fault_server):
    fault_server.add(503, {"error": {"message": "overloaded"}})
    fault_server.add(200, chat_body("fine"))
    assert make(fault_server).run_chat_completions(MESSAGES) == "fine"
    assert len(fault_server.requests) == 2


def test_retries_are_bounded(fault_server):
    for _ in range(5):
        fault_server.add(500, {"error": {"message": "boom"}})
    with pytest.raises(ServerError) as info:
        make(fault_server, max_retries=1).run_chat_completions(MESSAGES)
    assert len(fault_server.requests) == 2 and info.value.retryable
    assert "boom" in info.value.message


def test_400_is_not_retried(fault_server):
    fault_server.add(400, {"error": {"message": "max_tokens is too large", "type": "invalid_request_error",
                                     "param": "max_tokens"}})
    with pytest.raises(BadRequestError) as info:
        make(fault_server).run_chat_completions(MESSAGES)
    assert len(fault_server.requests) == 1
    assert info.value.status_code == 400 and "max_tokens is too large" in info.value.message


@pytest.mark.parametrize("status,cls", [(401, AuthenticationError), (403, AuthenticationError),
                                        (404, NotFoundError), (422, BadRequestError)])
def test_status_classes(fault_server, status, cls):
    fault_server.add(status, {"error": {"message": "nope"}})
    with pytest.raises(cls):
        make(fault_server).run_chat_completions(MESSAGES)
    assert len(fault_server.requests) == 1


@pytest.mark.parametrize("body,expected", [
    ({"object": "error", "message": "sglang says no", "type": "BadRequestError", "param": None, "code": 400},
     "sglang says no"),                                                                  # SGLang / old vLLM
    ({"error": {"message": "vllm says no", "type": "BadRequestError", "param": None, "code": 400}}, "vllm says no"),
    ({"error": {"code": 400, "message": "llama.cpp says no", "type": "invalid_request_error"}}, "llama.cpp says no"),
    ({"detail": [{"loc": ["body", "max_tokens"], "msg": "Input should be a valid integer", "type": "int"}]},
     "max_tokens: Input should be a valid integer"),                                     # FastAPI
])
def test_error_body_shapes(fault_server, body, expected):
    fault_server.add(400, body)
    _, error = make(fault_server).run_chat_completions(MESSAGES, return_error=True)
    assert expected in error["message"]


def test_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = create_client(endpoint=f"http://127.0.0.1:{port}", model_name="m", max_retries=1)
    result, error = client.run_chat_completions(MESSAGES, return_error=True)
    assert result is None and error["type"] == "APIConnectionError" and error["retryable"] is True
    assert "running" in error["suggestion"]
    with pytest.raises(APIConnectionError):
        client.run_chat_completions(MESSAGES)


def test_read_timeout_bounds_the_whole_call(fault_server):
    fault_server.add(200, chat_body("late"), delay=3)
    start = time.monotonic()
    with pytest.raises(APITimeoutError):
        make(fault_server).run_chat_completions(MESSAGES, timeout=0.5)
    assert time.monotonic() - start < 2.5


def test_dropped_connection_is_retried(fault_server):
    fault_server.add(Step(drop=True))
    fault_server.add(200, chat_body("after drop"))
    assert make(fault_server).run_chat_completions(MESSAGES) == "after drop"


def test_malformed_json(fault_server):
    fault_server.add(200, b'{"choices": [', content_type="application/json")
    with pytest.raises(ResponseError) as info:
        make(fault_server).run_chat_completions(MESSAGES)
    assert "JSON" in info.value.message


def test_html_error_page_from_proxy(fault_server):
    page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>"
    for _ in range(3):
        fault_server.add(502, page, content_type="text/html")
    result, error = make(fault_server, max_retries=2).run_chat_completions(MESSAGES, return_error=True)
    assert error["type"] == "ServerError" and error["status_code"] == 502
    assert "502 Bad Gateway" in error["message"] and "HTML" in error["message"]
    assert "proxy" in error["suggestion"]
    assert len(fault_server.requests) == 3


def test_html_page_with_200(fault_server):
    fault_server.add(200, "<html><title>Login</title></html>", content_type="text/html")
    with pytest.raises(ResponseError) as info:
        make(fault_server).run_chat_completions(MESSAGES)
    assert "Login" in info.value.message


# -- streams -------------------------------------------------------------------------------


def test_stream_happy_path_with_usage(fault_server):
    fault_server.add(200, chunks=chat_chunks(["Hel", "lo", "!"]))
    stream = make(fault_server).run_chat_completions_stream(MESSAGES)
    assert list(stream) == ["Hel", "lo", "!"]
    assert stream.finish_reason == "stop" and stream.usage.completion_tokens == 3
    sent = fault_server.requests[0].json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_stream_cut_midway_raises_truncation(fault_server):
    fault_server.add(200, chunks=chat_chunks(["a", "b", "c"], done=False, finish=False))
    stream = make(fault_server).run_chat_completions_stream(MESSAGES)
    got = []
    with pytest.raises(StreamTruncatedError):
        for delta in stream:
            got.append(delta)
    assert got == ["a", "b", "c"]  # what arrived was delivered, then the truncation was reported


def test_stream_stalled_hits_idle_timeout(fault_server):
    fault_server.add(200, chunks=chat_chunks(["a", "b"]), stall_after=1, stall=5)
    stream = make(fault_server).run_chat_completions_stream(MESSAGES, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(APITimeoutError):
        list(stream)
    assert time.monotonic() - start < 3


def test_error_object_inside_stream(fault_server):
    chunks = chat_chunks(["part"], done=False, finish=False) + [
        sse({"error": {"message": "model crashed mid-generation", "type": "server_error"}})]
    fault_server.add(200, chunks=chunks)
    with pytest.raises(StreamError) as info:
        list(make(fault_server).run_chat_completions_stream(MESSAGES))
    assert "model crashed mid-generation" in info.value.message


def test_malformed_stream_event(fault_server):
    fault_server.add(200, chunks=[b"data: {not json\n\n"])
    with pytest.raises(StreamError) as info:
        list(make(fault_server).run_chat_completions_stream(MESSAGES))
    assert "malformed" in info.value.message


def test_stream_open_is_retried_but_never_after_text(fault_server):
    fault_server.add(503, {"error": {"message": "busy"}})
    fault_server.add(200, chunks=chat_chunks(["x"], done=False, finish=False))
    stream = make(fault_server).run_chat_completions_stream(MESSAGES)
    with pytest.raises(StreamTruncatedError):
        list(stream)
    assert len(fault_server.requests) == 2  # one retry of the 503; the cut stream was not re-sent


def test_stream_return_error_keeps_error(fault_server):
    fault_server.add(401, {"error": {"message": f"bad key {SECRET}"}})
    stream = make(fault_server).run_chat_completions_stream(MESSAGES, return_error=True)
    assert list(stream) == []
    assert stream.error["type"] == "AuthenticationError" and SECRET not in str(stream.error)


def test_stream_json_answer_when_server_ignores_stream(fault_server):
    fault_server.add(200, chat_body("whole answer"))
    assert list(make(fault_server).run_chat_completions_stream(MESSAGES)) == ["whole answer"]


def test_split_sse_frames_across_reads(fault_server):
    raw = b"".join(chat_chunks(["one", "two", "three"]))
    pieces = [raw[i:i + 7] for i in range(0, len(raw), 7)]  # split mid-line, mid-\r\n
    fault_server.add(200, chunks=[p.replace(b"\n", b"\r\n") for p in pieces], chunk_delay=0.001)
    assert "".join(make(fault_server).run_chat_completions_stream(MESSAGES)) == "onetwothree"


def test_completions_stream_and_text(fault_server):
    fault_server.add(200, completion_body("text!"))
    assert make(fault_server).run_completions("p") == "text!"
    assert fault_server.requests[0].path == "/v1/completions"


# -- async ---------------------------------------------------------------------------------


def test_async_retries_and_stream_errors(fault_server):
    fault_server.add(429, {"error": {"message": "slow"}}, headers={"Retry-After": "0.1"})
    fault_server.add(200, chat_body("async ok"))
    fault_server.add(200, chunks=chat_chunks(["a"], done=False, finish=False))
    client = make(fault_server)

    async def main():
        first = await client.arun_chat_completions(MESSAGES)
        with pytest.raises(StreamTruncatedError):
            async for _ in client.arun_chat_completions_stream(MESSAGES):
                pass
        await client.aclose()
        return first

    assert asyncio.run(main()) == "async ok"


def test_async_timeout_and_refused(fault_server):
    fault_server.add(200, chat_body("late"), delay=3)
    client = make(fault_server, max_retries=0)

    async def main():
        with pytest.raises(APITimeoutError):
            await client.arun_chat_completions(MESSAGES, timeout=0.5)
        await client.aclose()

    asyncio.run(main())


# -- secrets -------------------------------------------------------------------------------


def test_secret_never_leaks(fault_server, caplog):
    echo = {"error": {"message": f"Incorrect API key provided: {SECRET}", "type": "invalid_request_error"}}
    fault_server.add(401, echo)
    fault_server.add(500, echo)
    fault_server.add(500, echo)
    fault_server.add(500, echo)
    client = make(fault_server, max_retries=2)
    assert SECRET not in repr(client) and SECRET not in str(client)
    caplog.set_level(logging.DEBUG, logger="gen_ai")
    with pytest.raises(AuthenticationError) as info:
        client.run_chat_completions(MESSAGES)
    err = info.value
    for text in (str(err), repr(err), err.message, err.body or "", str(err.to_dict()), str(err.args)):
        assert SECRET not in text
    assert "***" in err.message
    _, error = client.run_chat_completions(MESSAGES, return_error=True)
    assert SECRET not in str(error)
    assert SECRET not in caplog.text
    assert caplog.records, "retries were logged"
    # the key was really sent, so the test would have seen it
    assert fault_server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


# -- n top-ups run in parallel ---------------------------------------------------------------


def test_missing_choices_are_asked_for_in_parallel(fault_server):
    """A server that returns one choice for n=3: the two missing answers are requested at once."""
    fault_server.default = Step(200, chat_body("one"), delay=0.3)
    results = make(fault_server).run_chat_completions(MESSAGES, n=3)
    assert len(results) == 3 and len(fault_server.requests) == 3
    assert fault_server.max_in_flight == 2
    assert [r.json().get("n") for r in fault_server.requests] == [3, None, None]
    assert results.usage.total_tokens == 3 * 7


def test_missing_choices_in_parallel_async(fault_server):
    fault_server.default = Step(200, chat_body("one"), delay=0.3)
    client = make(fault_server)

    async def main():
        try:
            return await client.arun_chat_completions(MESSAGES, n=4)
        finally:
            await client.aclose()

    assert len(asyncio.run(main())) == 4
    assert fault_server.max_in_flight == 3


def test_gateway_auth_header_never_leaks(fault_server):
    """A credential the user passes in headers= (a gateway's) is scrubbed like the API key."""
    token = "gw-token-abcdef123456"
    fault_server.add(403, {"error": {"message": f"gateway rejected {token}"}})
    client = create_client(endpoint=fault_server.url, model_name="m",
                           headers={"Proxy-Authorization": f"Bearer {token}", "X-Team": "a"})
    _, error = client.run_chat_completions(MESSAGES, return_error=True)
    assert token not in str(error) and "***" in error["message"]
    assert fault_server.requests[0].headers["proxy-authorization"] == f"Bearer {token}"
    assert fault_server.requests[0].headers["x-team"] == "a"
