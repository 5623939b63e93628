#!/usr/bin/env python3
"""gen_ai side by side with openai, litellm, aisuite, any-llm and the raw HTTP limits.

    python3 benchmarks/run.py            # full run (about 10 minutes), writes benchmarks/results.md
    python3 benchmarks/run.py --quick    # fewer calls and runs (about 2 minutes)
    python3 benchmarks/run.py --only seq,async --libs gen_ai,raw_aiohttp

Sets itself up from scratch: installs nginx with apt-get if missing, makes one venv per library
under benchmarks/.work/ (gen_ai from this repo, plus aiohttp/httpx for the raw limits), writes the
nginx config and the stub's stream files, starts nginx pinned to core 0, runs every measurement as
a fresh process pinned to core 1 (see _metric.py), and stops nginx however the run ends.
Standard library only, so any Python 3.10+ can run it.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".work")
PYTHON = sys.executable

# venv name -> pip requirements. The peers never share a venv (their pins differ).
VENVS: dict[str, list[str]] = {
    # compat mode puts the repo on sys.path with a plain .pth line: the default editable finder
    # would import pathlib & co. at every start-up and skew the import timings.
    "genai": ["--config-settings", "editable_mode=compat", "-e", REPO, "aiohttp", "httpx"],
    "genai-otel": ["--config-settings", "editable_mode=compat", "-e", REPO, "aiohttp", "opentelemetry-sdk"],
    # gen_ai[fast]: uvloop + orjson where gen_ai owns the loop (the plain genai venv has neither)
    "genai-fast": ["--config-settings", "editable_mode=compat", "-e", REPO, "aiohttp", "uvloop", "orjson"],
    "openai": ["openai"],
    "litellm": ["litellm"],
    "aisuite": ["aisuite[openai]"],
    "anyllm": ["any-llm-sdk[openai]"],
}
LIB_VENV = {"gen_ai": "genai", "raw_httpclient": "genai", "raw_httpx": "genai", "raw_aiohttp": "genai",
            "openai": "openai", "litellm": "litellm", "aisuite": "aisuite", "anyllm": "anyllm",
            "gen_ai_otel_idle": "genai-otel", "gen_ai_otel_memory": "genai-otel",
            "gen_ai_float": "genai", "raw_aiohttp_b64": "genai", "gen_ai_2_replicas": "genai",
            "gen_ai_fast": "genai-fast", "raw_aiohttp_uvloop": "genai-fast"}
LIB_LABEL = {"gen_ai": "gen_ai", "openai": "openai SDK", "litellm": "litellm", "aisuite": "aisuite",
             "anyllm": "any-llm", "raw_httpclient": "raw http.client", "raw_httpx": "raw httpx",
             "raw_aiohttp": "raw aiohttp", "gen_ai_otel_idle": "gen_ai + OTel SDK, no provider",
             "gen_ai_otel_memory": "gen_ai + OTel, in-memory exporter",
             "gen_ai_float": "gen_ai, JSON floats", "raw_aiohttp_b64": "raw aiohttp, base64",
             "gen_ai_2_replicas": "gen_ai, 2 replicas", "gen_ai_fast": "gen_ai[fast] (uvloop, orjson)",
             "raw_aiohttp_uvloop": "raw aiohttp on uvloop"}
IMPORTS = {"gen_ai": "import gen_ai", "openai": "import openai", "litellm": "import litellm",
           "aisuite": "import aisuite", "anyllm": "import any_llm"}

# Import + create the client + one call, as one whole process.
FIRSTCALL = {
    "gen_ai": "from gen_ai import create_client\n"
              "c = create_client('openai', api_key='sk-x', endpoint=B, model_name='bench')\n"
              "assert c.run_chat_completions([{'role': 'user', 'content': 'Say hello.'}], max_tokens=16)",
    "openai": "from openai import OpenAI\n"
              "c = OpenAI(api_key='sk-x', base_url=B)\n"
              "assert c.chat.completions.create(model='bench', messages=[{'role': 'user', 'content': 'Say hello.'}],"
              " max_tokens=16).choices[0].message.content",
    "litellm": "import litellm\n"
               "assert litellm.completion(model='openai/bench', api_base=B, api_key='sk-x', max_tokens=16,"
               " messages=[{'role': 'user', 'content': 'Say hello.'}]).choices[0].message.content",
    "aisuite": "import aisuite\n"
               "c = aisuite.Client({'openai': {'api_key': 'sk-x', 'base_url': B}})\n"
               "assert c.chat.completions.create(model='openai:bench', max_tokens=16,"
               " messages=[{'role': 'user', 'content': 'Say hello.'}]).choices[0].message.content",
    "anyllm": "from any_llm import AnyLLM\n"
              "c = AnyLLM.create('openai', api_key='sk-x', api_base=B)\n"
              "assert c.completion(model='bench', max_tokens=16,"
              " messages=[{'role': 'user', 'content': 'Say hello.'}]).choices[0].message.content",
}

STREAM_CHUNKS = 2000
EMBED_BATCH = 16  # texts per embeddings request (the stub's answer always holds this many)
EMBED_DIMS = 64
CHAT_JSON = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?",
                                         "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 9, "total_tokens": 20},
}
TEXT_JSON = {
    "id": "cmpl-bench", "object": "text_completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "text": " Hello! How can I help you today?", "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13},
}

# (full, quick) settings per metric; per-library call counts where a library is too slow for
# the full count (said in the table).
PLAN = {
    "import": {"runs": (9, 3)},
    "firstcall": {"runs": (7, 3)},
    "seq": {"runs": (3, 2), "calls": (2000, 400)},
    "async": {"runs": (3, 2), "calls": (20000, 4000), "concurrency": 256,
              "calls_for": {"openai": (5000, 1000), "anyllm": (5000, 1000), "raw_httpx": (2000, 500),
                            "litellm": (2000, 500), "gen_ai_otel_memory": (5000, 1000)}},
    "stream": {"runs": (3, 2), "streams": (5, 2), "streams_for": {"litellm": (2, 1), "anyllm": (3, 1)}},
    "tools": {"runs": (3, 2), "streams": (5, 2)},
    "batch": {"runs": (3, 2), "calls": (20000, 4000), "concurrency": 256},
    "batch_file": {"runs": (3, 2), "calls": (20000, 4000), "concurrency": 256},
    # requests of EMBED_BATCH texts; the value is texts per second
    "embeddings": {"runs": (3, 2), "calls": (5000, 1000), "concurrency": 64},
    "replicas": {"runs": (3, 2), "calls": (20000, 4000), "concurrency": 256},
}
METRIC_LIBS = {
    "import": ["gen_ai", "openai", "litellm", "aisuite", "anyllm"],
    "firstcall": ["gen_ai", "openai", "litellm", "aisuite", "anyllm"],
    "seq": ["gen_ai", "raw_httpclient", "raw_httpx", "openai", "litellm", "aisuite", "anyllm",
            "gen_ai_otel_idle", "gen_ai_otel_memory"],
    "async": ["gen_ai", "raw_aiohttp", "raw_httpx", "openai", "litellm", "anyllm",
              "gen_ai_otel_idle", "gen_ai_otel_memory", "raw_aiohttp_uvloop"],
    "stream": ["gen_ai", "raw_httpclient", "openai", "litellm", "anyllm"],
    "tools": ["gen_ai", "raw_httpclient", "openai"],
    "batch": ["gen_ai", "gen_ai_fast"],
    "batch_file": ["gen_ai", "gen_ai_fast"],
    "embeddings": ["gen_ai", "gen_ai_float", "openai", "raw_aiohttp", "raw_aiohttp_b64"],
    "replicas": ["gen_ai", "gen_ai_2_replicas"],
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Setup
# ------------------------------------------------------------------------------------------


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def ensure_nginx() -> str:
    nginx = find_nginx()
    if nginx:
        return nginx
    log("nginx not found: apt-get install nginx")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    # policy-rc.d exit 101 keeps the package from starting the system nginx on port 80.
    policy = "/usr/sbin/policy-rc.d"
    made_policy = not os.path.exists(policy)
    if made_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True, env=env)
    finally:
        if made_policy:
            os.unlink(policy)
    nginx = find_nginx()
    if not nginx:
        raise SystemExit("nginx is still missing after apt-get install nginx")
    return nginx


def venv_python(name: str) -> str:
    return os.path.join(WORK, f"venv-{name}", "bin", "python")


def ensure_venvs(names: set[str]) -> None:
    procs = []
    for name in sorted(names):
        path = os.path.join(WORK, f"venv-{name}")
        marker = os.path.join(path, ".bench-installed")
        want = json.dumps(VENVS[name])
        if os.path.exists(marker) and open(marker).read() == want and os.path.exists(venv_python(name)):
            continue
        log(f"creating venv {name}: pip install {' '.join(VENVS[name])}")
        subprocess.run([PYTHON, "-m", "venv", path], check=True)
        logf = open(os.path.join(WORK, f"pip-{name}.log"), "w")
        proc = subprocess.Popen([venv_python(name), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                 *VENVS[name]], stdout=logf, stderr=subprocess.STDOUT)
        procs.append((name, proc, marker, want))
    for name, proc, marker, want in procs:
        if proc.wait() != 0:
            raise SystemExit(f"pip install for venv {name} failed: see {WORK}/pip-{name}.log")
        with open(marker, "w") as f:
            f.write(want)


def write_stub_files() -> None:
    stub = os.path.join(WORK, "stub")
    os.makedirs(stub, exist_ok=True)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(WORK, "nginx-tmp", d), exist_ok=True)

    def sse(obj: Any) -> str:
        return "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"

    words = ["Hello", " there", ",", " this", " is", " a", " benchmark", " token", " stream", "."]
    for kind, name in (("chat", "chat_stream.sse"), ("text", "text_stream.sse")):
        parts = []
        for i in range(STREAM_CHUNKS):
            if kind == "chat":
                delta: dict[str, Any] = {"content": words[i % len(words)]}
                if i == 0:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
                obj = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                       "model": "bench", "system_fingerprint": "fp_bench", "choices": [choice]}
            else:
                choice = {"index": 0, "text": words[i % len(words)], "logprobs": None, "finish_reason": None}
                obj = {"id": "cmpl-bench", "object": "text_completion", "created": 1700000000,
                       "model": "bench", "choices": [choice]}
            parts.append(sse(obj))
        last = dict(obj)
        if kind == "chat":
            last["choices"] = [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
        else:
            last["choices"] = [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]
        parts.append(sse(last))
        usage = dict(last, choices=[], usage={"prompt_tokens": 11, "completion_tokens": STREAM_CHUNKS,
                                               "total_tokens": 11 + STREAM_CHUNKS})
        parts.append(sse(usage))
        parts.append("data: [DONE]\n\n")
        with open(os.path.join(stub, name), "w") as f:
            f.write("".join(parts))
    write_tool_stream(stub)
    for as_base64, name in ((False, "embeddings.json"), (True, "embeddings_b64.json")):
        with open(os.path.join(stub, name), "w") as f:
            f.write(json.dumps(_embed_body(as_base64), separators=(",", ":")))


def write_tool_stream(stub: str) -> None:
    """``tool_stream.sse``: one tool call whose JSON arguments arrive in STREAM_CHUNKS fragments.
    Only the first fragment carries the call's id and name, as OpenAI and vLLM send them."""
    def sse(obj: Any) -> str:
        return "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"

    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "bench",
            "system_fingerprint": "fp_bench"}
    pieces = ['{"items": ['] + [f'"item {i}", ' for i in range(STREAM_CHUNKS - 2)] + ['"last"]}']
    parts = []
    for i, piece in enumerate(pieces):
        call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
        if i == 0:
            call = {"index": 0, "id": "call_bench", "type": "function",
                    "function": {"name": "record", "arguments": piece}}
        delta: dict[str, Any] = {"tool_calls": [call]}
        if i == 0:
            delta = {"role": "assistant", "content": None, **delta}
        parts.append(sse({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}))
    parts.append(sse({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]}))
    parts.append(sse({**head, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": STREAM_CHUNKS,
                                                       "total_tokens": 11 + STREAM_CHUNKS}}))
    parts.append("data: [DONE]\n\n")
    with open(os.path.join(stub, "tool_stream.sse"), "w") as f:
        f.write("".join(parts))


