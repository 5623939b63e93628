"""List batches: run_chat_completions_batch / run_completions_batch and their async twins.

Correctness and order against the real llama-cpp-python server; failures, 429 storms, 5xx,
slow items, timeouts and rate limits against the loopback fault server (timing checks use the
times the server recorded, not how fast this process ran).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from fault_server import FaultServer, Step, chat_body, completion_body

from gen_ai import create_client
from gen_ai.batch import BatchProgress, BatchResults, BatchStats
from gen_ai.errors import InvalidInputError


def _msgs(texts):
    return [[{"role": "user", "content": t}] for t in texts]


class Recorder:
    """A FaultServer default that echoes the prompt and records when each request arrived."""

    def __init__(self, rule=None, delay: float = 0.0):
        self.times: list[float] = []
        self.contents: list[str] = []
        self.lock = threading.Lock()
        self.rule = rule
        self.delay = delay

    def __call__(self, rec):
        body = rec.json()
        content = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        with self.lock:
            self.times.append(time.monotonic())
            self.contents.append(content)
            count = self.contents.count(content)
        if self.rule is not None:
            step = self.rule(content, count)
            if step is not None:
                return step
        body = chat_body(content) if "messages" in rec.json() else completion_body(content)
        return Step(200, body, delay=self.delay)


@pytest.fixture
def echo_server():
    servers = []

    def make(rule=None, delay=0.0):
        rec = Recorder(rule, delay)
        server = FaultServer(default=rec)
        servers.append(server)
        client = create_client(endpoint=server.url, model_name="m", api_key="sk-batch-secret-123",
                               max_retries=2)
        return server, rec, client

    yield make
    for s in servers:
        s.close()


# -- the real server ----------------------------------------------------------------------------


def test_chat_batch_matches_single_calls_in_order(client):
    prompts = [f"Repeat the number {i}." for i in range(6)]
    singles = [client.run_chat_completions(m, max_tokens=6) for m in _msgs(prompts)]
    results = client.run_chat_completions_batch(_msgs(prompts), max_tokens=6, max_concurrent=3)
    assert isinstance(results, BatchResults) and isinstance(results, list)
    assert [str(r) for r in results] == [str(s) for s in singles]
    assert results.errors == [None] * 6
    stats = results.stats
    assert (stats.items, stats.succeeded, stats.failed, stats.requests) == (6, 6, 0, 6)
    assert stats.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert stats.completion_tokens == sum(s.usage.completion_tokens for s in singles)


def test_completions_batch_return_error_real_server(client):
    prompts = ["The capital of France is", "", "One, two, three,"]
    results, errors = client.run_completions_batch(prompts, max_tokens=4, return_error=True, max_concurrent=2)
    assert results[1] is None and errors[1]["type"] == "InvalidInputError" and errors[1]["field"] == "prompt"
    assert errors[0] is None and errors[2] is None
    assert results[0] == client.run_completions(prompts[0], max_tokens=4)
    assert results[2] == client.run_completions(prompts[2], max_tokens=4)
    assert results.stats.failed == 1 and results.stats.requests == 2
    # the name the original documentation used
    again = client.generate_batch_response(prompts[:1], max_tokens=4)
    assert again == [results[0]]


def test_async_twin_real_server(client):
    prompts = [f"Say {w}." for w in ("red", "green", "blue")]

    async def main():
        return await client.arun_chat_completions_batch(_msgs(prompts), max_tokens=5, max_concurrent=3)

    results = asyncio.run(main())
    singles = [client.run_chat_completions(m, max_tokens=5) for m in _msgs(prompts)]
    assert results == singles
    assert results.stats.completion_tokens > 0


# -- order, failures, retries ------------------------------------------------------------------


def test_order_kept_with_slow_items_and_one_failure(echo_server, caplog):
    def rule(content, count):
        if content == "p3":
            return Step(400, {"error": {"message": "bad item", "type": "invalid_request_error"}})
        if content in ("p0", "p5"):
            return Step(200, chat_body(content), delay=0.4)  # slow items finish last
        return None

    _server, rec, client = echo_server(rule)
    with caplog.at_level(logging.WARNING, logger="gen_ai"):
        results = client.run_chat_completions_batch(_msgs([f"p{i}" for i in range(10)]), max_concurrent=4)
    assert results[3] is None
    assert [results[i] for i in range(10) if i != 3] == [f"p{i}" for i in range(10) if i != 3]
    assert results.errors[3]["type"] == "BadRequestError" and results.errors[3]["status_code"] == 400
    assert sum(e is not None for e in results.errors) == 1
    assert results.stats.failed == 1 and results.stats.succeeded == 9
    assert "batch item 3 failed" in caplog.text
    # completion order differed from input order: p0 (slow) was sent among the first four and
    # p9 only after six others had finished, so p0 finished after p9 was sent. (Which of the
    # first four reached the server first is up to the scheduler.)
    assert rec.contents.index("p0") < 4 < rec.contents.index("p9")


def test_5xx_retried_then_success_and_permanent_failure(echo_server):
    def rule(content, count):
        if content == "flaky" and count <= 2:
            return Step(503, {"error": {"message": "overloaded"}}, headers={"Retry-After": "0.05"})
        if content == "broken":
            return Step(500, {"error": {"message": "boom"}}, headers={"Retry-After": "0.05"})
        return None

    _server, rec, client = echo_server(rule)
    results, errors = client.run_chat_completions_batch(_msgs(["a", "flaky", "broken", "b"]),
                                                        return_error=True, max_concurrent=2)
    assert results[:2] == ["a", "flaky"] and results[3] == "b"
    assert results[2] is None and errors[2]["type"] == "ServerError" and errors[2]["retryable"] is True
    assert rec.contents.count("flaky") == 3 and rec.contents.count("broken") == 3  # max_retries=2
    stats = results.stats
    assert stats.retries == 4 and stats.requests == 8 and stats.failed == 1


def test_timeout_of_one_slow_item_does_not_hold_the_batch(echo_server):
    def rule(content, count):
        return Step(200, chat_body(content), delay=3.0) if content == "stuck" else None

    _server, _rec, client = echo_server(rule)
    start = time.monotonic()
    results, errors = client.run_chat_completions_batch(_msgs(["x", "stuck", "y", "z"]), timeout=0.5,
                                                        return_error=True, max_concurrent=4)
    elapsed = time.monotonic() - start
    assert results[1] is None and errors[1]["type"] == "APITimeoutError"
    assert [results[0], results[2], results[3]] == ["x", "y", "z"]
    assert elapsed < 2.5  # the 3 s answer was not waited for


def test_429_storm_pauses_the_whole_batch(echo_server):
    first = threading.Event()

    def rule(content, count):
        if not first.is_set():
            first.set()
            return Step(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
        return Step(200, chat_body(content), delay=0.05)

    _server, rec, client = echo_server(rule)
    results = client.run_chat_completions_batch(_msgs([f"q{i}" for i in range(16)]), max_concurrent=4)
    assert results == [f"q{i}" for i in range(16)]
    t0 = rec.times[0]
    # The first 4 requests were already on the wire; every later one waited for the Retry-After,
    # although 3 workers were free long before that.
    later = rec.times[4:]
    assert len(later) == 13  # 12 other items + the retried one
    assert min(later) - t0 >= 0.95
    assert results.stats.rate_limited == 1 and results.stats.retries == 1
    assert results.stats.min_concurrency == 2  # halved once


def test_repeated_503_lower_concurrency_and_it_recovers(echo_server):
    storm_until = time.monotonic() + 0.6

    def rule(content, count):
        if time.monotonic() < storm_until:
            return Step(503, {"error": {"message": "busy"}}, headers={"Retry-After": "0.3"})
        return None

    _server, _rec, client = echo_server(rule)
    client.max_retries = 6
    results = client.run_chat_completions_batch(_msgs([f"r{i}" for i in range(40)]), max_concurrent=8)
    assert results == [f"r{i}" for i in range(40)]
    assert results.stats.min_concurrency < 8
    assert results.stats.retries >= 8


def test_requests_per_minute_spreads_requests(echo_server):
    _server, rec, client = echo_server()
    results = client.run_chat_completions_batch(_msgs([f"s{i}" for i in range(12)]), max_concurrent=12,
                                                requests_per_minute=300)  # 5/s, bursts of 5
    assert results == [f"s{i}" for i in range(12)]
    times = sorted(rec.times)
    assert times[-1] - times[0] >= (12 - 5) / 5 - 0.15
    # no one-second window holds more than the burst plus one second's worth (and one for rounding)
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 1.0) <= 5 + 5 + 1


def test_tokens_per_minute_limits_and_counts_usage(echo_server):
    _server, rec, client = echo_server()
    prompts = ["x" * 20 for _ in range(5)]  # estimate: 20/4 + max_tokens 5 = 10 tokens each
    start = time.monotonic()
    results = client.run_completions_batch(prompts, max_tokens=5, max_concurrent=5, tokens_per_minute=1200)
    assert results == prompts
    times = sorted(rec.times)
    # 20 tokens/s with a 20-token bucket: two at once, then about one every 0.35-0.5 s
    assert times[-1] - times[0] >= 0.9
    assert times[-1] - start < 5
    assert results.stats.total_tokens == 5 * 7  # the server's usage, summed


def test_sequential_mode_uses_the_sync_client(echo_server):
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()

    def rule(content, count):
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        time.sleep(0.02)
        with lock:
            in_flight["now"] -= 1

    _server, rec, client = echo_server(rule)
    results = client.run_chat_completions_batch(_msgs(["a", "b", "c"]), concurrent=False)
    assert results == ["a", "b", "c"] and rec.contents == ["a", "b", "c"]
    assert in_flight["max"] == 1
    assert results.stats.requests == 3


def test_sync_batch_called_inside_a_running_loop(echo_server):
    _server, _rec, client = echo_server()

    async def main():
        return client.run_chat_completions_batch(_msgs(["in", "loop"]))

    assert asyncio.run(main()) == ["in", "loop"]


def test_async_batch_on_the_clients_pool(echo_server):
    _server, _rec, client = echo_server(delay=0.2)

    async def main():
        start = time.monotonic()
        results = await client.arun_chat_completions_batch(_msgs([f"a{i}" for i in range(20)]),
                                                           max_concurrent=20)
        await client.aclose()
        return results, time.monotonic() - start

    results, elapsed = asyncio.run(main())
    assert results == [f"a{i}" for i in range(20)]
    assert elapsed < 2.0  # 20 x 0.2 s ran concurrently, not one after another


def test_progress_callback_and_bar(echo_server, capsys):
    def rule(content, count):
        if content == "p2":
            return Step(400, {"error": {"message": "no"}})
        return Step(200, chat_body(content), delay=0.05)

    _server, _rec, client = echo_server(rule)
    seen: list[BatchProgress] = []
    client.run_chat_completions_batch(_msgs([f"p{i}" for i in range(12)]), max_concurrent=2,
                                      progress=seen.append)
    assert len(seen) >= 2
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    last = seen[-1]
    assert last.finished and last.done == last.total == 12 and last.failed == 1
    assert last.rate > 0 and isinstance(last.stats, BatchStats)
    assert not any(p.finished for p in seen[:-1])

    client.run_chat_completions_batch(_msgs(["a", "b"]), progress=True)
    err = capsys.readouterr().err
    assert "\r[" in err and "2/2" in err and "errors 0" in err and err.endswith("\n")
    client.run_chat_completions_batch(_msgs(["a", "b"]))  # not a terminal: quiet
    assert capsys.readouterr().err == ""


def test_secret_never_in_error_dicts(echo_server):
    def rule(content, count):
        return Step(401, {"error": {"message": "Incorrect API key provided: sk-batch-secret-123"}})

    _server, _rec, client = echo_server(rule)
    results, errors = client.run_chat_completions_batch(_msgs(["a", "b"]), return_error=True)
    assert results == [None, None]
    assert all(e["type"] == "AuthenticationError" for e in errors)
    assert "sk-batch-secret-123" not in repr(errors) and "***" in errors[0]["message"]


def test_bad_arguments_raise_before_sending(echo_server):
    server, _rec, client = echo_server()
    for kwargs in ({"max_concurrent": 0}, {"requests_per_minute": -1}, {"tokens_per_minute": "x"},
                   {"max_tokens": 0}, {"progress": "yes"}):
        with pytest.raises(InvalidInputError):
            client.run_chat_completions_batch(_msgs(["a"]), **kwargs)
    with pytest.raises(InvalidInputError):
        client.run_completions_batch("not a list")
    assert server.requests == []
    assert client.run_chat_completions_batch([]) == []


def test_batch_relaxes_gc_only_while_running(fault_server):
    """The young-generation GC threshold is raised during a batch and restored afterwards."""
    import gc

    seen = []
    fault_server.default = Step(200, chat_body("ok"))
    client = create_client(endpoint=fault_server.url, model_name="m")
    before = gc.get_threshold()
    client.run_chat_completions_batch([[{"role": "user", "content": "x"}]] * 5, max_concurrent=2,
                                      progress=lambda p: seen.append(gc.get_threshold()[0]))
    assert gc.get_threshold() == before
    assert seen and seen[0] == 50_000


def test_batch_package_uses_only_the_clients_public_seam():
    """gen_ai.batch never imports gen_ai.client and never touches a client's private attributes."""
    import ast
    from pathlib import Path

    import gen_ai.batch

    pkg = Path(gen_ai.batch.__file__).parent
    for path in sorted(pkg.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("client", "gen_ai.client") and not (
                    node.level and node.module == "client"), f"{path.name} imports the client module"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "client":
                assert not node.attr.startswith("_"), f"{path.name}: client.{node.attr}"
