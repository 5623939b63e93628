"""Ray Data integration: run a gen_ai batch on every block of a distributed dataset.

    import ray
    from gen_ai.ray_data import ChatCompletionsPredictor

    ds = ray.data.from_items([{"messages": [{"role": "user", "content": "Hi"}]}, ...])
    out = ds.map_batches(
        ChatCompletionsPredictor,
        fn_constructor_kwargs={"provider": "openai", "endpoint": "http://vllm:8000/v1",
                               "model_name": "m", "max_concurrent": 64, "max_tokens": 128},
        concurrency=4,          # 4 actors, each with one client and one connection pool
        batch_size=256,         # rows per call; each call runs them max_concurrent at a time
    )

Each actor builds one client in ``__init__`` and keeps one event loop (in a helper thread) for
its whole life, so its aiohttp connection pool is reused from block to block. A call takes a
block of rows (a dict of columns, numpy or lists, or a pandas DataFrame) and returns the same
rows with four more columns: ``answer`` (str, None when the row failed), ``prompt_tokens``,
``completion_tokens`` (ints, 0 when unknown) and ``error`` (None, or "ErrorType: message").
A failed row never fails the block. Use ``TextCompletionsPredictor`` for a ``prompt`` column.

Ray is never imported here: Ray imports this module, not the other way round. Install with
``pip install 'gen_ai[ray]'``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .factory import create_client

# -- rate limits shared by every actor of a job -------------------------------------------------


class _LimitsState:
    """The token buckets and the 429 pause of one job, held by one named Ray actor. Every
    actor's batch asks it before each request (``reserve``: seconds to wait) and tells it about a
    429 (``pause``), so ``requests_per_minute`` / ``tokens_per_minute`` hold for the whole job,
    however many actors run. Times are relative (seconds to wait): actors on other machines do
    not need a common clock."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        from .batch.limits import _Bucket

        self.requests = _Bucket(requests_per_minute) if requests_per_minute else None
        self.tokens = _Bucket(tokens_per_minute) if tokens_per_minute else None
        self.pause_until = 0.0
        self.reserved = 0

    def reserve(self, cost: float) -> float:
        import time

        now = time.monotonic()
        delay = self.pause_until - now
        if self.requests is not None:
            delay = max(delay, self.requests.reserve(1.0, now))
        if self.tokens is not None:
            delay = max(delay, self.tokens.reserve(cost, now))
        self.reserved += 1
        return delay

    def pause(self, seconds: float) -> None:
        import time

        self.pause_until = max(self.pause_until, time.monotonic() + seconds)

    def count(self) -> int:
        return self.reserved


