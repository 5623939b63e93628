"""Hardening (issue 13): local files only on request, the stream lifecycle, nothing blocking the
event loop, n top-ups that share a pool and cancel each other. Everything talks to real loopback
servers (the FaultServer); images are made here with Pillow."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
import threading
import time

import pytest
from fault_server import Step, chat_body, chat_chunks, sse
from PIL import Image

from gen_ai import InvalidInputError, StreamError, create_client

MESSAGES = [{"role": "user", "content": "hi"}]


def png(size: tuple[int, int] = (4, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def image_message(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


@pytest.fixture
def client(fault_server):
    c = create_client(endpoint=fault_server.url, model_name="m", max_retries=0)
    yield c
    c.close()


# -- 2. local files only on request ------------------------------------------------------------------


def test_message_content_never_reads_the_disk_by_default(fault_server, client, tmp_path):
    picture = tmp_path / "cat.png"
    picture.write_bytes(png())
    for source in ("/etc/passwd", str(picture), picture.as_uri(), str(tmp_path / "does-not-exist.png"),
                   "~/.ssh/id_rsa"):
        for call in (lambda m: client.run_chat_completions(m),
                     lambda m: list(client.run_chat_completions_stream(m)),
                     lambda m: asyncio.run(client.arun_chat_completions(m)),
                     lambda m: client.run_vision_request(m, [png()])):
            with pytest.raises(InvalidInputError) as info:
                call(image_message(source))
            message = str(info.value)
            # The same answer for a file that exists and one that does not: the disk was not asked.
            assert "allow_local_files=True" in message and "not found" not in message
            assert "root:" not in message
    assert fault_server.requests == []


def test_image_paths_stay_local_by_design(fault_server, client, tmp_path):
    picture = tmp_path / "cat.png"
    picture.write_bytes(png())
    fault_server.add(200, chat_body("a green square"))
    assert client.run_vision_request("Describe.", [str(picture)]) == "a green square"
    part = fault_server.requests[0].json()["messages"][0]["content"][1]
    assert part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png()).decode()


def test_opt_in_reads_local_files_and_errors_never_quote_them(fault_server, tmp_path):
    picture = tmp_path / "cat.png"
    picture.write_bytes(png())
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with create_client(endpoint=fault_server.url, model_name="m", allow_local_files=True) as c:
        fault_server.add(200, chat_body("ok"))
        assert c.run_chat_completions(image_message(str(picture))) == "ok"
        for source in ("/etc/passwd", str(secret), secret.as_uri()):
            with pytest.raises(InvalidInputError) as info:
                c.run_chat_completions(image_message(source))
            assert "is not a supported image" in str(info.value)
            assert "root" not in str(info.value).replace(str(tmp_path), "") and "b'" not in str(info.value)
        _, error = c.run_vision_request("x", [str(secret)], return_error=True)
        assert "root:x" not in json.dumps(error) and "is not a supported image" in error["message"]
    assert len(fault_server.requests) == 1


def test_allow_local_files_must_be_a_bool(fault_server):
    with pytest.raises(InvalidInputError) as info:
        create_client(endpoint=fault_server.url, model_name="m", allow_local_files="yes")
    assert info.value.field == "allow_local_files"


# -- 5. streams: close, with, read once, one async rule ------------------------------------------------


def test_a_stream_is_read_once_and_never_resent(fault_server, client):
    fault_server.add(200, chunks=chat_chunks(["a", "b"]))
    stream = client.run_chat_completions_stream(MESSAGES)
    assert "".join(stream) == "ab"
    with pytest.raises(InvalidInputError, match="already iterated"):
        list(stream)
    assert stream.text == "ab" and len(fault_server.requests) == 1


def test_events_share_the_read_once_rule(fault_server, client):
    fault_server.add(200, chunks=chat_chunks(["a"]))
    stream = client.run_chat_completions_stream(MESSAGES)
    assert [e.type for e in stream.events()][-1] == "done"
    for again in (lambda: list(stream.events()), lambda: list(stream)):
        with pytest.raises(InvalidInputError, match="already iterated"):
            again()
    assert len(fault_server.requests) == 1


def test_close_and_with_end_a_stream_early(fault_server, client):
    fault_server.add(200, chunks=chat_chunks(["one ", "two ", "three"]), chunk_delay=0.05)
    with client.run_chat_completions_stream(MESSAGES) as stream:
        first = next(iter(stream))
    assert first == "one " and stream.closed and stream._response is None
    with pytest.raises(InvalidInputError, match="already closed"):
        list(stream)
    never_started = client.run_chat_completions_stream(MESSAGES)
    never_started.close()
    never_started.close()  # idempotent
    with pytest.raises(InvalidInputError):
        list(never_started)
    assert len(fault_server.requests) == 1


def test_one_rule_for_every_async_stream(fault_server, client):
    async def main():
        out = []
        # Iterated directly, no await, for every async streaming entry point...
        fault_server.add(200, chunks=chat_chunks(["c", "1"]))
        out.append([d async for d in client.arun_chat_completions_stream(MESSAGES)])
        fault_server.add(200, chunks=chat_chunks(["v", "1"]))
        out.append([d async for d in client.arun_vision_request("x", [png()], stream=True)])
        # ... or awaited first: the same stream comes back.
        fault_server.add(200, chunks=chat_chunks(["c", "2"]))
        stream = await client.arun_chat_completions_stream(MESSAGES)
        out.append([d async for d in stream])
        fault_server.add(200, chunks=chat_chunks(["v", "2"]))
        stream = await client.arun_vision_request("x", [png()], stream=True)
        out.append([d async for d in stream])
        with pytest.raises(InvalidInputError, match="already iterated"):
            async for _ in stream:
                pass
        # async with closes it early.
        fault_server.add(200, chunks=chat_chunks(["x", "y", "z"]), chunk_delay=0.05)
        async with client.arun_chat_completions_stream(MESSAGES) as early:
            async for delta in early:
                out.append(delta)
                break
        assert early.closed
        # Bad input: raised by await (or the first iteration), or kept in .error.
        with pytest.raises(InvalidInputError):
            await client.arun_vision_request("x", [b"not an image"], stream=True)
        bad = await client.arun_vision_request("x", [b"not an image"], stream=True, return_error=True)
        assert [d async for d in bad] == [] and "not a supported image" in bad.error["message"]
        await client.aclose()
        return out

    assert asyncio.run(main()) == [["c", "1"], ["v", "1"], ["c", "2"], ["v", "2"], "x"]
    assert len(fault_server.requests) == 5


def test_text_before_a_stream_error_is_kept_on_the_error(fault_server, client):
    error_event = sse({"error": {"message": "backend died", "type": "server_error"}})
    fault_server.add(200, chunks=chat_chunks(["Hel", "lo"], done=False, finish=False) + [error_event])
    stream = client.run_chat_completions_stream(MESSAGES)
    deltas = []
    with pytest.raises(StreamError) as info:
        for delta in stream:
            deltas.append(delta)
    assert deltas == ["Hel", "lo"] and info.value.partial_text == "Hello"
    # Text in the same network chunk as the error event is delivered, then the error raised.
    same_chunk = b"".join(chat_chunks(["tail"], done=False, finish=False)) + error_event
    fault_server.add(200, chunks=[same_chunk])
    stream = client.run_chat_completions_stream(MESSAGES, return_error=True)
    assert list(stream) == ["tail"]
    assert stream.error["type"] == "StreamError" and stream.error["partial_text"] == "tail"


# -- 6. nothing blocks the event loop ------------------------------------------------------------------


async def _worst_stall(work, period: float = 0.005) -> tuple[float, float]:
    """Run ``work`` while a sampler sleeps ``period`` in a loop; -> (worst extra delay, work time)."""
    worst = 0.0
    done = False

    async def sampler():
        nonlocal worst
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(period)
            worst = max(worst, time.perf_counter() - before - period)

    task = asyncio.ensure_future(sampler())
    await asyncio.sleep(0.02)
    start = time.perf_counter()
    try:
        await work()
    finally:
        elapsed = time.perf_counter() - start
        done = True
        await task
    return worst, elapsed


@pytest.fixture(scope="module")
def big_images(tmp_path_factory):
    """Four 5000x4000 PNGs (PNG: no reduced-scale decoding, so each costs ~200 ms to shrink)."""
    folder = tmp_path_factory.mktemp("big")
    paths = []
    for i in range(4):
        img = Image.radial_gradient("L").resize((5000, 4000)).convert("RGB")
        img.putpixel((i, i), (255, 0, 0))
        path = folder / f"big{i}.png"
        img.save(path, "PNG")
        paths.append(str(path))
    return paths


def test_vision_image_work_runs_off_the_event_loop(fault_server, client, big_images):
    """Reading, decoding and resizing four 5000x4000 images takes most of a second here; the
    event loop's worst stall must stay far below that (it was the whole time before)."""
    fault_server.add(200, chat_body("warm"))
    fault_server.add(200, chat_body("four gradients"))

    async def main():
        # The first async call imports aiohttp and opens the session (the transport's own cost).
        assert await client.arun_chat_completions(MESSAGES) == "warm"

        async def work():
            assert await client.arun_vision_request("x", big_images, max_image_side=512) == "four gradients"

        result = await _worst_stall(work)
        await client.aclose()
        return result

    worst, elapsed = asyncio.run(main())
    print(f"\nvision: work {elapsed * 1000:.0f} ms, worst event-loop stall {worst * 1000:.1f} ms", file=sys.stderr)
    assert elapsed > 0.3, "the work must be long enough for the measurement to mean something"
    assert worst < 0.1
    parts = fault_server.requests[1].json()["messages"][0]["content"]
    sizes = [Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))).size
             for p in parts if p["type"] == "image_url"]
    assert sizes == [(512, 410)] * 4


