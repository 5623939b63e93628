"""Batch files: OpenAI Batch API input -> OpenAI batch output, checkpointed and resumable.

The kill test runs ``python -m gen_ai batch`` in a real subprocess against a loopback server,
SIGKILLs it mid-run, reruns it, and checks from the server's own request log that nothing was
sent twice that already had a result and nothing was lost.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fault_server import FaultServer, Step, chat_body, completion_body

from gen_ai import create_client
from gen_ai.batch import BatchInputError, validate_input_file

ROOT = Path(__file__).resolve().parents[1]


def write_input(path: Path, count: int, url: str = "/v1/chat/completions") -> list[str]:
    ids = [f"item-{i}" for i in range(count)]
    with open(path, "w") as f:
        for cid in ids:
            if url == "/v1/chat/completions":
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": cid}], "max_tokens": 5}
            else:
                body = {"model": "gpt-3.5-turbo-instruct", "prompt": cid, "max_tokens": 5}
            f.write(json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body}) + "\n")
    return ids


def read_output(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Echo:
    """Answers with the prompt; records each prompt (= custom_id) the server received."""

    def __init__(self, delay: float = 0.0, fail: set[str] | None = None):
        self.delay = delay
        self.fail = fail or set()
        self.seen: list[str] = []
        self.models: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, rec):
        body = rec.json()
        text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        with self.lock:
            self.seen.append(text)
            self.models.append(body.get("model"))
        if text in self.fail:
            return Step(400, {"error": {"message": f"rejected {text}", "type": "invalid_request_error"}})
        return Step(200, chat_body(text) if "messages" in body else completion_body(text), delay=self.delay)


@pytest.fixture
def echo():
    servers = []

    def make(**kwargs):
        handler = Echo(**kwargs)
        server = FaultServer(default=handler)
        servers.append(server)
        return server, handler, create_client(endpoint=server.url, model_name="served-model", max_retries=0)

    yield make
    for s in servers:
        s.close()


def test_output_is_openai_batch_format(tmp_path, echo):
    _server, handler, client = echo()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(inp, 5)
    with open(inp, "a") as f:  # a completions line too, and a blank line (ignored)
        f.write("\n" + json.dumps({"custom_id": "text-1", "method": "POST", "url": "/v1/completions",
                                   "body": {"model": "x", "prompt": "text-1", "max_tokens": 3}}) + "\n")
    stats = client.run_batch_file(inp, out, max_concurrent=3)
    lines = read_output(out)
    assert sorted(r["custom_id"] for r in lines) == sorted(ids + ["text-1"])
    for r in lines:
        assert set(r) == {"id", "custom_id", "response", "error"} and r["error"] is None
        assert r["id"].startswith("batch_req_")
        assert r["response"]["status_code"] == 200 and r["response"]["request_id"]
        body = r["response"]["body"]
        if r["custom_id"] == "text-1":
            assert body["object"] == "text_completion" and body["choices"][0]["text"] == "text-1"
        else:
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"] == r["custom_id"]
    assert (stats.items, stats.succeeded, stats.failed, stats.skipped) == (6, 6, 0, 0)
    assert stats.total_tokens == 6 * 7
    assert set(handler.models) == {"served-model"}  # the client's model overrides the body's

    out2 = tmp_path / "out2.jsonl"
    client.run_batch_file(inp, out2, use_body_model=True)
    assert set(handler.models[6:]) == {"gpt-4o-mini", "x"}

    again = client.run_batch_file(inp, out)  # everything done: nothing sent
    assert again.skipped == 6 and again.requests == 0 and len(handler.seen) == 12


def test_bad_input_file_lists_every_problem_and_sends_nothing(tmp_path, echo):
    server, _handler, client = echo()
    good = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "x"}]}}
    lines = [
        json.dumps(good),                                                  # 1 ok
        '{"custom_id": "b", "method": "POST", "url": ',                    # 2 invalid JSON
        json.dumps({k: v for k, v in good.items() if k != "custom_id"}),  # 3 no custom_id
        json.dumps(good),                                                  # 4 duplicate of line 1
        json.dumps({**good, "custom_id": "e", "url": "/v1/images/generations"}),  # 5 unknown url
        json.dumps({"custom_id": "f", "method": "POST", "url": "/v1/completions"}),  # 6 no body
        json.dumps({**good, "custom_id": "g", "method": "GET"}),           # 7 method
        json.dumps({**good, "custom_id": "h", "body": {"messages": []}}),  # 8 empty messages
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    with pytest.raises(BatchInputError) as info:
        client.run_batch_file(inp, out)
    problems = dict(info.value.problems)
    assert sorted(problems) == [2, 3, 4, 5, 6, 7, 8]
    assert "invalid JSON" in problems[2] and "missing custom_id" in problems[3]
    assert "duplicate custom_id 'a'" in problems[4] and "line 1" in problems[4]
    assert "unknown url" in problems[5] and "missing body" in problems[6] and "POST" in problems[7]
    assert "line 2:" in str(info.value) and "7 problems" in str(info.value)
    assert server.requests == [] and not out.exists()

    # the command line reports the same, one line per problem, exit status 2
    proc = subprocess.run([sys.executable, "-m", "gen_ai", "batch", str(inp), str(out), "--endpoint", server.url,
                           "--model", "m"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert "line 4: duplicate custom_id" in proc.stderr and "line 5: unknown url" in proc.stderr
    assert server.requests == [] and not out.exists()
    with pytest.raises(BatchInputError):
        validate_input_file(inp)


def test_half_written_last_line_is_repaired(tmp_path, echo):
    _server, handler, client = echo()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(inp, 10)
    client.run_batch_file(inp, out, max_concurrent=2)
    lines = out.read_bytes().splitlines(keepends=True)
    kept = lines[:4]
    out.write_bytes(b"".join(kept) + lines[4][: len(lines[4]) // 2])  # a crash mid-write
    kept_ids = {json.loads(x)["custom_id"] for x in kept}
    handler.seen.clear()
    stats = client.run_batch_file(inp, out, max_concurrent=2)
    assert stats.skipped == 4 and stats.succeeded == 6
    assert sorted(handler.seen) == sorted(set(ids) - kept_ids)  # only the missing ones were sent
    records = read_output(out)  # every line parses again
    assert Counter(r["custom_id"] for r in records) == Counter(ids)
    assert out.read_bytes().endswith(b"\n")

    # a complete last record that only lost its newline is kept, not resent
    data = out.read_bytes()
    out.write_bytes(data[:-1])
    handler.seen.clear()
    assert client.run_batch_file(inp, out).skipped == 10 and handler.seen == []
    assert len(read_output(out)) == 10 and out.read_bytes().endswith(b"\n")


def test_failed_items_are_written_and_retried_on_rerun(tmp_path, echo):
    _server, handler, client = echo(fail={"item-2", "item-5"})
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(inp, 8)
    stats = client.run_batch_file(inp, out)
    assert stats.failed == 2 and stats.succeeded == 6
    errors = {r["custom_id"]: r for r in read_output(out) if r["error"] is not None}
    assert set(errors) == {"item-2", "item-5"}
    assert errors["item-2"]["error"]["code"] == "BadRequestError"
    assert "rejected item-2" in errors["item-2"]["error"]["message"]
    assert errors["item-2"]["response"]["status_code"] == 400

    handler.seen.clear()
    assert client.run_batch_file(inp, out, retry_failed=False).requests == 0  # errors kept as results

    handler.fail.clear()
    stats = client.run_batch_file(inp, out)
    assert sorted(handler.seen) == ["item-2", "item-5"] and stats.skipped == 6 and stats.succeeded == 2
    records = read_output(out)
    assert Counter(r["custom_id"] for r in records) == Counter(ids)  # old error lines replaced
    assert all(r["error"] is None for r in records)


def test_kill_9_mid_run_and_resume_loses_nothing_and_resends_nothing(tmp_path, echo):
    server, handler, _client = echo(delay=0.002)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_input(inp, 2000)
    cmd = [sys.executable, "-m", "gen_ai", "batch", str(inp), str(out), "--endpoint", server.url,
           "--model", "m", "-c", "16", "--no-progress", "--max-retries", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 400:
            break
        if proc.poll() is not None:
            pytest.fail(f"the batch ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.3)  # let the server read what was already on the wire

    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    finished_before = {json.loads(line)["custom_id"] for line in complete.splitlines()}
    assert 400 <= len(finished_before) < 2000
    sent_before = len(handler.seen)

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]

    records = read_output(out)
    counts = Counter(r["custom_id"] for r in records)
    assert counts == Counter(ids)  # every custom_id exactly once, nothing lost
    for r in records:  # each answer belongs to its own request
        assert r["error"] is None and r["response"]["body"]["choices"][0]["message"]["content"] == r["custom_id"]
    sent = Counter(handler.seen)
    assert all(sent[cid] == 1 for cid in finished_before)  # nothing with a result was sent again
    assert set(sent) == set(ids)
    # only requests in flight at the kill (at most the 16 workers) were sent twice
    assert sum(sent.values()) - 2000 <= 16
    # the rerun sent exactly the items without a result, once each
    assert len(handler.seen) - sent_before == 2000 - len(finished_before)
    assert f"{len(finished_before)} already done" in rerun.stderr or "already done" in rerun.stderr


def test_file_batch_against_the_real_server(tmp_path, client):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [
        {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 5}},
        {"custom_id": "c2", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": "Count to three."}], "max_completion_tokens": 5}},
        {"custom_id": "t1", "method": "POST", "url": "/v1/completions",
         "body": {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}},
    ]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = client.run_batch_file(inp, out, max_concurrent=2)
    assert stats.succeeded == 3 and stats.failed == 0 and stats.completion_tokens > 0
    by_id = {r["custom_id"]: r for r in read_output(out)}
    assert by_id["c1"]["response"]["body"]["choices"][0]["message"]["content"] == \
        client.run_chat_completions([{"role": "user", "content": "Say hello."}], max_tokens=5)
    assert by_id["c2"]["response"]["body"]["usage"]["completion_tokens"] <= 5
    assert by_id["t1"]["response"]["body"]["choices"][0]["text"] == \
        client.run_completions("The capital of France is", max_tokens=4)


def test_file_batch_never_stalls_the_event_loop(tmp_path, echo):
    """Reading, validating and recovering files, and writing/fsyncing results, all happen off the
    loop: a ticker task on the same loop never waits long, even with 40 MB of files to read."""
    import asyncio

    _server, handler, client = echo()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    pad = "x" * 1000
    total, done = 20_000, 19_800
    with open(inp, "w") as f:
        for i in range(total):
            f.write(json.dumps({"custom_id": f"item-{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"messages": [{"role": "user", "content": f"item-{i}"}],
                                         "max_tokens": 5, "metadata": {"pad": pad}}}) + "\n")
    with open(out, "w") as f:  # an earlier run finished most items
        for i in range(done):
            f.write(json.dumps({"id": f"batch_req_{i}", "custom_id": f"item-{i}", "error": None,
                                "response": {"status_code": 200, "body": {"pad": pad}}}) + "\n")

    async def ticker(gaps, stop):
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def idle_worst():
        """The same ticker on an idle loop: what this (shared, loaded) machine's scheduler costs."""
        gaps, stop = [], asyncio.Event()
        task = asyncio.ensure_future(ticker(gaps, stop))
        await asyncio.sleep(0.5)
        stop.set()
        await task
        return max(gaps)

    async def main():
        before = await idle_worst()
        gaps, stop = [], asyncio.Event()
        task = asyncio.ensure_future(ticker(gaps, stop))
        await asyncio.sleep(0.01)
        try:
            stats = await client.arun_batch_file(inp, out, max_concurrent=8, fsync=True)
        finally:
            stop.set()
            await task
        await client.aclose()
        return stats, gaps, max(before, await idle_worst())

    import gc

    gc.collect()  # start from a clean heap: the garbage of writing the test files is not the batch's
    stats, gaps, noise = asyncio.run(main())
    assert stats.skipped == done and stats.succeeded == total - done
    assert sorted(handler.seen) == sorted(f"item-{i}" for i in range(done, total))
    worst = max(gaps)
    # Reading these files on the loop stalled it ~350 ms on a quiet machine; off the loop the
    # worst is ~10 ms. The bound allows for what the idle loop itself shows on a loaded machine,
    # plus some slack: 109 ms was seen once in a full CI run (idle loop 3 ms), cause not found.
    assert worst < 0.15 + 2 * noise, f"the event loop stalled {worst * 1000:.0f} ms (idle: {noise * 1000:.0f} ms)"
    assert len(read_output(out)) == total


