"""Several endpoints behind one client (gen_ai/replicas.py): least outstanding requests, a
failing replica cooled down and its requests retried elsewhere, learned facts per replica.

Loopback fault servers for what a real server does not do on demand (refusing connections on
purpose, 503s, a replica that rejects base64 embeddings), two real llama.cpp servers with one
stopped in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from fault_server import FaultServer, Step, chat_body
from servers import start_xllamacpp

from gen_ai import create_client
from gen_ai.errors import ConfigurationError


def closed_port_url() -> str:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class Counting:
    """Echo the prompt; count requests and the most in flight at once."""

    def __init__(self, delay: float = 0.0, status: int = 200):
        self.delay, self.status = delay, status
        self.count = self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, rec):
        with self.lock:
            self.count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if self.status != 200:
                return Step(self.status, {"error": {"message": "overloaded"}})
            return Step(200, chat_body(rec.json()["messages"][-1]["content"]))
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def two():
    handlers = [Counting(delay=0.05), Counting(delay=0.05)]
    servers = [FaultServer(default=h) for h in handlers]
    yield servers, handlers
    for s in servers:
        s.close()


def msgs(n):
    return [[{"role": "user", "content": f"q{i}"}] for i in range(n)]


def test_least_outstanding_spreads_a_batch(two):
    servers, handlers = two
    client = create_client(endpoint=[s.url for s in servers], model_name="m")
    results = client.run_chat_completions_batch(msgs(40), max_concurrent=8, max_tokens=4)
    assert list(results) == [f"q{i}" for i in range(40)]
    assert handlers[0].count + handlers[1].count == 40
    assert 14 <= handlers[0].count <= 26 and handlers[0].max_in_flight <= 5 and handlers[1].max_in_flight <= 5
    per = results.stats.replicas
    assert per == {servers[0].url: {"requests": handlers[0].count, "errors": 0},
                   servers[1].url: {"requests": handlers[1].count, "errors": 0}}
    assert results.stats.to_dict()["replicas"] == per
    # single calls, sync and async, alternate between idle replicas
    before = [h.count for h in handlers]
    for _ in range(4):
        client.run_chat_completions([{"role": "user", "content": "x"}])

    async def main():
        out = await asyncio.gather(*(client.arun_chat_completions([{"role": "user", "content": "y"}])
                                     for _ in range(4)))
        await client.aclose()
        return out

    assert asyncio.run(main()) == ["y"] * 4
    assert [h.count - b for h, b in zip(handlers, before)] == [4, 4]


def test_a_replica_refusing_connections_is_cooled_down_and_requests_retried(two):
    servers, handlers = two
    dead = closed_port_url()
    client = create_client(endpoint=[dead, servers[0].url], model_name="m", max_retries=2, replica_cooldown=60)
    results = client.run_chat_completions_batch(msgs(20), max_concurrent=4, max_tokens=4)
    assert list(results) == [f"q{i}" for i in range(20)] and results.errors == [None] * 20
    stats = client.codec.replica_stats()
    # the first requests sent there failed (each retried on the live one); then it was left alone
    assert 1 <= stats[dead]["errors"] == stats[dead]["requests"] <= 4 and stats[dead]["down"]
    assert handlers[0].count == 20
    assert results.stats.retries == stats[dead]["errors"]  # each failure cost one retry of the budget
    assert results.stats.replicas[dead]["errors"] == stats[dead]["errors"]


def test_5xx_replica_is_taken_out_and_retries_count_in_the_budget(two):
    servers, handlers = two
    handlers[0].status = 503
    client = create_client(endpoint=[s.url for s in servers], model_name="m", max_retries=1, replica_cooldown=60)
    assert client.run_chat_completions([{"role": "user", "content": "a"}]) == "a"
    assert client.run_chat_completions([{"role": "user", "content": "b"}]) == "b"
    assert (handlers[0].count, handlers[1].count) == (1, 2)  # 503 once, then cooled down
    # no budget left: max_retries=0 and every replica failing -> the error, after one request each
    handlers[1].status = 503
    broken = create_client(endpoint=[s.url for s in servers], model_name="m", max_retries=0)
    none, error = broken.run_chat_completions([{"role": "user", "content": "c"}], return_error=True)
    assert none is None and error["type"] == "ServerError" and error["status_code"] == 503


def test_learned_facts_are_per_replica():
    """One replica rejects base64 embeddings: it alone is asked for floats from then on."""
    import array
    import base64

    def embedder(reject):
        def rule(rec):
            body = rec.json()
            if reject and body.get("encoding_format") == "base64":
                return Step(400, {"error": {"message": "unsupported encoding_format base64"}})
            data = []
            for i, text in enumerate(body["input"]):
                vec = [float(len(text))]
                emb = (base64.b64encode(array.array("f", vec).tobytes()).decode()
                       if body.get("encoding_format") == "base64" else vec)
                data.append({"object": "embedding", "index": i, "embedding": emb})
            return Step(200, {"object": "list", "data": data, "model": "e", "usage": {"prompt_tokens": 1,
                                                                                     "total_tokens": 1}})
        return rule

    old, new = FaultServer(default=embedder(True)), FaultServer(default=embedder(False))
    try:
        client = create_client(endpoint=[old.url, new.url], model_name="e")
        for _ in range(3):
            assert client.run_embeddings(["abc", "de"], batch_size=1, max_concurrent=2) == [[3.0], [2.0]]
        old_formats = [r.json().get("encoding_format") for r in old.requests]
        new_formats = [r.json().get("encoding_format") for r in new.requests]
        assert old_formats[0] == "base64" and set(old_formats[1:]) == {None}  # learned once, on that replica
        assert set(new_formats) == {"base64"}
        states = [r.state for r in client.codec.replicas]
        assert states[0].embedding_base64 is False and states[1].embedding_base64 is True
        assert client.server_state.embedding_base64 is True
    finally:
        old.close()
        new.close()


def test_configuration_errors():
    with pytest.raises(ConfigurationError):
        create_client(endpoint=[], model_name="m")
    with pytest.raises(ConfigurationError):
        create_client(endpoint="http://127.0.0.1:9/v1", model_name="m", replica_cooldown=3)
    with pytest.raises(ConfigurationError):
        create_client(endpoint=["http://127.0.0.1:9/v1", "ftp://x"], model_name="m")
    with pytest.raises(ConfigurationError):
        create_client(provider="local", endpoint=["a", "b"])


def test_secrets_of_every_replica_are_scrubbed(two):
    servers, _ = two
    servers[0].default = Step(401, {"error": {"message": "bad key sk-replica-secret-0000"}})
    servers[1].default = Step(401, {"error": {"message": "bad key sk-replica-secret-0000"}})
    client = create_client(endpoint=[s.url for s in servers], model_name="m", api_key="sk-replica-secret-0000")
    none, error = client.run_chat_completions([{"role": "user", "content": "x"}], return_error=True)
    assert "sk-replica-secret-0000" not in repr(error) and "sk-replica" not in repr(client)


# -- two real llama.cpp servers, one stopped mid-batch --------------------------------------------


def test_two_llama_cpp_replicas_one_stopped_mid_batch(tmp_path):
    a = start_xllamacpp(tmp_path / "a", slots=2)
    b = start_xllamacpp(tmp_path / "b", slots=2)
    try:
        client = create_client(endpoint=[a.url, b.url], model_name=a.model, max_retries=3, replica_cooldown=60)
        prompts = [f"Say the number {i}." for i in range(24)]
        stopped = threading.Event()

        def progress(p):
            if p.done >= 6 and not stopped.is_set():
                stopped.set()
                threading.Thread(target=b.stop).start()  # killed while requests are in flight there

        results = client.run_chat_completions_batch([[{"role": "user", "content": q}] for q in prompts],
                                                    max_tokens=4, max_concurrent=4, progress=progress)
        assert stopped.is_set()
        assert results.errors == [None] * 24 and all(isinstance(r, str) for r in results)
        assert results.stats.succeeded == 24 and results.stats.failed == 0
        per = results.stats.replicas
        assert per[b.url]["requests"] >= 1 and per[b.url]["errors"] >= 1  # b was used, then failed
        assert per[a.url]["requests"] + per[b.url]["requests"] == results.stats.requests
        # every answer is the one a's server gives for that prompt alone (temperature 0)
        only_a = create_client(endpoint=a.url, model_name=a.model)
        for prompt, answer in zip(prompts[:6], results[:6]):
            assert answer == only_a.run_chat_completions([{"role": "user", "content": prompt}], max_tokens=4)
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("second", ["--replica", "--endpoint"])
def test_gen_ai_batch_with_replicas_reports_per_replica_counts_as_json(two, tmp_path, second):
    """``--endpoint A --replica B`` and ``--endpoint A --endpoint B`` are the same two replicas."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    servers, handlers = two
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                       "body": {"messages": [{"role": "user", "content": f"c{i}"}]}}) + "\n"
                           for i in range(30)))
    proc = subprocess.run([sys.executable, "-m", "gen_ai", "batch", str(inp), str(out), "--endpoint", servers[0].url,
                           second, servers[1].url, "--model", "m", "-c", "6", "--no-progress", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["succeeded"] == 30
    assert stats["replicas"] == {servers[0].url: {"requests": handlers[0].count, "errors": 0},
                                 servers[1].url: {"requests": handlers[1].count, "errors": 0}}
    assert handlers[0].count > 0 and handlers[1].count > 0
    assert f"{servers[1].url}: {handlers[1].count} requests, 0 errors" in proc.stderr
