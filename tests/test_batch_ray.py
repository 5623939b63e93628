"""Ray Data: ds.map_batches with gen_ai's callable classes on a local Ray instance, against the
real llama-cpp-python server (and the fault server for a failing row)."""

from __future__ import annotations

import sys

import pytest
from fault_server import FaultServer, Step, chat_body


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_import_gen_ai_does_not_import_ray():
    import subprocess

    code = "import gen_ai, gen_ai.batch, gen_ai.ray_data, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_map_batches_chat_against_the_real_server(ray_local, llama_server, client):
    from gen_ai.ray_data import ChatCompletionsPredictor, TextCompletionsPredictor

    prompts = [f"Say the number {i}." for i in range(5)]
    ds = ray_local.data.from_items([{"id": i, "messages": [{"role": "user", "content": p}]}
                                    for i, p in enumerate(prompts)])
    out = ds.map_batches(
        ChatCompletionsPredictor,
        fn_constructor_kwargs={"endpoint": llama_server, "model_name": "smollm2", "max_tokens": 6,
                               "max_concurrent": 2},
        concurrency=1, batch_size=3,
    ).take_all()
    rows = sorted(out, key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(5))
    for row, prompt in zip(rows, prompts):
        expected = client.run_chat_completions([{"role": "user", "content": prompt}], max_tokens=6)
        assert row["answer"] == expected
        assert row["error"] is None
        assert row["prompt_tokens"] == expected.usage.prompt_tokens
        assert row["completion_tokens"] == expected.usage.completion_tokens

    text = ray_local.data.from_items([{"prompt": "The capital of France is"}]).map_batches(
        TextCompletionsPredictor,
        fn_constructor_kwargs={"endpoint": llama_server, "model_name": "smollm2", "max_tokens": 4},
        concurrency=1, batch_size=4, batch_format="pandas",
    ).take_all()
    assert text[0]["answer"] == client.run_completions("The capital of France is", max_tokens=4)


def test_a_failing_row_gets_an_error_column(ray_local):
    def rule(rec):
        content = rec.json()["messages"][-1]["content"]
        if content == "bad":
            return Step(400, {"error": {"message": "rejected"}})
        return Step(200, chat_body(content.upper()))

    server = FaultServer(default=rule)
    try:
        from gen_ai.ray_data import ChatCompletionsPredictor

        items = [{"q": [{"role": "user", "content": w}]} for w in ("one", "bad", "three")]
        rows = ray_local.data.from_items(items).map_batches(
            ChatCompletionsPredictor,
            fn_constructor_kwargs={"endpoint": server.url, "model_name": "m", "input_column": "q",
                                   "client_options": {"max_retries": 0}},
            concurrency=1, batch_size=8,
        ).take_all()
    finally:
        server.close()
    answers = {r["q"][0]["content"]: r for r in rows}
    assert answers["one"]["answer"] == "ONE" and answers["three"]["answer"] == "THREE"
    assert answers["bad"]["answer"] is None
    assert answers["bad"]["error"].startswith("BadRequestError: ") and "rejected" in answers["bad"]["error"]
    assert answers["one"]["error"] is None and answers["one"]["prompt_tokens"] == 5


def test_rate_limit_is_shared_by_two_actors(ray_local):
    """requests_per_minute=300 with 2 actors: the server sees about 5 requests a second in total
    (not 10, as two per-actor limits would give), counted from the times the server recorded."""
    import threading
    import time

    times = []
    lock = threading.Lock()

    def rule(rec):
        with lock:
            times.append(time.monotonic())
        return Step(200, chat_body("ok"))

    server = FaultServer(default=rule)
    try:
        from gen_ai.ray_data import ChatCompletionsPredictor

        items = [{"q": [{"role": "user", "content": f"n{i}"}]} for i in range(40)]
        rows = ray_local.data.from_items(items, override_num_blocks=4).map_batches(
            ChatCompletionsPredictor,
            fn_constructor_kwargs={"endpoint": server.url, "model_name": "m", "input_column": "q",
                                   "requests_per_minute": 300, "max_concurrent": 8},
            concurrency=2, batch_size=10,
        ).take_all()
    finally:
        server.close()
    assert len(rows) == 40 and all(r["answer"] == "ok" for r in rows)
    times.sort()
    # 5/s with one second's burst (5): 40 requests take at least (40 - 5) / 5 = 7 s; two separate
    # per-actor limits would have allowed about 3.5 s.
    span = times[-1] - times[0]
    assert len(times) == 40 and span >= 6.3, span
    # and no second-long window holds much more than the limit plus the burst
    worst = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert worst <= 11, worst


# -- OpenAI batch files on Ray: gen-ai batch --ray IN OUT, resumable --------------------------------


def _write_lines(path, count):
    import json

    with open(path, "w") as f:
        for i in range(count):
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"messages": [{"role": "user", "content": f"r{i}"}], "max_tokens": 3}}) + "\n")


