"""One benchmark measurement, run by run.py in the library's own venv as a fresh process.

    python _metric.py METRIC LIB BASE_URL [options as JSON]

Prints exactly one JSON line on stdout. Only the library under test is imported, so peers'
imports never pollute each other's timings or memory.

METRIC: seq | async | stream | batch | batch_file
LIB:    gen_ai | openai | litellm | aisuite | anyllm | raw_httpclient | raw_httpx | raw_aiohttp
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

MODEL = "bench"
MESSAGES = [{"role": "user", "content": "Say hello."}]
MAX_TOKENS = 16
API_KEY = "sk-bench-not-a-real-key"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _body(stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}


# ------------------------------------------------------------------------------------------
# Sequential: one client, N calls in a loop. make_call(lib, base) -> zero-arg callable -> text
# ------------------------------------------------------------------------------------------


def _otel_setup(lib: str) -> None:
    """gen_ai_otel_idle: the OpenTelemetry SDK installed, no provider configured (gen_ai's hooks
    are on but find nothing to report to); gen_ai_otel_memory: a real tracer and meter provider
    with an in-memory span exporter and metric reader (every call makes a span and 3 points)."""
    if lib != "gen_ai_otel_memory":
        return
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    _OTEL_KEEP.append(exporter)


_OTEL_KEEP: list[Any] = []


def make_sync_call(lib: str, base: str) -> tuple[Callable[[], str], Callable[[], None]]:
    if lib.startswith("gen_ai_otel"):
        _otel_setup(lib)
        lib = "gen_ai"
    if lib == "gen_ai":
        from gen_ai import create_client

        client = create_client("openai", api_key=API_KEY, endpoint=base, model_name=MODEL)
        return (lambda: client.run_chat_completions(MESSAGES, max_tokens=MAX_TOKENS)), client.close
    if lib == "openai":
        from openai import OpenAI

        oc = OpenAI(api_key=API_KEY, base_url=base)
        return (lambda: oc.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
                .choices[0].message.content), oc.close
    if lib == "litellm":
        import litellm

        return (lambda: litellm.completion(model=f"openai/{MODEL}", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                           api_base=base, api_key=API_KEY).choices[0].message.content), _noop
    if lib == "aisuite":
        import aisuite

        ac = aisuite.Client({"openai": {"api_key": API_KEY, "base_url": base}})
        return (lambda: ac.chat.completions.create(model=f"openai:{MODEL}", messages=MESSAGES,
                                                   max_tokens=MAX_TOKENS).choices[0].message.content), _noop
    if lib == "anyllm":
        from any_llm import AnyLLM

        llm = AnyLLM.create("openai", api_key=API_KEY, api_base=base)
        return (lambda: llm.completion(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
                .choices[0].message.content), _noop
    if lib == "raw_httpclient":
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
        path = parts.path + "/chat/completions"

        def call() -> str:
            conn.request("POST", path, body=_body(), headers=_HEADERS)
            return json.loads(conn.getresponse().read())["choices"][0]["message"]["content"]

        return call, conn.close
    if lib == "raw_httpx":
        import httpx

        hc = httpx.Client()
        url = base + "/chat/completions"
        return (lambda: json.loads(hc.post(url, content=_body(), headers=_HEADERS).content)
                ["choices"][0]["message"]["content"]), hc.close
    raise SystemExit(f"unknown lib {lib}")


def _noop() -> None:
    pass


def run_seq(lib: str, base: str, opts: dict[str, Any]) -> dict[str, Any]:
    call, close = make_sync_call(lib, base)
    for _ in range(opts.get("warmup", 50)):
        call()
    n = opts["calls"]
    start = time.perf_counter()
    for _ in range(n):
        text = call()
    elapsed = time.perf_counter() - start
    assert text, "empty answer"
    close()
    return {"value": n / elapsed, "calls": n, "seconds": elapsed, "rss_mb": _peak_rss_mb()}


# ------------------------------------------------------------------------------------------
# Async: N calls, `concurrency` workers over one client
# ------------------------------------------------------------------------------------------


async def _make_async_call(lib: str, base: str, concurrency: int) -> tuple[Any, Any]:
    if lib.startswith("gen_ai_otel"):
        _otel_setup(lib)
        lib = "gen_ai"
    if lib == "gen_ai":
        from gen_ai import create_client

        client = create_client("openai", api_key=API_KEY, endpoint=base, model_name=MODEL,
                               max_connections=concurrency)
        return (lambda: client.arun_chat_completions(MESSAGES, max_tokens=MAX_TOKENS)), client.aclose
    if lib == "openai":
        from openai import AsyncOpenAI

        oc = AsyncOpenAI(api_key=API_KEY, base_url=base)

        async def call() -> str:
            r = await oc.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
            return r.choices[0].message.content

        return call, oc.close
    if lib == "litellm":
        import litellm

        async def call() -> str:
            r = await litellm.acompletion(model=f"openai/{MODEL}", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                          api_base=base, api_key=API_KEY)
            return r.choices[0].message.content

        return call, None
    if lib == "anyllm":
        from any_llm import AnyLLM

        llm = AnyLLM.create("openai", api_key=API_KEY, api_base=base)

        async def call() -> str:
            r = await llm.acompletion(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
            return r.choices[0].message.content

        return call, None
    if lib in ("raw_aiohttp", "raw_aiohttp_uvloop"):  # the loop is chosen by run_async
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        url = base + "/chat/completions"

        async def call() -> str:
            async with session.post(url, data=_body(), headers=_HEADERS) as r:
                return json.loads(await r.read())["choices"][0]["message"]["content"]

        return call, session.close
    if lib == "raw_httpx":
        import httpx

        ac = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency,
                                                   max_keepalive_connections=concurrency))
        url = base + "/chat/completions"

        async def call() -> str:
            r = await ac.post(url, content=_body(), headers=_HEADERS)
            return json.loads(r.content)["choices"][0]["message"]["content"]

        return call, ac.aclose
    raise SystemExit(f"unknown lib {lib}")


def run_async(lib: str, base: str, opts: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    n, concurrency = opts["calls"], opts["concurrency"]

    async def main() -> dict[str, Any]:
        call, close = await _make_async_call(lib, base, concurrency)
        await asyncio.gather(*(call() for _ in range(min(concurrency, 64))))  # warm-up, open connections
        remaining = n
        failures = 0

        async def worker() -> None:
            nonlocal remaining, failures
            while remaining > 0:
                remaining -= 1
                if not await call():
                    failures += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        if close is not None:
            await close()
        return {"value": n / elapsed, "calls": n, "seconds": elapsed, "failures": failures}

    if lib == "raw_aiohttp_uvloop":
        import uvloop

        result = uvloop.run(main())
    else:
        result = asyncio.run(main())
    result["rss_mb"] = _peak_rss_mb()
    return result


# ------------------------------------------------------------------------------------------
# Streaming: the 2,000-chunk SSE stream, deltas/s and time to first delta
# ------------------------------------------------------------------------------------------


def _stream_iter(lib: str, base: str) -> Callable[[], Any]:
    """Returns a function that starts one stream and returns an iterator of text deltas."""
    if lib == "gen_ai":
        from gen_ai import create_client

        client = create_client("openai", api_key=API_KEY, endpoint=base, model_name=MODEL)
        return lambda: iter(client.run_chat_completions_stream(MESSAGES, max_tokens=MAX_TOKENS))
    if lib == "openai":
        from openai import OpenAI

        oc = OpenAI(api_key=API_KEY, base_url=base)

        def gen() -> Any:
            for chunk in oc.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                    stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

        return gen
    if lib == "litellm":
        import litellm

        def gen() -> Any:
            for chunk in litellm.completion(model=f"openai/{MODEL}", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                            api_base=base, api_key=API_KEY, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

        return gen
    if lib == "anyllm":
        from any_llm import AnyLLM

        llm = AnyLLM.create("openai", api_key=API_KEY, api_base=base)

        def gen() -> Any:
            for chunk in llm.completion(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

        return gen
    if lib == "raw_httpclient":
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
        path = parts.path + "/chat/completions"

        def gen() -> Any:
            conn.request("POST", path, body=_body(stream=True), headers=_HEADERS)
            resp = conn.getresponse()
            buf = b""
            loads = json.loads
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    resp.close()  # read1 does not mark a Content-Length body done; the next request needs it
                    break
                lines = (buf + chunk).split(b"\n")
                buf = lines.pop()
                for line in lines:
                    if line.startswith(b"data: ") and line != b"data: [DONE]":
                        choices = loads(line[6:])["choices"]
                        if choices:
                            text = choices[0]["delta"].get("content")
                            if text:
                                yield text

        return gen
    raise SystemExit(f"unknown lib {lib}")


def run_stream(lib: str, base: str, opts: dict[str, Any]) -> dict[str, Any]:
    start_stream = _stream_iter(lib, base)
    for _ in range(opts.get("warmup", 1)):
        for _ in start_stream():
            pass
    rates, ttfds = [], []
    deltas = 0
    total = 0.0
    for _ in range(opts["streams"]):
        start = time.perf_counter()
        first = None
        deltas = 0
        for _ in start_stream():
            if first is None:
                first = time.perf_counter() - start
            deltas += 1
        elapsed = time.perf_counter() - start
        total += elapsed
        rates.append(deltas / elapsed)
        ttfds.append(first or 0.0)
    rates.sort()
    ttfds.sort()
    return {"value": rates[len(rates) // 2], "ttfd_ms": ttfds[len(ttfds) // 2] * 1000, "deltas": deltas,
            "streams": opts["streams"], "seconds": total, "rss_mb": _peak_rss_mb()}


# ------------------------------------------------------------------------------------------
# Streamed tool calls: 2,000 argument fragments of one call, merged by index
# ------------------------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "record", "parameters": {
    "type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}}}}}


def _tool_stream(lib: str, base: str) -> Callable[[], Any]:
    """A function that runs one tool-call stream to its end, yielding once per argument
    fragment as it is merged, and checks the assembled call at the end."""
    def check(name: str, arguments: str) -> None:
        if name != "record" or not arguments.endswith('"last"]}'):
            raise SystemExit(f"{lib} assembled the tool call wrongly: {name!r} {arguments[-40:]!r}")

    if lib == "gen_ai":
        from gen_ai import create_client

        client = create_client("openai", api_key=API_KEY, endpoint=base, model_name=MODEL)

        def gen() -> Any:
            stream = client.run_chat_completions_stream(MESSAGES, max_tokens=MAX_TOKENS, tools=[TOOL])
            for event in stream.events():
                if event.type == "tool_call_delta":
                    yield event
            (call,) = stream.tool_calls
            check(call.name, call.arguments)

        return gen
    if lib == "openai":
        from openai import OpenAI

        oc = OpenAI(api_key=API_KEY, base_url=base)

        def gen() -> Any:
            calls: dict[int, list[Any]] = {}  # index -> [name, [fragments]], as the SDK's users merge them
            for chunk in oc.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                    stream=True, tools=[TOOL]):
                if chunk.choices and chunk.choices[0].delta.tool_calls:
                    for tc in chunk.choices[0].delta.tool_calls:
                        slot = calls.setdefault(tc.index, [None, []])
                        if tc.function and tc.function.name:
                            slot[0] = tc.function.name
                        if tc.function and tc.function.arguments:
                            slot[1].append(tc.function.arguments)
                            yield tc
            check(calls[0][0], "".join(calls[0][1]))

        return gen
    if lib == "raw_httpclient":
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
        path = parts.path + "/chat/completions"

        def gen() -> Any:
            conn.request("POST", path, body=_body(stream=True), headers=_HEADERS)
            resp = conn.getresponse()
            buf = b""
            loads = json.loads
            calls: dict[int, list[Any]] = {}
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    resp.close()
                    break
                lines = (buf + chunk).split(b"\n")
                buf = lines.pop()
                for line in lines:
                    if line.startswith(b"data: ") and line != b"data: [DONE]":
                        choices = loads(line[6:])["choices"]
                        if choices:
                            for tc in choices[0]["delta"].get("tool_calls") or ():
                                slot = calls.setdefault(tc.get("index", 0), [None, []])
                                function = tc.get("function") or {}
                                if function.get("name"):
                                    slot[0] = function["name"]
                                if function.get("arguments"):
                                    slot[1].append(function["arguments"])
                                    yield tc
            check(calls[0][0], "".join(calls[0][1]))

        return gen
    raise SystemExit(f"unknown lib {lib}")


def run_tools(lib: str, base: str, opts: dict[str, Any]) -> dict[str, Any]:
    start_stream = _tool_stream(lib, base)
    for _ in range(opts.get("warmup", 1)):
        for _ in start_stream():
            pass
    rates, ttfds = [], []
    fragments = 0
    total = 0.0
    for _ in range(opts["streams"]):
        start = time.perf_counter()
        first = None
        fragments = 0
        for _ in start_stream():
            if first is None:
                first = time.perf_counter() - start
            fragments += 1
        elapsed = time.perf_counter() - start
        total += elapsed
        rates.append(fragments / elapsed)
        ttfds.append(first or 0.0)
    rates.sort()
    ttfds.sort()
    return {"value": rates[len(rates) // 2], "ttfd_ms": ttfds[len(ttfds) // 2] * 1000, "deltas": fragments,
            "streams": opts["streams"], "seconds": total, "rss_mb": _peak_rss_mb()}


# ------------------------------------------------------------------------------------------
# gen_ai's batch API (issue 5), in memory and file-based
# ------------------------------------------------------------------------------------------


def _supported(fn: Any, **wanted: Any) -> dict[str, Any]:
    import inspect

    # Only names the method declares: gen_ai's **extra would send the rest to the server.
    params = inspect.signature(fn).parameters
    return {k: v for k, v in wanted.items() if k in params}


def run_batch(lib: str, base: str, opts: dict[str, Any]) -> dict[str, Any]:
    from gen_ai import Client, create_client

    if not hasattr(Client, "run_chat_completions_batch"):
        return {"skipped": "gen_ai has no run_chat_completions_batch yet"}
    n, concurrency = opts["calls"], opts["concurrency"]
    client = create_client("openai", api_key=API_KEY, endpoint=base, model_name=MODEL)
    kwargs = _supported(client.run_chat_completions_batch, max_tokens=MAX_TOKENS, max_concurrent=concurrency,
                        progress=False, return_error=True)
    client.run_chat_completions_batch([MESSAGES] * 64, **kwargs)  # warm-up: imports, connections
    start = time.perf_counter()
    out = client.run_chat_completions_batch([MESSAGES] * n, **kwargs)
    elapsed = time.perf_counter() - start
    results, errors = out if kwargs.get("return_error") else (out, [None] * n)
    failures = sum(1 for e in errors if e is not None)
    assert len(results) == n
    client.close()
    return {"value": n / elapsed, "calls": n, "seconds": elapsed, "failures": failures,
            "rss_mb": _peak_rss_mb()}


def run_batch_file(lib: str, base: str, opts: dict[str, Any]) -> dict[str, Any]:
    import tempfile

    from gen_ai import Client, create_client

    if not hasattr(Client, "run_batch_file"):
        return {"skipped": "gen_ai has no run_batch_file yet"}
    n, concurrency = opts["calls"], opts["concurrency"]
    client = create_client("openai", api_key=API_KEY, endpoint=base, model_name=MODEL)
    tmp = tempfile.mkdtemp(prefix="gen_ai_bench_")
    line_body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}

    def write_input(path: str, count: int) -> None:
        with open(path, "w") as f:
            for i in range(count):
                f.write(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                                    "body": line_body}) + "\n")

    kwargs = _supported(client.run_batch_file, max_concurrent=concurrency, progress=False)
    warm_in, warm_out = os.path.join(tmp, "warm.jsonl"), os.path.join(tmp, "warm.out.jsonl")
    write_input(warm_in, 64)
    client.run_batch_file(warm_in, warm_out, **kwargs)
    inp, outp = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
    write_input(inp, n)
    start = time.perf_counter()
    client.run_batch_file(inp, outp, **kwargs)
    elapsed = time.perf_counter() - start
    rss = _peak_rss_mb()  # the batch's own peak, before the check below reads the output
    lines = failures = 0
    with open(outp) as f:
        for line in f:  # one record at a time: checking must not cost the memory it would report
            if line.strip():
                rec = json.loads(line)
                lines += 1
                failures += bool(rec.get("error") or (rec.get("response") or {}).get("status_code") != 200)
    client.close()
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)
    return {"value": n / elapsed, "calls": n, "seconds": elapsed, "failures": failures + (n - lines),
            "rss_mb": rss}


METRICS = {"seq": run_seq, "async": run_async, "stream": run_stream, "tools": run_tools, "batch": run_batch,
           "batch_file": run_batch_file}


# -- embeddings: EMBED_BATCH texts per request; value = texts per second ----------------------------

EMBED_BATCH = 16


def run_embeddings(lib: str, base: str, opts: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    n, concurrency = opts["calls"], opts["concurrency"]
    texts = [f"benchmark text number {i}" for i in range(EMBED_BATCH)]
    b64_base = base.replace("/v1", "/b64/v1")

    async def main() -> tuple[float, int]:
        if lib in ("gen_ai", "gen_ai_float"):
            from gen_ai import create_client

            float_only = lib == "gen_ai_float"
            client = create_client("openai", api_key=API_KEY, endpoint=base if float_only else b64_base,
                                   model_name=MODEL, max_connections=concurrency,
                                   embedding_encoding="float" if float_only else "base64")

            async def call() -> int:
                return len(await client.arun_embeddings(texts))

            close = client.aclose
        elif lib == "openai":
            from openai import AsyncOpenAI

            oc = AsyncOpenAI(api_key=API_KEY, base_url=b64_base)  # the SDK asks for base64 by default

            async def call() -> int:
                return len((await oc.embeddings.create(model=MODEL, input=texts)).data)

            close = oc.close
        else:  # raw_aiohttp (JSON floats) / raw_aiohttp_b64 (base64 decoded with array)
            import array
            import base64 as b64

            import aiohttp

            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
            as_b64 = lib == "raw_aiohttp_b64"
            url = (b64_base if as_b64 else base) + "/embeddings"
            payload = json.dumps({"model": MODEL, "input": texts,
                                  **({"encoding_format": "base64"} if as_b64 else {})}).encode()

            async def call() -> int:
                async with session.post(url, data=payload, headers=_HEADERS) as r:
                    data = json.loads(await r.read())
                vectors = []
                for item in data["data"]:
                    if as_b64:
                        floats = array.array("f")
                        floats.frombytes(b64.b64decode(item["embedding"]))
                        vectors.append(floats.tolist())
                    else:
                        vectors.append(item["embedding"])
                return len(vectors)

            close = session.close
        sem = asyncio.Semaphore(concurrency)

        async def one() -> int:
            async with sem:
                return await call()

        await asyncio.gather(*(one() for _ in range(64)))  # warm-up
        start = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - start
        await close()
        assert all(c == EMBED_BATCH for c in counts)
        return elapsed, sum(counts)

    elapsed, texts_done = asyncio.run(main())
    return {"value": texts_done / elapsed, "calls": n, "seconds": elapsed, "failures": 0, "rss_mb": _peak_rss_mb()}


def run_replicas(lib: str, base: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The list batch through one client: one endpoint (gen_ai) or the stub's two ports."""
    from gen_ai import create_client

    n, concurrency = opts["calls"], opts["concurrency"]
    endpoint: Any = base
    if lib == "gen_ai_2_replicas":
        from urllib.parse import urlsplit

        port = urlsplit(base).port or 80
        endpoint = [base, base.replace(f":{port}/", f":{port + 1}/")]
    client = create_client("openai", api_key=API_KEY, endpoint=endpoint, model_name=MODEL)
    kwargs = dict(max_tokens=MAX_TOKENS, max_concurrent=concurrency, progress=False, return_error=True)
    client.run_chat_completions_batch([MESSAGES] * 64, **kwargs)
    start = time.perf_counter()
    results, errors = client.run_chat_completions_batch([MESSAGES] * n, **kwargs)
    elapsed = time.perf_counter() - start
    failures = sum(1 for e in errors if e is not None)
    client.close()
    return {"value": n / elapsed, "calls": n, "seconds": elapsed, "failures": failures, "rss_mb": _peak_rss_mb()}


METRICS["embeddings"] = run_embeddings
METRICS["replicas"] = run_replicas


if __name__ == "__main__":
    metric, lib, base = sys.argv[1], sys.argv[2], sys.argv[3]
    opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    import logging

    logging.basicConfig(level=logging.ERROR)  # keep peers' per-call INFO logging out of the timing
    result = METRICS[metric](lib, base, opts)
    sys.stdout.write(json.dumps(result) + "\n")