def _embed_body(as_base64: bool) -> dict[str, Any]:
    import array
    import base64
    import random

    rng = random.Random(7)
    data = []
    for i in range(EMBED_BATCH):
        vec = array.array("f", [rng.uniform(-0.2, 0.2) for _ in range(EMBED_DIMS)])
        emb: Any = base64.b64encode(vec.tobytes()).decode() if as_base64 else [float(f"{v:.8g}") for v in vec]
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": "bench",
            "usage": {"prompt_tokens": 4 * EMBED_BATCH, "total_tokens": 4 * EMBED_BATCH}}


def write_nginx_conf(port: int) -> str:
    with open(os.path.join(HERE, "nginx.conf.template")) as f:
        conf = f.read()
    for key, value in (("@PORT@", str(port)), ("@PORT2@", str(port + 1)), ("@WORK@", WORK),

                       ("@CHAT_JSON@", json.dumps(CHAT_JSON, separators=(",", ":"))),
                       ("@TEXT_JSON@", json.dumps(TEXT_JSON, separators=(",", ":")))):
        conf = conf.replace(key, value)
    path = os.path.join(WORK, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


class Stub:
    """nginx, one process (master_process off), pinned to core 0."""

    def __init__(self, nginx: str, port: int, pin: bool) -> None:
        conf = write_nginx_conf(port)
        cmd = [nginx, "-p", WORK, "-c", conf]
        if pin:
            cmd = ["taskset", "-c", "0", *cmd]
        self.port = port
        self.proc = subprocess.Popen(cmd, stderr=open(os.path.join(WORK, "nginx-stderr.log"), "w"))
        atexit.register(self.stop)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"nginx exited at start: see {WORK}/nginx-stderr.log and nginx-error.log")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("nginx did not start listening within 10 s")
                time.sleep(0.05)
        self.pid = self._server_pid()
        self._check()

    def _server_pid(self) -> int:
        # With taskset in front, Popen's pid is taskset's, which execs nginx: same pid.
        return self.proc.pid

    def _check(self) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        for path, check in (("/v1/chat/completions", lambda b: json.loads(b)["object"] == "chat.completion"),
                            ("/v1/completions", lambda b: json.loads(b)["object"] == "text_completion"),
                            ("/stream/v1/chat/completions", lambda b: b.count(b"\n\ndata: ") == STREAM_CHUNKS + 2),
                            ("/tools/v1/chat/completions", lambda b: b.count(b"\n\ndata: ") == STREAM_CHUNKS + 2)):
            conn.request("POST", path, body=b'{"model":"bench"}', headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or not check(body):
                raise SystemExit(f"the stub answered POST {path} wrongly: {resp.status} {body[:200]!r}")
        conn.close()

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, stub: Stub, pin: bool) -> None:
        self.stub = stub
        self.pin = pin
        self.base = f"http://127.0.0.1:{stub.port}/v1"
        self.stream_base = f"http://127.0.0.1:{stub.port}/stream/v1"

    def _cmd(self, lib: str, args: list[str]) -> list[str]:
        cmd = [venv_python(LIB_VENV[lib]), *args]
        return ["taskset", "-c", "1", *cmd] if self.pin else cmd

    def wall(self, lib: str, args: list[str]) -> float:
        """Wall time of a whole fresh process."""
        cmd = self._cmd(lib, args)
        # Bytecode caching on, as for any installed package: PYTHONDONTWRITEBYTECODE disables it
        # when set to anything, "0" included (the earlier runs set "0", so gen_ai, the one
        # library not installed by pip with its .pyc files, was compiled in every timed import).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=WORK)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode(errors="replace")[-2000:])
        return elapsed

    def metric(self, metric: str, lib: str, opts: dict[str, Any]) -> dict[str, Any]:
        base = (self.stream_base if metric == "stream" else
                f"http://127.0.0.1:{self.stub.port}/tools/v1" if metric == "tools" else self.base)
        cmd = self._cmd(lib, [os.path.join(HERE, "_metric.py"), metric, lib, base, json.dumps(opts)])
        cpu0, t0 = self.stub.cpu_seconds(), time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, cwd=WORK)
        wall = time.perf_counter() - t0
        cpu = self.stub.cpu_seconds() - cpu0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode(errors="replace")[-3000:])
        lines = [line for line in proc.stdout.decode().splitlines() if line.startswith("{")]
        result = json.loads(lines[-1])
        # nginx works only while calls run, so its CPU over the timed loop (warm-up calls count
        # too, which errs high) is its share; the whole process's wall would hide it behind imports.
        busy = result.get("seconds") or wall
        result["nginx_cpu"] = cpu / busy if busy > 0 else 0.0
        return result


