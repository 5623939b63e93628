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
block of rows (a dict of columns, a pandas DataFrame or a pyarrow Table) and returns the same
rows with four more columns: ``answer`` (str, None when the row failed), ``prompt_tokens``,
``completion_tokens`` (ints, 0 when unknown) and ``error`` (None, or "ErrorType: message").
A failed row never fails the block. Use ``TextCompletionsPredictor`` for a ``prompt`` column
and ``EmbeddingsPredictor`` for a ``text`` column (``embedding`` and ``error`` out).
``run_batch_file_on_ray`` runs an OpenAI batch file on the cluster (``gen-ai batch --ray``),
resumably, into JSONL or Parquet. See docs/ray.md (resuming a dataset run included).

Ray is never imported at import time here: Ray imports this module, not the other way round. Install with
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


class _Actor:
    """What every callable class here holds for its actor's life: one client, the job's shared
    limits (or None) and one event loop in a helper thread, so the aiohttp connection pool is
    reused from block to block."""

    def _start(self, provider: str, endpoint: Any, model_name: str | None, api_key: str | None,
               client_options: dict[str, Any] | None, requests_per_minute: float | None,
               tokens_per_minute: float | None, shared_limits: bool,
               limits_name: str | None) -> tuple[float | None, float | None]:
        """Returns the limits left for the actor's own batches: none when they are shared."""
        self.client = create_client(provider=provider, api_key=api_key, endpoint=endpoint, model_name=model_name,
                                    **(client_options or {}))
        self.limiter: Any = None
        if shared_limits and (requests_per_minute or tokens_per_minute):
            # One set of buckets for every actor of the job (a named Ray actor), not one per actor.
            name = limits_name or job_limits_name(endpoint, model_name, requests_per_minute, tokens_per_minute)
            self.limiter = RemoteLimits(shared_limits_actor(name, requests_per_minute, tokens_per_minute))
            requests_per_minute = tokens_per_minute = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gen_ai-ray", daemon=True)
        self._thread.start()
        return requests_per_minute, tokens_per_minute

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.client.aclose(), loop).result(5)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)


class _Predictor(_Actor):
    """A block of rows in (a dict of columns, a pandas DataFrame or a pyarrow Table), the same
    rows out with the columns ``_predict`` adds. These are Arrow arrays of a fixed type, so every
    block has the same schema (a block whose ``error`` values are all None is still a string
    column, not Arrow's null type that a Parquet dataset of such blocks cannot be read back with)."""

    default_column = "messages"
    input_column = "messages"

    def __call__(self, batch: Any) -> Any:
        if hasattr(batch, "append_column"):  # pyarrow.Table
            names = list(batch.column_names)
            column = batch[self.input_column].to_pylist() if self.input_column in names else None
        elif hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas
            names = list(batch.columns)
            column = list(batch[self.input_column]) if self.input_column in names else None
        else:
            batch = dict(batch)
            names = list(batch)
            column = list(batch[self.input_column]) if self.input_column in names else None
        if column is None:
            raise KeyError(f"gen_ai: the batch has no {self.input_column!r} column "
                           f"(columns: {', '.join(names)}); pass input_column=...")
        added = self._predict([_plain(v) for v in column])
        if hasattr(batch, "append_column"):
            for name, values in added.items():
                batch = (batch.set_column(names.index(name), name, values) if name in names
                         else batch.append_column(name, values))
            return batch
        if isinstance(batch, dict):
            batch.update(added)
            return batch
        import pandas as pd

        frame = batch.copy()
        for name, values in added.items():
            frame[name] = pd.Series(pd.arrays.ArrowExtensionArray(values), index=frame.index)
        return frame

    def _predict(self, inputs: list[Any]) -> dict[str, Any]:
        """The new columns, as pyarrow arrays."""
        raise NotImplementedError


def _error_text(error: dict[str, Any] | None) -> str | None:
    return None if error is None else f"{error['type']}: {error['message']}"


