"""The timeout model (docs/security.md, "Timeouts"), on both transports, against loopback
servers that stall: the client's timeout is every call's default, a per-call timeout overrides
it, connect / read (idle) / whole-call deadline are explicit, and a stream's deadline covers its
dialect probe."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from fault_server import Step, chat_body, chat_chunks

from gen_ai import APITimeoutError, Timeout, create_client
from gen_ai.errors import ConfigurationError

MESSAGES = [{"role": "user", "content": "hi"}]


def call(client: Any, mode: str, **kwargs: Any) -> Any:
    """One chat call in mode sync/async/sync-stream/async-stream; returns the text, or raises."""
    if mode == "sync":
        return client.run_chat_completions(MESSAGES, **kwargs)
    if mode == "sync-stream":
        return "".join(client.run_chat_completions_stream(MESSAGES, **kwargs))

    async def main() -> Any:
        async with client:
            if mode == "async":
                return await client.arun_chat_completions(MESSAGES, **kwargs)
            return "".join([d async for d in client.arun_chat_completions_stream(MESSAGES, **kwargs)])

    return asyncio.run(main())


MODES = ["sync", "async", "sync-stream", "async-stream"]


def timed(fn: Any) -> tuple[Any, float]:
    start = time.monotonic()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - the caller checks what it got
        out = exc
    return out, time.monotonic() - start


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_client_timeout_is_every_calls_default_deadline(fault_server, mode):
    """timeout=1 on the client bounds each call, retries included (before: each call got 30 s)."""
    for _ in range(10):
        fault_server.add(503, {"error": {"message": "busy"}}, headers={"Retry-After": "0.4"})
    client = create_client(endpoint=fault_server.url, model_name="m", timeout=1.0, max_retries=8)
    out, took = timed(lambda: call(client, mode))
    assert "not retried" in str(out) and "timeout=1s" in str(out), out
    assert took < 1.5 and len(fault_server.requests) <= 3


@pytest.mark.parametrize("mode", MODES)
def test_per_call_timeout_overrides_the_clients(fault_server, mode):
    step = Step(200, chunks=chat_chunks(["late"]), delay=1.0) if "stream" in mode else Step(200, chat_body("late"),
                                                                                               delay=1.0)
    fault_server.default = step
    client = create_client(endpoint=fault_server.url, model_name="m", timeout=0.4, max_retries=0)
    assert call(client, mode, timeout=5) == "late"  # before: the client's 0.4 s read timeout won
    out, took = timed(lambda: call(client, mode))
    assert isinstance(out, APITimeoutError) and took < 1.0


@pytest.mark.parametrize("mode", MODES)
def test_read_timeout_is_an_idle_timeout(fault_server, mode):
    fault_server.default = Step(200, chunks=chat_chunks(["a", "b"]), stall_after=1, stall=3) if "stream" in mode \
        else Step(200, chat_body("x"), delay=3)
    client = create_client(endpoint=fault_server.url, model_name="m", max_retries=0,
                           timeout=Timeout(10, read=0.4))
    out, took = timed(lambda: call(client, mode))
    assert isinstance(out, APITimeoutError), out
    assert took < 1.5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("timeout,gap", [(Timeout(1.0, read=0.8), 0.25), (Timeout(0.5, read=3), 0.7)])
def test_stream_may_outlive_total_while_text_flows(fault_server, mode, timeout, gap):
    """The total bounds opening a stream; text that keeps coming is not cut by it, and the idle
    timeout between chunks is ``read`` even when it is longer than the total."""
    fault_server.default = (Step(200, chunks=chat_chunks(list("abcd")), chunk_delay=gap) if "stream" in mode
                            else Step(200, chat_body("abcd")))
    client = create_client(endpoint=fault_server.url, model_name="m", max_retries=0, timeout=timeout)
    assert call(client, mode) == "abcd"


@pytest.fixture
def black_hole():
    """A listening socket whose accept queue is full: a connect to it hangs (SYNs dropped)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        hangs = False
    except TimeoutError:
        hangs = True
    finally:
        probe.close()
    assert hangs, "could not make a loopback port whose connects hang"
    yield port
    for s in fillers:
        s.close()
    server.close()


@pytest.mark.parametrize("mode", MODES)
def test_connect_timeout(black_hole, mode):
    client = create_client(endpoint=f"http://127.0.0.1:{black_hole}/v1", model_name="m", max_retries=0,
                           timeout=Timeout(20, connect=0.3))
    out, took = timed(lambda: call(client, mode))
    assert isinstance(out, APITimeoutError), out
    assert took < 1.5


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_connect_never_outlasts_the_call(black_hole, mode):
    client = create_client(endpoint=f"http://127.0.0.1:{black_hole}/v1", model_name="m", max_retries=0,
                           timeout=Timeout(20, connect=10))
    out, took = timed(lambda: call(client, mode, timeout=0.4))
    assert isinstance(out, APITimeoutError) and took < 1.5


@pytest.mark.parametrize("mode", ["sync-stream", "async-stream"])
def test_stream_deadline_covers_the_dialect_probe(fault_server, mode):
    """guided_json makes the openai codec probe /models first; the stream's timeout covers both
    (before: the deadline started after the probe, so opening took probe + timeout)."""
    fault_server.add(200, {"object": "list", "data": []}, delay=0.7)  # the probe
    fault_server.add(200, chunks=chat_chunks(['{"a": 1}']), delay=0.7)
    client = create_client(endpoint=fault_server.url, model_name="m", max_retries=0)
    out, took = timed(lambda: call(client, mode, timeout=1.0, guided_json={"type": "object"}))
    assert fault_server.requests[0].path == "/v1/models"
    assert isinstance(out, APITimeoutError), out
    assert took < 1.4


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_batch_uses_the_clients_timeout(fault_server, mode):
    for _ in range(10):
        fault_server.add(503, {"error": {"message": "busy"}}, headers={"Retry-After": "0.4"})
    client = create_client(endpoint=fault_server.url, model_name="m", timeout=1.0, max_retries=8)
    if mode == "sync":
        results = client.run_chat_completions_batch([MESSAGES], return_error=True)
    else:
        async def main() -> Any:
            async with client:
                return await client.arun_chat_completions_batch([MESSAGES], return_error=True)
        results = asyncio.run(main())
    _, errors = results
    assert errors[0] is not None and "timeout=1s" in errors[0]["message"]
    assert len(fault_server.requests) <= 3  # before: batch items had 60 s, all 9 attempts ran


def test_timeout_option_shapes():
    c = create_client(endpoint="http://127.0.0.1:9/v1", model_name="m")
    assert c.timeout == Timeout(30, connect=10, read=None)
    assert create_client(endpoint="http://127.0.0.1:9/v1", model_name="m", timeout=300).timeout == Timeout(300)
    assert create_client(endpoint="http://127.0.0.1:9/v1", model_name="m", timeout=2).timeout == Timeout(2, connect=2)
    assert create_client(endpoint="http://127.0.0.1:9/v1", model_name="m",
                         timeout=(3, 60)).timeout == Timeout(30, connect=3, read=60)
    for bad in (0, -1, "30", (1, 2, 3), True):
        with pytest.raises(ConfigurationError) as info:
            create_client(endpoint="http://127.0.0.1:9/v1", model_name="m", timeout=bad)
        assert info.value.field == "timeout"
    with pytest.raises(ConfigurationError):
        Timeout(10, connect=0)
