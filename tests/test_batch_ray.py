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
    for row, prompt in zip(rows, prompts, strict=True):
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


@pytest.mark.parametrize("batch_format", ["default", "pyarrow"])
def test_a_failing_row_gets_an_error_column(ray_local, batch_format):
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
            concurrency=1, batch_size=8, batch_format=batch_format,
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
    """Every result record in an output directory, as OpenAI batch output lines: JSONL part files
    (``_part-*.jsonl``: a Parquet run's call in progress) and Parquet part files."""
    import glob
    import json

    import pyarrow.parquet as pq

    records = []
    for part in glob.glob(str(out_dir / "part-*.jsonl")) + glob.glob(str(out_dir / "_part-*.jsonl")):
        with open(part) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass  # a half-written last line of a killed job
    for part in glob.glob(str(out_dir / "part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            if row["response"] is not None:
                row["response"]["body"] = json.loads(row["response"]["body"])
            records.append(row)
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
    from pathlib import Path

    cmd = [sys.executable, "-m", "gen_ai", "batch", "--ray", str(inp), str(out), "--endpoint", server.url,
           "--model", "m", "--max-retries", "0", "--no-progress", "--ray-actors", "2", "-c", "4", *extra]
    env = {**os.environ, "RAY_ADDRESS": address}
    return cmd, env, Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("out_name", ["out", "out.parquet"])
def test_gen_ai_batch_ray_failed_rows_then_resume(ray_local, tmp_path, out_name):
    import json
    import subprocess
    from collections import Counter

    handler = _Echo(fail={"r3", "r7"})
    server = FaultServer(default=handler)
    try:
        inp, out = tmp_path / "in.jsonl", tmp_path / out_name
        _write_lines(inp, 30)
        address = ray_local.get_runtime_context().gcs_address
        cmd, env, cwd = _gen_ai_batch_ray(inp, out, server, address, "--json")
        first = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert first.returncode == 1, first.stderr[-3000:]
        assert json.loads(first.stdout.strip().splitlines()[-1]) == {"items": 30, "skipped": 0, "succeeded": 28,
                                                                     "failed": 2}
        failed = [r for r in _results(out) if r["error"] is not None]
        assert sorted(r["custom_id"] for r in failed) == ["r3", "r7"]
        assert all(r["response"]["status_code"] == 400 and r["error"]["code"] == "BadRequestError" for r in failed)
        # --no-retry-failed: the failed results are kept, nothing is sent
        kept = subprocess.run(cmd + ["--no-retry-failed"], env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=300)
        assert kept.returncode == 0, kept.stderr[-3000:]
        assert json.loads(kept.stdout.strip().splitlines()[-1]) == {"items": 30, "skipped": 30, "succeeded": 0,
                                                                    "failed": 0}
        assert len(handler.seen) == 30 and len(_results(out)) == 30
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
        if out_name.endswith(".parquet"):  # a Parquet dataset any reader takes, nothing else in the directory
            import pyarrow.parquet as pq

            assert all(p.name.startswith("part-") and p.suffix == ".parquet" for p in out.iterdir())
            table = pq.read_table(out)
            assert table.num_rows == 30 and table.column_names == ["id", "custom_id", "response", "error"]
            assert str(table.schema.field("response").type) == (
                "struct<status_code: int64, request_id: string, body: string>")
            assert ray_local.data.read_parquet(str(out)).count() == 30
    finally:
        server.close()


@pytest.mark.parametrize("out_name", ["out", "out.parquet"])
def test_gen_ai_batch_ray_killed_job_resumes(ray_local, tmp_path, out_name):
    import signal
    import subprocess
    from collections import Counter

    handler = _Echo(delay=0.05)
    server = FaultServer(default=handler)
    try:
        inp, out = tmp_path / "in.jsonl", tmp_path / out_name
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
        if out_name.endswith(".parquet"):  # killed mid-call: that call's results are only in its JSONL file
            assert list(out.glob("_part-*.jsonl"))
        rerun = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        records = _results(out)
        assert Counter(r["custom_id"] for r in records) == Counter(f"r{i}" for i in range(200))
        sent = Counter(handler.seen)
        assert all(sent[cid] == 1 for cid in finished_before)  # nothing with a result was sent again
        if out_name.endswith(".parquet"):  # the calls cut short by the kill were converted on the rerun
            assert all(p.suffix == ".parquet" for p in out.iterdir())
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


# -- embeddings: /v1/embeddings lines with --ray, and EmbeddingsPredictor ----------------------------

EMBED_TEXTS = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell sharply today.",
               "Paris is the capital of France.", "The weather is sunny."]


def test_embeddings_batch_file_on_ray(ray_local, xllamacpp_embeddings_server, tmp_path):
    """/v1/embeddings lines through run_batch_file_on_ray into Parquet, against llama.cpp's server
    (one slot: a text's vector is the one a direct call gives); a rerun sends nothing."""
    import json

    from gen_ai import create_client
    from gen_ai.ray_data import run_batch_file_on_ray

    server = xllamacpp_embeddings_server
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    inp.write_text("".join(json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                                       "body": {"model": "text-embedding-3-small", "input": text}}) + "\n"
                           for i, text in enumerate(EMBED_TEXTS)))
    options = {"endpoint": server.url, "model_name": server.model, "max_concurrent": 2}
    counts = run_batch_file_on_ray(str(inp), str(out), concurrency=2, rows_per_call=2, **options)
    assert counts == {"items": 5, "skipped": 0, "succeeded": 5, "failed": 0}
    by_id = {r["custom_id"]: r for r in _results(out)}
    client = create_client(endpoint=server.url, model_name=server.model)
    for i, text in enumerate(EMBED_TEXTS):
        body = by_id[f"e{i}"]["response"]["body"]
        assert body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
        got, want = body["data"][0]["embedding"], client.run_embeddings([text])[0]
        assert len(got) == 576 and max(abs(x - y) for x, y in zip(got, want, strict=True)) < 1e-6
    again = run_batch_file_on_ray(str(inp), str(out), concurrency=1, **options)
    assert again == {"items": 5, "skipped": 5, "succeeded": 0, "failed": 0}