class RemoteLimits:
    """What a batch's gate calls (``gate.shared``): the job's limits actor, over Ray."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def reserve(self, cost: float) -> float:
        delay: float = await self.handle.reserve.remote(cost)
        return delay

    def pause(self, seconds: float) -> None:
        self.handle.pause.remote(seconds)  # fire and forget: the local gate pauses already


def shared_limits_actor(name: str, requests_per_minute: float | None, tokens_per_minute: float | None) -> Any:
    """The job's limits actor named ``name``: created by the first actor that asks, found by the
    others (``get_if_exists``). It lives as long as the job."""
    import ray

    actor = ray.remote(num_cpus=0)(_LimitsState)
    return actor.options(name=name, get_if_exists=True, lifetime=None).remote(requests_per_minute,
                                                                            tokens_per_minute)


def job_limits_name(endpoint: Any, model_name: Any, requests_per_minute: Any, tokens_per_minute: Any) -> str:
    """One limits actor per job, endpoint, model and limit: predictors of one ``map_batches``
    (same constructor arguments) share it, other jobs do not."""
    import hashlib

    import ray

    job = ray.get_runtime_context().get_job_id()
    key = repr((endpoint, model_name, requests_per_minute, tokens_per_minute)).encode()
    return f"gen_ai-limits-{job}-{hashlib.sha256(key).hexdigest()[:12]}"


def _plain(value: Any) -> Any:
    """numpy arrays and Arrow-derived objects -> plain lists and dicts (JSON-ready)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        # Arrow gives every struct all the fields seen in the column: drop the ones set to None.
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Predictor:
    kind = "chat"
    default_column = "messages"

    def __init__(self, provider: str = "openai", endpoint: str | None = None, model_name: str | None = None,
                 *, api_key: str | None = None, input_column: str | None = None,
                 output_column: str = "answer", max_concurrent: int = 16, max_tokens: int = 256,
                 temperature: float = 0, top_p: float = 1.0, timeout: float | None = None,
                 requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 client_options: dict[str, Any] | None = None, shared_limits: bool = True,
                 limits_name: str | None = None, **extra: Any) -> None:
        self.client = create_client(provider=provider, api_key=api_key, endpoint=endpoint,
                                    model_name=model_name, **(client_options or {}))
        self.input_column = input_column or self.default_column
        self.output_column = output_column
        self.limiter: Any = None
        if shared_limits and (requests_per_minute or tokens_per_minute):
            # One set of buckets for every actor of the job (a named Ray actor), not one per actor.
            name = limits_name or job_limits_name(endpoint, model_name, requests_per_minute, tokens_per_minute)
            self.limiter = RemoteLimits(shared_limits_actor(name, requests_per_minute, tokens_per_minute))
            requests_per_minute = tokens_per_minute = None
        self.options: dict[str, Any] = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                            timeout=timeout, max_concurrent=max_concurrent,
                                            requests_per_minute=requests_per_minute,
                                            tokens_per_minute=tokens_per_minute, progress=False,
                                            return_error=True, **extra)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gen_ai-ray", daemon=True)
        self._thread.start()

    def __call__(self, batch: Any) -> Any:
        frame = None
        if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas
            frame = batch
            columns = {name: list(batch[name]) for name in batch.columns}
        else:
            columns = {name: list(values) for name, values in batch.items()}
        if self.input_column not in columns:
            raise KeyError(f"gen_ai: the batch has no {self.input_column!r} column "
                           f"(columns: {', '.join(columns)}); pass input_column=...")
        inputs = [_plain(v) for v in columns[self.input_column]]
        from .batch import arun_batch

        coro = arun_batch(self.client, self.kind, inputs, rate_limiter=self.limiter, **self.options)
        results, errors = asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        columns[self.output_column] = [None if r is None else str(r) for r in results]
        columns["prompt_tokens"] = [r.usage.prompt_tokens if r is not None and r.usage else 0 for r in results]
        columns["completion_tokens"] = [r.usage.completion_tokens if r is not None and r.usage else 0
                                        for r in results]
        columns["error"] = [None if e is None else f"{e['type']}: {e['message']}" for e in errors]
        if frame is not None:
            import pandas as pd

            return pd.DataFrame(columns)
        return columns

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.client.aclose(), loop).result(5)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)


class ChatCompletionsPredictor(_Predictor):
    """Callable class for ``Dataset.map_batches``: the ``messages`` column (a list of chat
    messages per row) in; ``answer``, ``prompt_tokens``, ``completion_tokens``, ``error`` out.
    Constructor: ``create_client`` arguments (``provider``, ``endpoint``, ``model_name``,
    ``api_key``, ``client_options``), then the batch options (``max_concurrent``,
    ``max_tokens``, ``temperature``, ``top_p``, ``timeout``, ``requests_per_minute``,
    ``tokens_per_minute``, extra body fields), ``input_column`` and ``output_column``."""

    kind = "chat"
    default_column = "messages"


class TextCompletionsPredictor(_Predictor):
    """Like ``ChatCompletionsPredictor`` for text completions of a ``prompt`` column."""

    kind = "completion"
    default_column = "prompt"


# -- OpenAI batch files on a Ray cluster: gen-ai batch --ray IN OUT ---------------------------------