class _CompletionsPredictor(_Predictor):
    kind = "chat"

    def __init__(self, provider: str = "openai", endpoint: Any = None, model_name: str | None = None,
                 *, api_key: str | None = None, input_column: str | None = None,
                 output_column: str = "answer", max_concurrent: int = 16, max_tokens: int = 256,
                 temperature: float = 0, top_p: float = 1.0, timeout: float | None = None,
                 requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 client_options: dict[str, Any] | None = None, shared_limits: bool = True,
                 limits_name: str | None = None, **extra: Any) -> None:
        rpm, tpm = self._start(provider, endpoint, model_name, api_key, client_options, requests_per_minute,
                               tokens_per_minute, shared_limits, limits_name)
        self.input_column = input_column or self.default_column
        self.output_column = output_column
        self.options: dict[str, Any] = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                            timeout=timeout, max_concurrent=max_concurrent,
                                            requests_per_minute=rpm, tokens_per_minute=tpm, progress=False,
                                            return_error=True, **extra)

    def _predict(self, inputs: list[Any]) -> dict[str, Any]:
        import pyarrow as pa

        from .batch import arun_batch

        results, errors = self._run(arun_batch(self.client, self.kind, inputs, rate_limiter=self.limiter,
                                               **self.options))
        usage = [r.usage if r is not None else None for r in results]
        return {self.output_column: pa.array([None if r is None else str(r) for r in results], pa.string()),
                "prompt_tokens": pa.array([u.prompt_tokens if u else 0 for u in usage], pa.int64()),
                "completion_tokens": pa.array([u.completion_tokens if u else 0 for u in usage], pa.int64()),
                "error": pa.array([_error_text(e) for e in errors], pa.string())}


class ChatCompletionsPredictor(_CompletionsPredictor):
    """Callable class for ``Dataset.map_batches``: the ``messages`` column (a list of chat
    messages per row) in; ``answer``, ``prompt_tokens``, ``completion_tokens``, ``error`` out.
    Constructor: ``create_client`` arguments (``provider``, ``endpoint``, ``model_name``,
    ``api_key``, ``client_options``), then the batch options (``max_concurrent``,
    ``max_tokens``, ``temperature``, ``top_p``, ``timeout``, ``requests_per_minute``,
    ``tokens_per_minute``, extra body fields), ``input_column`` and ``output_column``."""

    kind = "chat"
    default_column = "messages"


class TextCompletionsPredictor(_CompletionsPredictor):
    """Like ``ChatCompletionsPredictor`` for text completions of a ``prompt`` column."""

    kind = "completion"
    default_column = "prompt"


class EmbeddingsPredictor(_Predictor):
    """Callable class for ``Dataset.map_batches``: the ``text`` column (one string per row) in;
    ``embedding`` (Arrow ``list<float32>``, None when the row failed) and ``error`` (None, or
    "ErrorType: message") out. Each block's texts go out as requests of ``texts_per_request``
    texts (default: the provider's), ``max_concurrent`` at a time, through the embeddings batch:
    a failed request gives its texts the error, a text the provider rejects before sending (an
    empty string, a null) gets its own error, and neither fails the block. Constructor: as
    ``ChatCompletionsPredictor`` (client arguments, ``max_concurrent``, ``timeout``, the shared
    ``requests_per_minute``/``tokens_per_minute``), plus ``dimensions`` and extra body fields."""

    default_column = "text"

    def __init__(self, provider: str = "openai", endpoint: Any = None, model_name: str | None = None,
                 *, api_key: str | None = None, input_column: str | None = None,
                 output_column: str = "embedding", dimensions: int | None = None,
                 texts_per_request: int | None = None, max_concurrent: int = 8, timeout: float | None = None,
                 requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 client_options: dict[str, Any] | None = None, shared_limits: bool = True,
                 limits_name: str | None = None, **extra: Any) -> None:
        rpm, tpm = self._start(provider, endpoint, model_name, api_key, client_options, requests_per_minute,
                               tokens_per_minute, shared_limits, limits_name)
        self.input_column = input_column or self.default_column
        self.output_column = output_column
        self.dimensions = dimensions
        self.extra = extra
        self.options: dict[str, Any] = dict(dimensions=dimensions, timeout=timeout, batch_size=texts_per_request,
                                            max_concurrent=max_concurrent, requests_per_minute=rpm,
                                            tokens_per_minute=tpm, progress=False, return_error=True, **extra)

    def _predict(self, inputs: list[Any]) -> dict[str, Any]:
        import pyarrow as pa

        from .errors import InvalidInputError

        vectors: list[Any] = [None] * len(inputs)
        errors: list[str | None] = [None] * len(inputs)
        sent = list(range(len(inputs)))
        try:
            results, found = self._embed(inputs)
        except InvalidInputError:
            # A text the provider rejects (checked before anything is sent; or no rows at all):
            # those rows get the error, the others are sent. Bad options fail the block.
            self.client.embedding_call(["x"], self.dimensions, None, False, None, 1, self.extra)
            sent = []
            for i, text in enumerate(inputs):
                try:
                    self.client.embedding_call([text], self.dimensions, None, False, None, 1, self.extra)
                    sent.append(i)
                except InvalidInputError as exc:  # "texts[0]: ..." names the one-text check, not the row
                    errors[i] = f"InvalidInputError: {exc.message.removeprefix('texts[0]: ')}"
            results, found = self._embed([inputs[i] for i in sent]) if sent else ([], [])
        for i, vector, error in zip(sent, results, found, strict=True):
            vectors[i] = None if vector is None else list(vector)
            errors[i] = _error_text(error)
        return {self.output_column: pa.array(vectors, pa.list_(pa.float32())), "error": pa.array(errors, pa.string())}

    def _embed(self, texts: list[Any]) -> Any:
        from .batch import arun_embeddings_batch

        return self._run(arun_embeddings_batch(self.client, texts, rate_limiter=self.limiter, **self.options))