def summarize(values: list[float], higher_is_better: bool) -> dict[str, float]:
    return {"median": statistics.median(values), "best": max(values) if higher_is_better else min(values)}


def measure(runner: Runner, metrics: list[str], libs_filter: set[str] | None, quick: bool) -> dict[str, Any]:
    q = 1 if quick else 0
    out: dict[str, Any] = {}
    for metric in metrics:
        plan = PLAN[metric]
        runs = plan["runs"][q]
        libs = [lib for lib in METRIC_LIBS[metric] if libs_filter is None or lib in libs_filter]
        res: dict[str, Any] = {}
        out[metric] = res
        if metric in ("import", "firstcall"):
            samples: dict[str, list[float]] = {lib: [] for lib in libs}
            bare: list[float] = []
            for r in range(runs):
                bare.append(runner.wall("gen_ai", ["-c", "pass"]))
                for lib in libs:
                    try:
                        if metric == "import":
                            samples[lib].append(runner.wall(lib, ["-c", IMPORTS[lib]]))
                        else:
                            code = f"B = {runner.base!r}\n" + FIRSTCALL[lib]
                            samples[lib].append(runner.wall(lib, ["-c", code]))
                    except RuntimeError as exc:
                        res[lib] = {"error": str(exc).strip().splitlines()[-1][:200]}
            bare_med, bare_min = statistics.median(bare), min(bare)
            res["_bare"] = {"median": bare_med * 1000, "best": bare_min * 1000}
            for lib in libs:
                if lib in res or not samples[lib]:
                    continue
                med, best = statistics.median(samples[lib]), min(samples[lib])
                res[lib] = {"median": (med - bare_med) * 1000, "best": (best - bare_min) * 1000,
                            "whole_median": med * 1000, "whole_best": best * 1000, "runs": runs}
                log(f"{metric:10s} {lib:15s} {res[lib]['median']:8.1f} ms above bare "
                    f"({res[lib]['whole_median']:.1f} ms whole process)")
            continue
        for lib in libs:
            opts: dict[str, Any] = {}
            if "calls" in plan:
                opts["calls"] = plan.get("calls_for", {}).get(lib, plan["calls"])[q]
            if "concurrency" in plan:
                opts["concurrency"] = plan["concurrency"]
            if "streams" in plan:
                opts["streams"] = plan.get("streams_for", {}).get(lib, plan["streams"])[q]
            results = []
            try:
                for _ in range(runs):
                    results.append(runner.metric(metric, lib, opts))
                    if "skipped" in results[-1]:
                        break
            except RuntimeError as exc:
                log(f"{metric} {lib} failed:\n{exc}")
                res[lib] = {"error": str(exc).strip().splitlines()[-1][:200]}
                continue
            if "skipped" in results[-1]:
                res[lib] = {"skipped": results[-1]["skipped"]}
                log(f"{metric:10s} {lib:15s} skipped: {results[-1]['skipped']}")
                continue
            entry = summarize([r["value"] for r in results], True)
            entry["runs"] = runs
            entry["calls"] = results[0].get("calls") or opts.get("streams")
            entry["rss_mb"] = max(r["rss_mb"] for r in results)
            entry["nginx_cpu"] = max(r["nginx_cpu"] for r in results)
            entry["failures"] = sum(r.get("failures", 0) for r in results)
            if metric in ("stream", "tools"):
                entry["ttfd_ms"] = summarize([r["ttfd_ms"] for r in results], False)
            res[lib] = entry
            log(f"{metric:10s} {lib:15s} {entry['median']:10.0f}/s median, {entry['best']:10.0f} best, "
                f"rss {entry['rss_mb']:.0f} MB, nginx cpu {entry['nginx_cpu']*100:.0f}%")
    return out


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    pyver = subprocess.run([venv_python("genai"), "-c", "import sys; print(sys.version.split()[0])"],
                           capture_output=True, text=True).stdout.strip()
    nginx_v = subprocess.run([find_nginx() or "nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "nproc": str(os.cpu_count()),
            "cpu": model, "python": pyver, "nginx": nginx_v.replace("nginx version: ", ""),
            "os": platform.platform()}


def versions() -> dict[str, str]:
    out = {}
    for lib, dist in (("gen_ai", "gen_ai"), ("openai", "openai"), ("litellm", "litellm"), ("aisuite", "aisuite"),
                      ("anyllm", "any-llm-sdk"), ("raw_aiohttp", "aiohttp"), ("raw_httpx", "httpx")):
        py = venv_python(LIB_VENV[lib])
        if not os.path.exists(py):
            continue
        v = subprocess.run([py, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                           capture_output=True, text=True).stdout.strip()
        out[lib] = v or "?"
    return out


def _fmt(v: float, unit: str = "") -> str:
    if v >= 1000:
        return f"{v:,.0f}{unit}"
    if v >= 100:
        return f"{v:.0f}{unit}"
    return f"{v:.1f}{unit}"


def ratio(gen: float, peer: float, higher_is_better: bool) -> str:
    if gen <= 0 or peer <= 0:
        return "n/a"
    r = gen / peer if higher_is_better else peer / gen
    return f"{r:.2f}x"


TITLES = {
    "import": "1. Import time of the entry point (fresh process, minus bare `python -c pass`)",
    "firstcall": "1b. Import + create client + first call, as a whole process",
    "seq": "2. Sequential non-streaming chat calls, one client reused",
    "async": "3. Async throughput at concurrency 256, and peak RSS of the process",
    "stream": f"4. Streaming: text deltas per second from the {STREAM_CHUNKS:,}-chunk SSE stream",
    "tools": f"4b. Streamed tool calls: argument fragments per second, {STREAM_CHUNKS:,} fragments of one call",
    "batch": "5. gen_ai batch API: run_chat_completions_batch(max_concurrent=256)",
    "batch_file": "5b. gen_ai file batch: run_batch_file (checkpointing every result)",
    "embeddings": f"6. Embeddings: texts per second, {EMBED_BATCH} texts x {EMBED_DIMS} floats per request, "
                  "concurrency 64 (base64 vs JSON floats)",
    "replicas": "7. One client over two endpoints vs one: run_chat_completions_batch(max_concurrent=256)",
}


def report(results: dict[str, Any], quick: bool, pinned: bool, note: str | None = None) -> str:
    m = machine()
    vers = versions()
    lines = [
        "# gen_ai benchmark results",
        "",
        f"- date: {m['date']}{' (quick run: fewer calls and runs)' if quick else ''}",
        f"- machine: {m['nproc']} CPUs, {m['cpu']}, {m['os']}",
        f"- python {m['python']}; stub: nginx {m['nginx']}, one process, loopback",
        f"- pinning: {'client on core 1, nginx on core 0 (taskset)' if pinned else 'none (fewer than 2 CPUs)'}",
        "- versions: " + ", ".join(f"{LIB_LABEL[k]} {v}" for k, v in vers.items()),
        "- each cell: median over runs (best run in brackets); every run is a fresh process. "
        "Ratio columns are gen_ai's advantage: >1 means gen_ai is faster / smaller.",
        "- slower libraries make fewer calls per run (the calls column says how many); rates are per second either way.",
    ]
    if note:
        lines.append(f"- note: {note}")
    lines.append("")
    for metric, res in results.items():
        lines += [f"## {TITLES[metric]}", ""]
        gen = res.get("gen_ai", {})
        if metric in ("import", "firstcall"):
            bare = res.get("_bare", {})
            lines += [f"Bare `python -c pass`: {bare.get('median', 0):.1f} ms median ({bare.get('best', 0):.1f}).",
                      "", "| library | ms above bare | whole process ms | gen_ai speed-up |",
                      "|---|---:|---:|---:|"]
            for lib, e in res.items():
                if lib == "_bare":
                    continue
                if "error" in e:
                    lines.append(f"| {LIB_LABEL[lib]} | error: {e['error']} | | |")
                    continue
                r = "" if lib == "gen_ai" else ratio(max(gen.get("median", 0), 0.1), max(e["median"], 0.1), False)
                lines.append(f"| {LIB_LABEL[lib]} | {e['median']:.1f} ({e['best']:.1f}) | "
                             f"{e['whole_median']:.1f} ({e['whole_best']:.1f}) | {r} |")
            lines.append("")
            continue
        unit = "deltas/s" if metric == "stream" else "fragments/s" if metric == "tools" else "calls/s"
        if metric in ("batch", "batch_file"):
            lines += batch_rows(res, results.get("async", {}))
            continue
        head = f"| library | calls per run | {unit} | gen_ai ratio | peak RSS MB | nginx CPU |"
        if metric in ("stream", "tools"):
            head = (f"| library | streams per run | {unit} | gen_ai ratio | time to first "
                    f"{'delta' if metric == 'stream' else 'fragment'} ms | peak RSS MB | nginx CPU |")
        lines += [head, "|---|---:|---:|---:|---:|---:|" + ("---:|" if metric in ("stream", "tools") else "")]
        for lib, e in res.items():
            if "error" in e or "skipped" in e:
                lines.append(f"| {LIB_LABEL[lib]} | {e.get('error') or e.get('skipped')} |  |  |  |  |")
                continue
            r = "" if lib == "gen_ai" else ratio(gen.get("median", 0), e["median"], True)
            fail = f" ({e['failures']} failed)" if e.get("failures") else ""
            cols = [LIB_LABEL[lib], f"{e['calls']:,}{fail}", f"{_fmt(e['median'])} ({_fmt(e['best'])})", r]
            if metric in ("stream", "tools"):
                t = e["ttfd_ms"]
                cols.append(f"{t['median']:.2f} ({t['best']:.2f})")
            cols += [f"{e['rss_mb']:.0f}", f"{e['nginx_cpu'] * 100:.0f}%"]
            lines.append("| " + " | ".join(cols) + " |")
        lines.append("")
    lines += targets(results)
    return "\n".join(lines) + "\n"


def batch_rows(res: dict[str, Any], async_res: dict[str, Any]) -> list[str]:
    """The batch API has no peer: compare it with the async rows (same 20,000 requests at 256)."""
    peers = [lib for lib in ("raw_aiohttp", "raw_aiohttp_uvloop", "openai", "litellm", "anyllm")
             if "median" in async_res.get(lib, {})]
    lines = ["| library | calls per run | calls/s | " + " | ".join(f"vs {LIB_LABEL[p]} (async)" for p in peers)
             + " | peak RSS MB | nginx CPU |", "|---|---:|---:|" + "---:|" * len(peers) + "---:|---:|"]
    for lib, e in res.items():
        if "error" in e or "skipped" in e:
            lines.append(f"| {LIB_LABEL[lib]} | {e.get('error') or e.get('skipped')} |" + " |" * (len(peers) + 3))
            continue
        fail = f" ({e['failures']} failed)" if e.get("failures") else ""
        cols = [LIB_LABEL[lib], f"{e['calls']:,}{fail}", f"{_fmt(e['median'])} ({_fmt(e['best'])})"]
        cols += [ratio(e["median"], async_res[p]["median"], True) for p in peers]
        cols += [f"{e['rss_mb']:.0f}", f"{e['nginx_cpu'] * 100:.0f}%"]
        lines.append("| " + " | ".join(cols) + " |")
    return lines + [""]


def targets(results: dict[str, Any]) -> list[str]:
    def get(metric: str, lib: str, key: str = "median") -> float | None:
        e = results.get(metric, {}).get(lib)
        return e.get(key) if isinstance(e, dict) and key in e else None

    rows = []

    def check(name: str, value: float | None, ok: Any, shown: str) -> None:
        if value is None:
            rows.append(f"| {name} | not measured | |")
        else:
            rows.append(f"| {name} | {shown} | {'yes' if ok(value) else '**no**'} |")

    v = get("import", "gen_ai")
    check("`import gen_ai` < 30 ms above bare start-up", v, lambda x: x < 30, f"{v:.1f} ms" if v is not None else "")
    v = get("firstcall", "gen_ai", "whole_median")
    check("import + create_client + first call < 100 ms (whole process)", v, lambda x: x < 100,
          f"{v:.1f} ms" if v is not None else "")

    def rel(metric: str, peer: str, minimum: float, name: str, gen_metric: str | None = None) -> None:
        g, p = get(gen_metric or metric, "gen_ai"), get(metric, peer)
        value = g / p if g and p else None
        check(name, value, lambda x: x >= minimum, f"{value:.2f}x" if value else "")

    rel("seq", "raw_httpclient", 0.7, "sequential >= 0.7x raw http.client")
    rel("async", "raw_aiohttp", 0.8, "async >= 0.8x raw aiohttp")
    v = get("stream", "gen_ai")
    check("stream >= 100,000 deltas/s", v, lambda x: x >= 100_000, f"{v:,.0f}/s" if v else "")
    v = get("async", "gen_ai", "rss_mb")
    check("peak RSS at concurrency 256 <= 60 MB", v, lambda x: x <= 60, f"{v:.0f} MB" if v else "")
    rel("async", "raw_aiohttp", 0.8, "batch >= 0.8x raw aiohttp", "batch")
    rel("async", "openai", 8, "batch >= 8x openai SDK (AsyncOpenAI)", "batch")
    v = get("batch", "gen_ai", "rss_mb")
    check("batch peak RSS < 150 MB", v, lambda x: x < 150, f"{v:.0f} MB" if v else "")
    rel("async", "raw_aiohttp", 0.7, "file batch >= 0.7x raw aiohttp", "batch_file")
    # issue 14: both batches at least as fast as the hand-written aiohttp loop, under 80 MB
    rel("async", "raw_aiohttp", 1.0, "list batch >= 1.0x raw aiohttp (issue 14)", "batch")
    rel("async", "raw_aiohttp", 1.0, "file batch >= 1.0x raw aiohttp (issue 14)", "batch_file")
    for metric, what in (("batch", "list"), ("batch_file", "file")):
        v = get(metric, "gen_ai", "rss_mb")
        check(f"{what} batch peak RSS < 80 MB at 20,000 items (issue 14)", v, lambda x: x < 80,
              f"{v:.0f} MB" if v else "")
    return ["## Targets (from the issues)", "", "| target | measured (median) | met |", "|---|---:|:---:|",
            *rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls and runs (about 2 minutes)")
    parser.add_argument("--only", help=f"comma-separated metrics: {','.join(PLAN)}")
    parser.add_argument("--libs", help=f"comma-separated libraries: {','.join(LIB_VENV)}")
    parser.add_argument("--port", type=int, default=18089)
    parser.add_argument("--output", default=os.path.join(HERE, "results.md"))
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--note", help="a line to add to results.md (e.g. what else ran on the machine)")
    parser.add_argument("--from-json", help="only re-render the report from a --json file of an earlier run")
    args = parser.parse_args()
    metrics = args.only.split(",") if args.only else list(PLAN)
    for m in metrics:
        if m not in PLAN:
            raise SystemExit(f"unknown metric {m!r}; choose from {', '.join(PLAN)}")
    libs = set(args.libs.split(",")) if args.libs else None
    os.makedirs(WORK, exist_ok=True)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        text = report(saved, args.quick, (os.cpu_count() or 1) >= 2, args.note)
        with open(args.output, "w") as f:
            f.write(text)
        print(text)
        return

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    nginx = ensure_nginx()
    needed = {LIB_VENV[lib] for m in metrics for lib in METRIC_LIBS[m] if libs is None or lib in libs}
    needed.add("genai")
    ensure_venvs(needed)
    write_stub_files()
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    stub = Stub(nginx, args.port, pin)
    log(f"nginx pid {stub.pid} on 127.0.0.1:{args.port}; pinned: {pin}")
    try:
        start = time.monotonic()
        results = measure(Runner(stub, pin), metrics, libs, args.quick)
        log(f"measured in {time.monotonic() - start:.0f} s")
    finally:
        stub.stop()
    text = report(results, args.quick, pin, args.note)
    with open(args.output, "w") as f:
        f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(text)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
