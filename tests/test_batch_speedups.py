"""The optional speed-ups of the batch paths (``gen_ai[fast]``: uvloop, orjson) and the file
batch's verbatim output lines, against real loopback servers: the fault server for exact bytes,
the real llama-cpp-python server for a real response. Each behaviour is checked with the speed-ups
on and off (``GEN_AI_SPEEDUPS=0``), and both ways give the same output."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import orjson  # noqa: E402
import pytest
import uvloop  # noqa: E402
from fault_server import FaultServer, Step, chat_body

from gen_ai import Hooks, _speedups, create_client

ROOT = Path(__file__).resolve().parents[1]


def write_input(path: Path, texts: list[str], url: str = "/v1/chat/completions") -> None:
    with open(path, "w") as f:
        for i, text in enumerate(texts):
            body = ({"messages": [{"role": "user", "content": text}], "max_tokens": 5}
                    if url != "/v1/completions" else {"prompt": text, "max_tokens": 5})
            f.write(json.dumps({"custom_id": f"id-{i}", "method": "POST", "url": url, "body": body}) + "\n")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


class LoopKind(Hooks):
    """Records the module of the event loop each batch request was sent from."""

    def __init__(self) -> None:
        self.loops: set[str] = set()

    def on_request(self, call, request) -> None:
        self.loops.add(type(asyncio.get_running_loop()).__module__)


@pytest.fixture(params=["on", "off"])
def speedups(request, monkeypatch):
    if request.param == "off":
        monkeypatch.setenv("GEN_AI_SPEEDUPS", "0")
    else:
        monkeypatch.delenv("GEN_AI_SPEEDUPS", raising=False)
    return request.param


def test_sync_batches_run_on_uvloop_only_when_allowed(speedups, tmp_path):
    server = FaultServer()
    server.default = Step(200, chat_body("hi"))
    hooks = LoopKind()
    try:
        client = create_client(endpoint=server.url, model_name="m", max_retries=0, hooks=[hooks], telemetry=False)
        results = client.run_chat_completions_batch([[{"role": "user", "content": "x"}]] * 3, progress=False)
        assert [str(r) for r in results] == ["hi"] * 3
        inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_input(inp, ["a", "b"])
        stats = client.run_batch_file(inp, out, progress=False)
        assert stats.succeeded == 2
        client.close()
    finally:
        server.close()
    assert hooks.loops == ({"uvloop"} if speedups == "on" else {"asyncio.unix_events"})


def test_a_callers_own_loop_is_never_replaced(tmp_path):
    """The async methods run on the caller's loop, whatever is installed."""
    server = FaultServer()
    server.default = Step(200, chat_body("hi"))
    hooks = LoopKind()

    async def main() -> None:
        client = create_client(endpoint=server.url, model_name="m", max_retries=0, hooks=[hooks], telemetry=False)
        await client.arun_chat_completions_batch([[{"role": "user", "content": "x"}]] * 2, progress=False)
        await client.aclose()

    try:
        asyncio.run(main())
    finally:
        server.close()
    assert hooks.loops == {"asyncio.unix_events"}


PRETTY = json.dumps({**chat_body("caf\u00e9 \u2615 \"quoted\"\nnew line"), "extra": {"nested": [1, 2.5, None]}},
                    indent=2, ensure_ascii=False).encode()


def test_verbatim_output_keeps_the_servers_json_on_one_line(speedups, tmp_path):
    """A pretty-printed, non-ASCII body goes into the output line unchanged in value, on one line."""
    server = FaultServer()
    server.default = Step(200, PRETTY, content_type="application/json; charset=utf-8")
    try:
        client = create_client(endpoint=server.url, model_name="m", max_retries=0, telemetry=False)
        assert client.codec.openai_response_body
        inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_input(inp, ["a", "b", "c"])
        client.run_batch_file(inp, out, progress=False)
        client.close()
    finally:
        server.close()
    raw = out.read_bytes()
    assert raw.count(b"\n") == 3  # one line per result: the body's newlines did not leak
    expected = json.loads(PRETTY)
    records = lines(out)
    assert sorted(r["custom_id"] for r in records) == ["id-0", "id-1", "id-2"]
    for rec in records:
        assert rec["response"]["status_code"] == 200 and rec["error"] is None
        assert rec["response"]["body"] == expected
        assert rec["id"].startswith("batch_req_") and rec["response"]["request_id"].startswith("req_")
        assert list(rec) == ["id", "custom_id", "response", "error"]