class BatchFilePredictor:
    """Callable class for ``map_batches`` over the lines of an OpenAI Batch API input: rows with
    a ``text`` column (JSONL lines, ``ray.data.read_text``) or ``custom_id``/``url``/``body``
    columns (Parquet; ``body`` a JSON string or a struct). Each actor appends the results of its
    rows to a ``part-<actor>-<call>.jsonl`` file in ``output_dir`` through ``arun_batch_file`` (one
    line per result as it completes, the same checkpointing as a local batch file), and returns
    one row per input line: ``custom_id`` and ``ok``."""

    def __init__(self, output_dir: str, provider: str = "openai", endpoint: Any = None,
                 model_name: str | None = None, *, api_key: str | None = None,
                 client_options: dict[str, Any] | None = None, max_concurrent: int = 16, timeout: float | None = None,
                 max_tokens: int = 256, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, use_body_model: bool = False, fsync: bool = False,
                 limits_name: str | None = None) -> None:
        import os
        import uuid

        self.client = create_client(provider=provider, api_key=api_key, endpoint=endpoint, model_name=model_name,
                                    **(client_options or {}))
        os.makedirs(output_dir, exist_ok=True)
        # One output file per call (block of rows): a small file, written once, never re-read.
        self.prefix = os.path.join(output_dir, f"part-{uuid.uuid4().hex[:16]}")
        self.calls = 0
        self.scratch = self.prefix + ".in"
        self.limiter: Any = None
        if requests_per_minute or tokens_per_minute:
            name = limits_name or job_limits_name(endpoint, model_name, requests_per_minute, tokens_per_minute)
            self.limiter = RemoteLimits(shared_limits_actor(name, requests_per_minute, tokens_per_minute))
        self.options: dict[str, Any] = dict(max_concurrent=max_concurrent, timeout=timeout, max_tokens=max_tokens,
                                            use_body_model=use_body_model, fsync=fsync, progress=False,
                                            retry_failed=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gen_ai-ray-file", daemon=True)
        self._thread.start()

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        import json

        columns = {name: list(values) for name, values in batch.items()}
        lines: list[bytes] = []
        if "text" in columns:
            lines = [(v if isinstance(v, str) else v.decode()).encode() for v in columns["text"] if str(v).strip()]
        else:
            methods = columns.get("method") or ["POST"] * len(columns["url"])
            for custom_id, url, body, method in zip(columns["custom_id"], columns["url"], columns["body"], methods,
                                                    strict=True):
                body = json.loads(body) if isinstance(body, (str, bytes)) else _plain(body)
                lines.append(json.dumps({"custom_id": custom_id, "method": method, "url": url, "body": body},
                                        ensure_ascii=False).encode())
        ids = [json.loads(line).get("custom_id") for line in lines]
        with open(self.scratch, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
        self.calls += 1
        output = f"{self.prefix}-{self.calls:06d}.jsonl"
        coro = _arun_file(self.client, self.scratch, output, self.limiter, self.options)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        failed = _failed_ids(output)
        return {"custom_id": ids, "ok": [cid not in failed for cid in ids]}

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.client.aclose(), loop).result(5)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)


async def _arun_file(client: Any, scratch: str, output: str, limiter: Any, options: dict[str, Any]) -> Any:
    from .batch.files import arun_batch_file

    return await arun_batch_file(client, scratch, output, rate_limiter=limiter, **options)


def _failed_ids(path: str) -> set[str]:
    import json

    failed: set[str] = set()
    with open(path, "rb") as f:
        for raw in f:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if obj.get("error") is not None:
                failed.add(obj.get("custom_id"))
    return failed


def run_batch_file_on_ray(input: str, output_dir: str, *, concurrency: int = 2, rows_per_call: int = 256,
                          retry_failed: bool = True, num_cpus: float = 0.25,
                          **predictor_options: Any) -> dict[str, int]:
    """Run an OpenAI Batch API file (JSONL, or Parquet with custom_id/url/body columns) on the
    Ray cluster ``ray.init()`` connects to, into ``output_dir`` (OpenAI batch output lines in
    ``part-*.jsonl`` files). Rerun the same call after a failed or killed job: the lines already
    in ``output_dir`` are kept (half-written last lines repaired; failed ones dropped and sent
    again with ``retry_failed``), and only the custom_ids without a result are sent.
    ``predictor_options`` are ``BatchFilePredictor``'s (provider, endpoint, model_name, ...).
    Each actor asks for ``num_cpus`` (default 0.25: it waits on the network, it does not compute).
    Returns counts: ``items``, ``skipped``, ``succeeded``, ``failed``."""
    import glob
    import os

    import ray

    from .batch.checkpoint import _recover_output

    is_parquet = input.endswith(".parquet") or os.path.isdir(input)
    done: set[str] = set()
    for part in sorted(glob.glob(os.path.join(output_dir, "part-*.jsonl"))):
        ids, _ = _recover_output(part, retry_failed)
        done |= ids
    if is_parquet:
        ds = ray.data.read_parquet(input)
        total = ds.count()
        pending = ds.filter(lambda row: row["custom_id"] not in done) if done else ds
    else:
        from .batch.fileformat import _validate

        ids_in_file = _validate(input)  # every problem of the file, before anything is sent
        total = len(ids_in_file)
        todo = {cid for cid in ids_in_file if cid not in done}
        ds = ray.data.read_text(input)

        def keep(row: dict[str, Any]) -> bool:
            import json

            text = row["text"]
            return bool(text.strip()) and json.loads(text)["custom_id"] in todo

        pending = ds.filter(keep) if done else ds.filter(lambda row: bool(row["text"].strip()))
    skipped = sum(1 for cid in done) if is_parquet else total - len(todo)
    rows = pending.map_batches(BatchFilePredictor, fn_constructor_args=(output_dir,),
                               fn_constructor_kwargs=predictor_options, concurrency=concurrency,
                               batch_size=rows_per_call, num_cpus=num_cpus).take_all()
    succeeded = sum(1 for r in rows if r["ok"])
    return {"items": total, "skipped": skipped, "succeeded": succeeded, "failed": len(rows) - succeeded}