def test_azure_token_callable_runs_off_the_event_loop(fault_server):
    threads: list[str] = []

    def token() -> str:
        threads.append(threading.current_thread().name)
        time.sleep(0.2)  # what asking Entra ID over the network costs
        return "entra-token-abcdef"

    client = create_client("azure", endpoint=f"http://127.0.0.1:{fault_server.port}", deployment="d",
                           azure_ad_token=token, max_retries=0)
    fault_server.add(200, chat_body("sync"))
    fault_server.add(200, chat_body("warm"))
    fault_server.add(200, chat_body("async"))
    assert client.run_chat_completions(MESSAGES) == "sync"

    async def main():
        assert await client.arun_chat_completions(MESSAGES) == "warm"  # aiohttp's import and session

        async def work():
            assert await client.arun_chat_completions(MESSAGES) == "async"

        result = await _worst_stall(work)
        await client.aclose()
        return result

    worst, _ = asyncio.run(main())
    assert threads[0] == "MainThread" and all(name.startswith("gen_ai-blocking") for name in threads[1:])
    assert worst < 0.1
    assert [r.headers["authorization"] for r in fault_server.requests] == ["Bearer entra-token-abcdef"] * 3


def test_refreshing_aws_credentials_are_refreshed_off_the_event_loop(fault_server, tmp_path, monkeypatch):
    """A real botocore credential chain: a profile with a credential_process whose credentials
    expire within botocore's refresh window, so every signing refreshes (and the process takes
    0.3 s, like a call to STS or SSO)."""
    script = tmp_path / "creds.py"
    counter = tmp_path / "count"
    script.write_text(
        "import json, time, datetime, pathlib\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "n = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(n))\n"
        "time.sleep(0.3)\n"
        "exp = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)).isoformat()\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': 'AKIAPROCESS', 'SecretAccessKey': f'process-secret-{n}',"
        " 'SessionToken': f'process-token-{n}', 'Expiration': exp}))\n")
    config = tmp_path / "config"
    config.write_text(f"[profile slow]\ncredential_process = {sys.executable} {script}\nregion = us-east-1\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    client = create_client("bedrock", profile="slow", endpoint=f"http://127.0.0.1:{fault_server.port}",
                           model_name="amazon.nova-lite-v1:0", max_retries=0)
    assert client.codec.blocking_credentials
    body = {"output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}}
    fault_server.add(200, body)
    fault_server.add(200, body)

    async def main():
        assert await client.arun_chat_completions(MESSAGES) == "ok"  # aiohttp's import and session

        async def work():
            assert await client.arun_chat_completions(MESSAGES) == "ok"

        result = await _worst_stall(work)
        await client.aclose()
        return result

    worst, elapsed = asyncio.run(main())
    assert elapsed > 0.25 and worst < 0.1
    assert "Credential=AKIAPROCESS/" in fault_server.requests[0].headers["authorization"]
    # Credentials that arrived by a refresh are scrubbed like the first ones: a server echoing them
    # back in an error never gets them into the error.
    fault_server.default = lambda rec: Step(403, {"message": f"denied token {rec.headers['x-amz-security-token']}"},
                                            headers={"x-amzn-errortype": "AccessDeniedException"})
    _, error = client.run_chat_completions(MESSAGES, return_error=True)
    sent = fault_server.requests[-1].headers["x-amz-security-token"]
    assert sent.startswith("process-token-") and sent != "process-token-1"
    assert sent not in json.dumps(error) and "denied token ***" in error["message"]


# -- 8. n top-ups: a shared bounded pool, siblings cancelled ---------------------------------------------


def test_sync_top_ups_share_one_bounded_pool(fault_server, client):
    from gen_ai import _offload

    fault_server.default = Step(200, chat_body("one"))
    for _ in range(5):
        assert list(client.run_chat_completions(MESSAGES, n=4)) == ["one"] * 4
    workers = [t for t in threading.enumerate() if t.name.startswith("gen_ai-topup")]
    assert 0 < len(workers) <= _offload.TOPUP_WORKERS
    assert len(fault_server.requests) == 20


def test_a_failed_sync_top_up_fails_the_call(fault_server, client):
    fault_server.add(200, chat_body("first"))
    fault_server.add(400, {"error": {"message": "no more"}})
    fault_server.add(400, {"error": {"message": "no more"}})
    _, error = client.run_chat_completions(MESSAGES, n=3, return_error=True)
    assert error["type"] == "BadRequestError" and "no more" in error["message"]


def test_async_top_up_failure_cancels_its_siblings(fault_server, client):
    def answer(recorded):
        if len(fault_server.requests) == 1:
            return Step(200, chat_body("first"))
        if len(fault_server.requests) == 2:
            return Step(400, {"error": {"message": "quota"}})
        return Step(200, chat_body("late"), delay=3.0)

    fault_server.default = answer

    async def main():
        start = time.perf_counter()
        _, error = await client.arun_chat_completions(MESSAGES, n=3, return_error=True)
        elapsed = time.perf_counter() - start
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await client.aclose()
        return error, elapsed, others

    error, elapsed, others = asyncio.run(main())
    assert error["type"] == "BadRequestError" and elapsed < 2.5
    assert others == [], f"top-ups still running after the call failed: {others}"


def test_top_up_pool_is_rebuilt_after_fork():
    from gen_ai import _offload

    pool = _offload.topup_pool()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a pool from the parent has no threads; it must not be reused
        ok = _offload.topup_pool() is not pool and _offload.topup_pool().submit(lambda: 7).result(5) == 7
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


# -- 8. the error tree: named regressions (the fuzz tests find the rest) -----------------------------------


@pytest.mark.parametrize("body", [{"choices": ["x"]}, {"choices": [{"message": ["x"]}]},
                                  {"choices": [{"message": {"content": 5}}], "usage": {"total_tokens": "many"}}])
def test_wrong_shaped_200_bodies_give_gen_ai_errors_or_clean_results(fault_server, client, body):
    fault_server.add(200, body)
    result, error = client.run_chat_completions(MESSAGES, return_error=True)
    if error is not None:
        assert error["type"] == "ResponseError" and result is None
    else:
        assert result == "" and (result.usage is None or isinstance(result.usage.total_tokens, int))