# -- OpenAI batch files on a Ray cluster: gen-ai batch --ray IN OUT ---------------------------------


class BatchFilePredictor(_Actor):
    """Callable class for ``map_batches`` over the lines of an OpenAI Batch API input: rows with
    a ``text`` column (JSONL lines, ``ray.data.read_text``) or ``custom_id``/``url``/``body``
    columns (Parquet; ``body`` a JSON string or a struct). Each call (a block of rows) runs
    through ``arun_batch_file`` into a new part file of ``output_dir``: one line per result as it
    completes, the same checkpointing as a local batch file. With ``output_format="parquet"`` the
    lines go to ``_part-<actor>-<call>.jsonl`` and the finished call becomes
    ``part-<actor>-<call>.parquet`` (see ``_to_parquet``); else the part file is
    ``part-<actor>-<call>.jsonl``. Returns one row per input line: ``custom_id`` and ``ok``."""

    def __init__(self, output_dir: str, provider: str = "openai", endpoint: Any = None,
                 model_name: str | None = None, *, api_key: str | None = None,
                 client_options: dict[str, Any] | None = None, max_concurrent: int = 16, timeout: float | None = None,
                 max_tokens: int = 256, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, use_body_model: bool = False, fsync: bool = False,
                 limits_name: str | None = None, output_format: str = "jsonl") -> None:
        import os
        import uuid

        self._start(provider, endpoint, model_name, api_key, client_options, requests_per_minute, tokens_per_minute,
                    True, limits_name)
        os.makedirs(output_dir, exist_ok=True)
        # One output file per call (block of rows): a small file, written once, never re-read.
        self.output_dir = output_dir
        self.name = f"part-{uuid.uuid4().hex[:16]}"
        self.calls = 0
        self.parquet = _check_format(output_format) == "parquet"
        self.options: dict[str, Any] = dict(max_concurrent=max_concurrent, timeout=timeout, max_tokens=max_tokens,
                                            use_body_model=use_body_model, fsync=fsync, progress=False,
                                            retry_failed=True,
                                            # the actor's loop is gen_ai's own: each block gets a
                                            # private pool (the lean HTTP client, docs/batch.md)
                                            _private=True)

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        import json
        import os
        import tempfile

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
        self.calls += 1
        name = f"{self.name}-{self.calls:06d}"
        part = os.path.join(self.output_dir, name)
        output = os.path.join(self.output_dir, f"_{name}.jsonl") if self.parquet else part + ".jsonl"
        fd, scratch = tempfile.mkstemp(prefix="gen_ai-ray-", suffix=".jsonl")  # the block's input lines
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\n".join(lines) + b"\n")
            from .batch.files import arun_batch_file

            self._run(arun_batch_file(self.client, scratch, output, rate_limiter=self.limiter, **self.options))
        finally:
            os.remove(scratch)
        failed = _to_parquet(output, part + ".parquet", self.options["fsync"]) if self.parquet else _failed_ids(output)
        return {"custom_id": ids, "ok": [cid not in failed for cid in ids]}


def _check_format(output_format: str) -> str:
    if output_format not in ("jsonl", "parquet"):
        raise ValueError(f"output_format: must be 'jsonl' or 'parquet', got {output_format!r}")
    return output_format


def _records(path: str) -> Any:
    """The complete result lines of a part file, parsed (a half-written last line is skipped)."""
    import json

    with open(path, "rb") as f:
        for raw in f:
            try:
                yield json.loads(raw)
            except ValueError:
                continue


def _failed_ids(path: str) -> set[str]:
    return {obj.get("custom_id") for obj in _records(path) if obj.get("error") is not None}