# -- /v1/embeddings lines ---------------------------------------------------------------------------


class EmbedEcho:
    """/v1/embeddings answers whose vectors encode the text (length, first character), base64 or
    floats as asked; chat lines are echoed; records every input text the server received."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.seen: list[str] = []
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, rec):
        import array
        import base64

        body = rec.json()
        with self.lock:
            self.bodies.append(body)
        if "messages" in body:
            text = body["messages"][-1]["content"]
            with self.lock:
                self.seen.append(text)
            return Step(200, chat_body(text), delay=self.delay)
        data = []
        for i, text in enumerate(body["input"]):
            with self.lock:
                self.seen.append(text)
            vec = [float(len(text)), float(ord(text[0]))]
            emb = (base64.b64encode(array.array("f", vec).tobytes()).decode()
                   if body.get("encoding_format") == "base64" else vec)
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = len(body["input"])
        return Step(200, {"object": "list", "data": data, "model": body["model"],
                          "usage": {"prompt_tokens": n, "total_tokens": n}}, delay=self.delay)


def write_embedding_input(path: Path, count: int) -> list[str]:
    ids = [f"emb-{i}" for i in range(count)]
    with open(path, "w") as f:
        for i, cid in enumerate(ids):
            body = {"model": "text-embedding-3-small", "input": cid if i % 2 else [cid, cid + "!"]}
            f.write(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/embeddings", "body": body}) + "\n")
    return ids


def test_embedding_lines_output_in_openai_format(tmp_path, openai_spec):
    import array
    import base64

    from conftest import spec_validator

    handler = EmbedEcho()
    server = FaultServer(default=handler)
    try:
        client = create_client(endpoint=server.url, model_name="embed-model", max_retries=0)
        inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        lines = [
            {"custom_id": "one", "method": "POST", "url": "/v1/embeddings",
             "body": {"model": "x", "input": "hello", "dimensions": 2}},
            {"custom_id": "many", "method": "POST", "url": "/v1/embeddings",
             "body": {"model": "x", "input": ["ab", "cde"], "encoding_format": "base64", "user": "u-1"}},
            {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}},
        ]
        inp.write_text("".join(json.dumps(r) + "\n" for r in lines))
        stats = client.run_batch_file(inp, out, max_concurrent=3)
        assert (stats.items, stats.succeeded, stats.failed) == (3, 3, 0)
        by_id = {r["custom_id"]: r for r in read_output(out)}
        validator = spec_validator(openai_spec, "CreateEmbeddingResponse")
        one = by_id["one"]["response"]["body"]
        assert list(validator.iter_errors(one)) == [] and one["data"][0]["embedding"] == [5.0, 104.0]
        assert one["model"] == "embed-model" and one["usage"] == {"prompt_tokens": 1, "total_tokens": 1}
        many = by_id["many"]["response"]["body"]
        decoded = []
        for item in many["data"]:  # the line asked for base64: it gets base64, in input order
            floats = array.array("f")
            floats.frombytes(base64.b64decode(item["embedding"]))
            decoded.append(floats.tolist())
        assert decoded == [[2.0, 97.0], [3.0, 99.0]] and [d["index"] for d in many["data"]] == [0, 1]
        assert by_id["chat"]["response"]["body"]["choices"][0]["message"]["content"] == "hi"
        sent = [b for b in handler.bodies if "input" in b]
        assert {json.dumps(b["input"]) for b in sent} == {'["hello"]', '["ab", "cde"]'}
        assert all(b["model"] == "embed-model" and b["encoding_format"] == "base64" for b in sent)
        assert [b.get("dimensions") for b in sent if b["input"] == ["hello"]] == [2]
        assert [b.get("user") for b in sent if b["input"] == ["ab", "cde"]] == ["u-1"]
        for body in sent:
            assert list(spec_validator(openai_spec, "CreateEmbeddingRequest").iter_errors(body)) == []
    finally:
        server.close()


def test_bad_embedding_lines_are_listed(tmp_path):
    inp = tmp_path / "in.jsonl"
    rows = [{"custom_id": "a", "url": "/v1/embeddings", "body": {"input": ""}},
            {"custom_id": "b", "url": "/v1/embeddings", "body": {"input": []}},
            {"custom_id": "c", "url": "/v1/embeddings", "body": {"input": ["ok", [1, 2]]}},
            {"custom_id": "d", "url": "/v1/embeddings", "body": {"input": "x", "encoding_format": "int8"}},
            {"custom_id": "e", "url": "/v1/embeddings", "body": {"input": ["fine"]}}]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BatchInputError) as info:
        validate_input_file(inp)
    problems = dict(info.value.problems)
    assert sorted(problems) == [1, 2, 3, 4]
    assert "empty string" in problems[1] and "non-empty" in problems[2]
    assert "input[1]" in problems[3] and "token arrays" in problems[3] and "encoding_format" in problems[4]


def test_embedding_lines_kill_9_and_resume(tmp_path):
    """The same guarantee as chat lines: SIGKILL mid-run, rerun, every custom_id exactly once,
    nothing that had a result sent again."""
    handler = EmbedEcho(delay=0.002)
    server = FaultServer(default=handler)
    try:
        inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        ids = write_embedding_input(inp, 1500)
        cmd = [sys.executable, "-m", "gen_ai", "batch", str(inp), str(out), "--endpoint", server.url,
               "--model", "m", "-c", "16", "--no-progress", "--max-retries", "0"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 300:
                break
            if proc.poll() is not None:
                pytest.fail(f"the batch ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.3)
        data = out.read_bytes()
        finished_before = {json.loads(x)["custom_id"] for x in data[: data.rfind(b"\n") + 1].splitlines()}
        assert 300 <= len(finished_before) < 1500
        rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        records = read_output(out)
        assert Counter(r["custom_id"] for r in records) == Counter(ids)
        for r in records:  # each line holds the vectors of its own input
            i = int(r["custom_id"].split("-")[1])
            texts = [r["custom_id"]] if i % 2 else [r["custom_id"], r["custom_id"] + "!"]
            got = [d["embedding"] for d in r["response"]["body"]["data"]]
            assert got == [[float(len(t)), float(ord(t[0]))] for t in texts]
        sent = Counter(handler.seen)
        assert all(sent[cid] == 1 for cid in finished_before)
        assert sum(1 for cid in ids if sent[cid] > 1) <= 16  # only what was in flight at the kill
    finally:
        server.close()
