"""Deterministic per-call cost of gen_ai vs the raw libraries: CPU instructions (callgrind) and
Python function calls (sys.setprofile), per call / per streamed delta.

    python3 benchmarks/instructions.py                       # all metrics, gen_ai and raw
    python3 benchmarks/instructions.py --only seq,async      # some metrics
    python3 benchmarks/instructions.py --no-valgrind         # Python call counts only (fast)

Wall-clock benchmarks are noisy on a shared machine; these counts are not (to within ~0.5%).
It starts the same nginx stub as run.py (on --port, default 18189), then for each metric and
library runs a fresh process under `valgrind --tool=callgrind` twice, with N1 and N2 calls after
the same warm-up, and reports (I(N2) - I(N1)) / (N2 - N1): the instructions of one call, start-up
and imports cancelled out. The Python call count is measured in-process (one run, N calls after
warm-up, every `call` and `c_call` profile event counted).

Metrics: seq (sync chat call vs http.client POST + json.loads), async (concurrency --concurrency,
default 64, vs aiohttp), stream (per text delta of the 2,000-chunk stream vs http.client + line
split + json.loads), batch (run_chat_completions_batch per request vs the aiohttp async row),
batch_file (run_batch_file per line: read, send, parse, write the output line; same raw row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _metric  # noqa: E402

# (N1, N2) units: calls (seq, async, batch) or streams (stream: 2,000 deltas each)
SIZES = {"seq": (100, 600), "async": (256, 1280), "stream": (1, 3), "batch": (256, 1280),
         "batch_file": (256, 1280)}
RAW = {"seq": "raw_httpclient", "async": "raw_aiohttp", "stream": "raw_httpclient", "batch": "raw_aiohttp",
       "batch_file": "raw_aiohttp"}
DELTAS_PER_STREAM = 2000


def _count_calls() -> tuple[Any, Any]:
    counter = [0]

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            counter[0] += 1

    return counter, prof


def inner(metric: str, lib: str, base: str, n: int, concurrency: int, count: bool) -> None:
    """One measured process: warm up, then n units. With count, print the profile-event count."""
    counter, prof = _count_calls()
    if metric == "seq":
        call, close = _metric.make_sync_call(lib, base)
        for _ in range(50):
            call()
        if count:
            sys.setprofile(prof)
        for _ in range(n):
            call()
        sys.setprofile(None)
        close()
    elif metric == "stream":
        start = _metric._stream_iter(lib, base)
        for _ in start():
            pass
        if count:
            sys.setprofile(prof)
        for _ in range(n):
            for _ in start():
                pass
        sys.setprofile(None)
    elif metric == "batch_file":
        import tempfile

        from gen_ai import create_client

        client = create_client("openai", api_key=_metric.API_KEY, endpoint=base, model_name=_metric.MODEL)
        tmp = tempfile.mkdtemp(prefix="gen_ai_instr_")
        body = {"model": _metric.MODEL, "messages": _metric.MESSAGES, "max_tokens": _metric.MAX_TOKENS}

        def write_input(path: str, count: int) -> str:
            with open(path, "w") as f:
                for i in range(count):
                    f.write(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": body}) + "\n")
            return path

        warm = write_input(os.path.join(tmp, "warm.jsonl"), 64)
        inp = write_input(os.path.join(tmp, "in.jsonl"), n)
        client.run_batch_file(warm, os.path.join(tmp, "warm.out"), max_concurrent=concurrency, progress=False)
        if count:
            sys.setprofile(prof)
        client.run_batch_file(inp, os.path.join(tmp, "out.jsonl"), max_concurrent=concurrency, progress=False)
        sys.setprofile(None)
        client.close()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    elif metric in ("async", "batch"):
        async def main() -> None:
            if metric == "batch" and lib == "gen_ai":
                from gen_ai import create_client

                client = create_client("openai", api_key=_metric.API_KEY, endpoint=base, model_name=_metric.MODEL)
                kw = _metric._supported(client.run_chat_completions_batch, max_tokens=_metric.MAX_TOKENS,
                                        max_concurrent=concurrency, progress=False, return_error=True)
                await client.arun_chat_completions_batch([_metric.MESSAGES] * 64, **kw)
                if count:
                    sys.setprofile(prof)
                await client.arun_chat_completions_batch([_metric.MESSAGES] * n, **kw)
                sys.setprofile(None)
                await client.aclose()
                return
            call, close = await _metric._make_async_call(lib, base, concurrency)
            await asyncio.gather(*(call() for _ in range(concurrency)))
            remaining = n

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await call()

            if count:
                sys.setprofile(prof)
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            sys.setprofile(None)
            if close is not None:
                await close()

        asyncio.run(main())
    if count:
        print(json.dumps({"calls": counter[0]}))


def _run(args: list[str], valgrind: bool) -> str:
    cmd = [sys.executable, os.path.abspath(__file__), "--inner", *args]
    if valgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd]
    # A fixed hash seed: dict and set layouts (and so the instruction counts) repeat run to run.
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return proc.stdout + proc.stderr


def instructions(metric: str, lib: str, base: str, concurrency: int) -> float:
    n1, n2 = SIZES[metric]
    got = []
    for n in (n1, n2):
        out = _run([metric, lib, base, str(n), str(concurrency)], valgrind=True)
        m = re.search(r"Collected : (\d+)", out)
        if not m:
            raise SystemExit(out[-2000:])
        got.append(int(m.group(1)))
    units = (n2 - n1) * (DELTAS_PER_STREAM if metric == "stream" else 1)
    return (got[1] - got[0]) / units


def py_calls(metric: str, lib: str, base: str, concurrency: int) -> float:
    n = SIZES[metric][1]
    out = _run([metric, lib, base, str(n), str(concurrency), "--count"], valgrind=False)
    calls = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])["calls"]
    return calls / (n * (DELTAS_PER_STREAM if metric == "stream" else 1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        metric, lib, base, n, conc = sys.argv[2:7]
        inner(metric, lib, base, int(n), int(conc), "--count" in sys.argv[7:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="seq,async,stream,batch")
    ap.add_argument("--libs", default="gen_ai,raw")
    ap.add_argument("--port", type=int, default=18189)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--no-valgrind", action="store_true")
    a = ap.parse_args()
    import run  # the nginx stub of the wall-clock benchmarks

    run.write_stub_files()
    stub = run.Stub(run.ensure_nginx(), a.port, pin=False)
    try:
        root = f"http://127.0.0.1:{a.port}"
        for metric in a.only.split(","):
            base = root + ("/stream/v1" if metric == "stream" else "/v1")
            row: dict[str, Any] = {"metric": metric}
            for lib in a.libs.split(","):
                name = RAW[metric] if lib == "raw" else lib
                if metric in ("batch", "batch_file") and name == "raw_aiohttp":
                    name_metric = "async"
                else:
                    name_metric = metric
                row[f"{name} py_calls"] = round(py_calls(name_metric, name, base, a.concurrency), 1)
                if not a.no_valgrind:
                    row[f"{name} instr"] = round(instructions(name_metric, name, base, a.concurrency))
            g = row.get("gen_ai instr")
            r = row.get(f"{RAW[metric]} instr")
            if g and r:
                row["raw/gen_ai instr"] = round(r / g, 3)
            print(json.dumps(row), flush=True)
    finally:
        stub.stop()


if __name__ == "__main__":
    main()