def _parquet_schema() -> Any:
    """OpenAI batch output lines as columns; ``response.body`` is the body's JSON text."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("custom_id", pa.string()),
                      ("response", pa.struct([("status_code", pa.int64()), ("request_id", pa.string()),
                                              ("body", pa.string())])),
                      ("error", pa.struct([("code", pa.string()), ("message", pa.string())]))])


def _write_parquet(table: Any, path: str, fsync: bool) -> None:
    """Written under a name Parquet readers skip (leading ``_``), then renamed: a reader or a
    killed job never sees half a file."""
    import os

    import pyarrow.parquet as pq

    tmp = os.path.join(os.path.dirname(path), "_" + os.path.basename(path) + ".tmp")
    pq.write_table(table, tmp)
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, path)


def _to_parquet(jsonl: str, path: str, fsync: bool = False) -> set[str]:
    """A finished JSONL part file -> ``path`` (Parquet, ``_parquet_schema``), then the JSONL goes.
    Returns the custom_ids whose result is an error."""
    import json
    import os

    import pyarrow as pa

    rows, failed = [], set()
    for obj in _records(jsonl):
        response = obj.get("response")
        if response is not None:
            response = {**response, "body": json.dumps(response.get("body"), ensure_ascii=False)}
        rows.append({"id": obj.get("id"), "custom_id": obj.get("custom_id"), "response": response,
                     "error": obj.get("error")})
        if obj.get("error") is not None:
            failed.add(obj.get("custom_id"))
    if rows:
        _write_parquet(pa.Table.from_pylist(rows, schema=_parquet_schema()), path, fsync)
    os.remove(jsonl)
    return failed


def _recover_parquet(path: str, retry_failed: bool) -> set[str]:
    """The custom_ids of a Parquet part file that need no request; with ``retry_failed`` the
    failed rows are removed from the file (they are sent again), as ``_recover_output`` does for
    JSONL."""
    import os

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    ok = table["error"].is_null()
    if retry_failed and not pc.all(ok).as_py():
        table = table.filter(ok)
        if table.num_rows:
            _write_parquet(table, path, False)
        else:
            os.remove(path)
    return set(table["custom_id"].to_pylist())


def _recover_parts(output_dir: str, parquet: bool, retry_failed: bool) -> set[str]:
    """What an earlier run of ``run_batch_file_on_ray`` left in ``output_dir``: the custom_ids
    with a result kept. Parquet: a JSONL part an actor was writing when the job died is repaired
    and converted (or removed, if its Parquet file was written already)."""
    import glob
    import os

    from .batch.checkpoint import _recover_output

    done: set[str] = set()
    if not parquet:
        for part in sorted(glob.glob(os.path.join(output_dir, "part-*.jsonl"))):
            done |= _recover_output(part, retry_failed)[0]
        return done
    for jsonl in sorted(glob.glob(os.path.join(output_dir, "_part-*.jsonl"))):
        path = os.path.join(output_dir, os.path.basename(jsonl)[1:-len(".jsonl")] + ".parquet")
        if os.path.exists(path):  # killed between writing the Parquet file and removing the JSONL
            os.remove(jsonl)
        else:
            _recover_output(jsonl, retry_failed)
            _to_parquet(jsonl, path)
    for part in sorted(glob.glob(os.path.join(output_dir, "part-*.parquet"))):
        done |= _recover_parquet(part, retry_failed)
    return done


def run_batch_file_on_ray(input: str, output_dir: str, *, concurrency: int = 2, rows_per_call: int = 256,
                          retry_failed: bool = True, num_cpus: float = 0.25, output_format: str | None = None,
                          **predictor_options: Any) -> dict[str, int]:
    """Run an OpenAI Batch API file (JSONL, or Parquet with custom_id/url/body columns) on the
    Ray cluster ``ray.init()`` connects to, into ``output_dir``: OpenAI batch output lines in
    ``part-*.jsonl`` files, or rows in ``part-*.parquet`` files when ``output_dir`` ends in
    ``.parquet`` or ``output_format="parquet"`` (columns id, custom_id, response{status_code,
    request_id, body (JSON text)}, error{code, message}). Rerun the same call after a failed or
    killed job: the results already in ``output_dir`` are kept (half-written last lines repaired;
    failed ones dropped and sent again with ``retry_failed``), and only the custom_ids without a
    result are sent. ``predictor_options`` are ``BatchFilePredictor``'s (provider, endpoint,
    model_name, ...). Each actor asks for ``num_cpus`` (default 0.25: it waits on the network,
    it does not compute). Returns counts: ``items``, ``skipped``, ``succeeded``, ``failed``."""
    import os

    import ray

    fmt = _check_format(output_format or ("parquet" if output_dir.rstrip("/").endswith(".parquet") else "jsonl"))
    is_parquet = input.endswith(".parquet") or os.path.isdir(input)
    done = _recover_parts(output_dir, fmt == "parquet", retry_failed)
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
                               fn_constructor_kwargs={**predictor_options, "output_format": fmt},
                               concurrency=concurrency, batch_size=rows_per_call, num_cpus=num_cpus).take_all()
    succeeded = sum(1 for r in rows if r["ok"])
    return {"items": total, "skipped": skipped, "succeeded": succeeded, "failed": len(rows) - succeeded}