def _results(out_dir):
    import glob
    import json

    records = []
    for part in glob.glob(str(out_dir / "part-*.jsonl")):
        with open(part) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass  # a half-written last line of a killed job
    return records


class _Echo:
    def __init__(self, delay=0.0, fail=()):
        import threading

        self.delay, self.fail = delay, set(fail)
        self.seen = []
        self.lock = threading.Lock()

    def __call__(self, rec):
        text = rec.json()["messages"][-1]["content"]
        with self.lock:
            self.seen.append(text)
        if text in self.fail:
            return Step(400, {"error": {"message": f"rejected {text}"}})
        return Step(200, chat_body(text), delay=self.delay)


def _gen_ai_batch_ray(inp, out, server, address, *extra):
    import os
    import subprocess
    from pathlib import Path

    cmd = [sys.executable, "-m", "gen_ai", "batch", "--ray", str(inp), str(out), "--endpoint", server.url,
           "--model", "m", "--max-retries", "0", "--no-progress", "--ray-actors", "2", "-c", "4", *extra]
    env = {**os.environ, "RAY_ADDRESS": address}
    return cmd, env, Path(__file__).resolve().parents[1]


def test_gen_ai_batch_ray_failed_rows_then_resume(ray_local, tmp_path):
    import json
    import subprocess
    from collections import Counter

    handler = _Echo(fail={"r3", "r7"})
    server = FaultServer(default=handler)
    try:
        inp, out = tmp_path / "in.jsonl", tmp_path / "out"
        _write_lines(inp, 30)
        address = ray_local.get_runtime_context().gcs_address
        cmd, env, cwd = _gen_ai_batch_ray(inp, out, server, address, "--json")
        first = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert first.returncode == 1, first.stderr[-3000:]
        assert json.loads(first.stdout.strip().splitlines()[-1]) == {"items": 30, "skipped": 0, "succeeded": 28,
                                                                     "failed": 2}
        handler.fail.clear()
        sent_before = Counter(handler.seen)
        second = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert json.loads(second.stdout.strip().splitlines()[-1]) == {"items": 30, "skipped": 28, "succeeded": 2,
                                                                      "failed": 0}
        assert Counter(handler.seen) - sent_before == Counter({"r3": 1, "r7": 1})  # only the failed were resent
        records = _results(out)
        assert Counter(r["custom_id"] for r in records) == Counter(f"r{i}" for i in range(30))
        assert all(r["error"] is None and r["response"]["body"]["choices"][0]["message"]["content"] == r["custom_id"]
                   for r in records)
    finally:
        server.close()


def test_gen_ai_batch_ray_killed_job_resumes(ray_local, tmp_path):
    import signal
    import subprocess
    from collections import Counter

    handler = _Echo(delay=0.05)
    server = FaultServer(default=handler)
    try:
        inp, out = tmp_path / "in.jsonl", tmp_path / "out"
        _write_lines(inp, 200)
        address = ray_local.get_runtime_context().gcs_address
        cmd, env, cwd = _gen_ai_batch_ray(inp, out, server, address)
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time_module().monotonic() + 240
        while time_module().monotonic() < deadline and len(_results(out)) < 40:
            if proc.poll() is not None:
                pytest.fail(f"the job ended before it was killed: {proc.stderr.read().decode()[-3000:]}")
            time_module().sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        time_module().sleep(3)  # the cluster notices the dead driver and stops its actors
        finished_before = {r["custom_id"] for r in _results(out) if r["error"] is None}
        assert 40 <= len(finished_before) < 200
        rerun = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        records = _results(out)
        assert Counter(r["custom_id"] for r in records) == Counter(f"r{i}" for i in range(200))
        sent = Counter(handler.seen)
        assert all(sent[cid] == 1 for cid in finished_before)  # nothing with a result was sent again
    finally:
        server.close()


def time_module():
    import time

    return time


def test_parquet_input_on_ray(ray_local, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from gen_ai.ray_data import run_batch_file_on_ray

    handler = _Echo()
    server = FaultServer(default=handler)
    try:
        rows = [{"custom_id": f"p{i}", "method": "POST", "url": "/v1/chat/completions",
                 "body": json.dumps({"messages": [{"role": "user", "content": f"p{i}"}]})} for i in range(12)]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
        counts = run_batch_file_on_ray(str(tmp_path / "in.parquet"), str(tmp_path / "out"), concurrency=1,
                                       rows_per_call=5, endpoint=server.url, model_name="m")
        assert counts == {"items": 12, "skipped": 0, "succeeded": 12, "failed": 0}
        again = run_batch_file_on_ray(str(tmp_path / "in.parquet"), str(tmp_path / "out"), concurrency=1,
                                      endpoint=server.url, model_name="m")
        assert again["skipped"] == 12 and again["succeeded"] == 0 and len(handler.seen) == 12
        assert sorted(r["custom_id"] for r in _results(tmp_path / "out")) == sorted(f"p{i}" for i in range(12))
    finally:
        server.close()
