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