def test_responses_api_results_are_rebuilt_as_chat_completions(tmp_path):
    """The Responses codec's raw body is not a Chat Completions body: the line is rebuilt."""
    server = FaultServer()
    server.default = Step(200, {"id": "resp_1", "object": "response", "model": "m", "status": "completed",
                                "output": [{"type": "message", "role": "assistant",
                                            "content": [{"type": "output_text", "text": "hello"}]}],
                                "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}})
    try:
        client = create_client(endpoint=server.url, model_name="m", max_retries=0, api="responses", telemetry=False)
        assert not client.codec.openai_response_body
        inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_input(inp, ["a"])
        client.run_batch_file(inp, out, progress=False)
        client.close()
    finally:
        server.close()
    (rec,) = lines(out)
    body = rec["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "hello"


def test_json_codec_reads_what_json_reads():
    loads, dumps = _speedups.json_codec()
    assert loads is not json.loads  # orjson is installed here, so the fast pair is in use
    # What orjson refuses but json accepts still reads the same.
    assert math.isnan(loads(b'{"t": NaN}')["t"])
    for big in (123456789012345678901234567890, 2**64, -(2**63) - 1, 2**63 - 1):
        assert loads(b'{"big": %d}' % big)["big"] == big  # orjson alone would make most of these floats
    assert loads(b"1e400") == math.inf and loads(b'"\\ud800"') == "\ud800"
    assert loads(b'{"id": "x", "n": [1, 2.5, -0.0]}') == json.loads(b'{"id": "x", "n": [1, 2.5, -0.0]}')
    with pytest.raises(ValueError, match="Expecting"):  # json's own message for a bad line
        loads(b'{"a": ')
    value = {"text": "caf\u00e9", "n": [1, 2.5], "big": 2**70}
    assert json.loads(dumps(value)) == value
    assert dumps({"a": "\u00e9"}) == '{"a":"\u00e9"}'.encode()
    assert orjson.dumps({"a": 1}) == dumps({"a": 1})


def test_json_codec_off(monkeypatch):
    monkeypatch.setenv("GEN_AI_SPEEDUPS", "0")
    loads, dumps = _speedups.json_codec()
    assert loads is json.loads
    assert dumps({"a": "\u00e9", "b": [1]}) == '{"a":"\u00e9","b":[1]}'.encode()
    assert _speedups.loop_factory() is None
    monkeypatch.delenv("GEN_AI_SPEEDUPS")
    assert _speedups.loop_factory() is uvloop.new_event_loop


def test_bad_input_line_names_the_line_with_speedups(tmp_path):
    from gen_ai.batch import BatchInputError, validate_input_file

    inp = tmp_path / "in.jsonl"
    inp.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
                   '"body": {"messages": [{"role": "user", "content": "x"}]}}\n{"custom_id": \n')
    with pytest.raises(BatchInputError) as info:
        validate_input_file(inp)
    assert info.value.problems[0][0] == 2 and "invalid JSON" in info.value.problems[0][1]


@pytest.mark.server
def test_cli_batch_same_output_with_and_without_speedups(llama_server, tmp_path):
    """``gen-ai batch`` against the real llama-cpp-python server, speed-ups on and off: every
    line succeeds both times and the bodies are the server's Chat Completions responses."""
    inp = tmp_path / "in.jsonl"
    write_input(inp, ["Say hi.", "Say bye."])
    outputs = {}
    for mode in ("1", "0"):
        out = tmp_path / f"out-{mode}.jsonl"
        env = {**os.environ, "GEN_AI_SPEEDUPS": mode}
        proc = subprocess.run([sys.executable, "-m", "gen_ai", "batch", str(inp), str(out), "--endpoint",
                               llama_server, "--model", "smollm2", "--json"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout.splitlines()[-1])["succeeded"] == 2
        outputs[mode] = lines(out)
    for records in outputs.values():
        assert sorted(r["custom_id"] for r in records) == ["id-0", "id-1"]
        for rec in records:
            body = rec["response"]["body"]
            assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"].strip()