def test_embeddings_predictor_against_the_real_server(ray_local, xllamacpp_embeddings_server):
    """A text column in, an embedding column out; an empty or missing text is that row's error
    (the others are sent); the job's shared limits actor sees every request."""
    from gen_ai import create_client
    from gen_ai.ray_data import EmbeddingsPredictor, shared_limits_actor

    server = xllamacpp_embeddings_server
    limits = shared_limits_actor("emb-test", 6000, None)  # made here, so it outlives the job's actors
    texts = [*EMBED_TEXTS[:3], "", None, *EMBED_TEXTS[3:]]
    ds = ray_local.data.from_items([{"n": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=2)
    rows = ds.map_batches(
        EmbeddingsPredictor,
        fn_constructor_kwargs={"endpoint": server.url, "model_name": server.model, "texts_per_request": 1,
                               "max_concurrent": 2, "requests_per_minute": 6000, "limits_name": "emb-test"},
        concurrency=2, batch_size=4, num_cpus=0.25,
    ).take_all()
    rows = sorted(rows, key=lambda r: r["n"])
    client = create_client(endpoint=server.url, model_name=server.model)
    for row, text in zip(rows, texts, strict=True):
        if text:
            want = client.run_embeddings([text])[0]
            assert row["error"] is None and len(row["embedding"]) == 576
            assert max(abs(x - y) for x, y in zip(row["embedding"], want, strict=True)) < 1e-6
        else:
            assert row["embedding"] is None, row
            why = ("must be a string, got NoneType" if text is None
                   else "is an empty string, which provider 'openai' rejects")
            assert row["error"] == f"InvalidInputError: {why}"
    assert ray_local.get(limits.count.remote()) == 5  # one reservation per request, from both actors


def test_embeddings_predictor_a_failed_request(ray_local, tmp_path):
    """A request the server rejects gives its texts the error; the block and the other requests
    go on (texts_per_request=2: the rejected text's neighbour in that request fails with it).
    pyarrow batches; the added columns have one type in every block, so the blocks written as
    Parquet files read back as one table (a block without errors is not Arrow's null type)."""
    import pyarrow.parquet as pq

    def rule(rec):
        inputs = rec.json()["input"]
        if "bad" in inputs:
            return Step(400, {"error": {"message": "rejected"}})
        return Step(200, {"object": "list", "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                          "data": [{"object": "embedding", "index": i, "embedding": [float(len(t)), 0.5]}
                                   for i, t in enumerate(inputs)]})

    server = FaultServer(default=rule)
    try:
        from gen_ai.ray_data import EmbeddingsPredictor

        texts = ["a", "bb", "bad", "dddd", "eeeee", "f", "g"]
        ds = ray_local.data.from_items([{"t": t} for t in texts], override_num_blocks=2).map_batches(
            EmbeddingsPredictor,
            fn_constructor_kwargs={"endpoint": server.url, "model_name": "m", "input_column": "t",
                                   "output_column": "v", "texts_per_request": 2,
                                   "client_options": {"max_retries": 0, "embedding_encoding": "float"}},
            concurrency=1, batch_size=4, batch_format="pyarrow", num_cpus=0.25,
        ).materialize()
        rows = ds.take_all()
        ds.write_parquet(str(tmp_path / "emb"))
    finally:
        server.close()
    table = pq.read_table(tmp_path / "emb")
    assert table.num_rows == 7 and str(table.schema.field("v").type) == "list<element: float>"
    assert str(table.schema.field("error").type) == "string"
    by_text = {r["t"]: r for r in rows}
    assert [by_text[t]["v"] for t in ("a", "eeeee")] == [[1.0, 0.5], [5.0, 0.5]]
    for t in ("bad", "dddd"):  # one request
        assert by_text[t]["v"] is None and by_text[t]["error"].startswith("BadRequestError: ")
    assert by_text["bb"]["v"] == [2.0, 0.5] and by_text["bb"]["error"] is None


# -- resume for dataset runs: Ray Data's checkpointing, keyed on the dataset's id column -------------

RESUMABLE_JOB = '''
import os, sys

import ray
from ray.data.checkpoint import CheckpointConfig
from ray.data.expressions import col

from gen_ai.ray_data import ChatCompletionsPredictor

inp, out, checkpoints, endpoint = sys.argv[1:5]
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, configure_logging=False)
ray.data.DataContext.get_current().checkpoint_config = CheckpointConfig(
    id_column="id", checkpoint_path=checkpoints, delete_checkpoint_on_success=False)
ds = ray.data.read_json(inp, ray_remote_args={"num_cpus": 0.25})
ds = ds.map_batches(ChatCompletionsPredictor, concurrency=2, batch_size=5, num_cpus=0.25,
                    fn_constructor_kwargs={"endpoint": endpoint, "model_name": "m", "max_concurrent": 2,
                                           "client_options": {"max_retries": 0}})
ds.filter(expr=col("error").is_null()).write_parquet(out, ray_remote_args={"num_cpus": 0.25})
'''


def test_dataset_run_killed_then_resumed_with_ray_data_checkpointing(ray_local, tmp_path):
    """A ChatCompletionsPredictor job (read_json -> map_batches -> write_parquet) with Ray Data's
    CheckpointConfig keyed on the rows' ``id``: SIGKILL the driver mid-job, rerun the same script.
    Every id ends up in the output exactly once, the rows committed before the kill are not sent
    again, and a row that failed (filtered out before the write) is sent again."""
    import glob
    import json
    import os
    import signal
    import subprocess
    from collections import Counter
    from pathlib import Path

    import pyarrow.parquet as pq

    handler = _Echo(delay=0.2, fail={"q5"})
    server = FaultServer(default=handler)
    try:
        inp, out, checkpoints = tmp_path / "in", tmp_path / "out", tmp_path / "checkpoints"
        inp.mkdir()
        for f in range(8):  # 8 files: 8 read tasks, so blocks finish (and are committed) one by one
            (inp / f"{f}.jsonl").write_text("".join(
                json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": f"q{i}"}]}) + "\n"
                for i in range(f * 15, f * 15 + 15)))
        (tmp_path / "job.py").write_text(RESUMABLE_JOB)
        cmd = [sys.executable, str(tmp_path / "job.py"), str(inp), str(out), str(checkpoints), server.url]
        env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

        def committed():
            ids = set()
            for path in glob.glob(str(checkpoints / "*.parquet")):
                if not path.endswith(".pending.parquet"):
                    try:
                        ids |= set(pq.read_table(path)["id"].to_pylist())
                    except OSError:
                        pass  # being renamed
            return ids

        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time_module().monotonic() + 240
        while time_module().monotonic() < deadline and len(committed()) < 30:
            if proc.poll() is not None:
                pytest.fail(f"the job ended before it was killed: {proc.stderr.read().decode()[-3000:]}")
            time_module().sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        time_module().sleep(3)  # the cluster notices the dead driver and stops its actors
        before = committed()
        assert 30 <= len(before) < 120 and "q5" not in before
        sent_before = len(handler.seen)
        handler.fail.clear()
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        ids = pq.read_table(out)["id"].to_pylist()
        assert Counter(ids) == Counter(f"q{i}" for i in range(120))  # each row once
        resent = set(handler.seen[sent_before:])
        assert not resent & before  # nothing committed before the kill was sent again
        assert "q5" in resent and len(resent) == 120 - len(before)
    finally:
        server.close()
