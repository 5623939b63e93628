"""Batch files: ``run_batch_file`` / ``arun_batch_file`` (OpenAI Batch API input -> output)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from .._speedups import json_codec
from ..errors import InvalidInputError
from ..types import Call, EmbeddingCall
from .checkpoint import _recover_output, _Writer, _WriterThread
from .engine import _check_max_concurrent, _Engine, _RelaxedGC, _run_in_private_loop, _with_transport, call_timeout
from .fileformat import _call_from_body, _output_line, _PendingReader, _validate
from .limits import _positive
from .progress import _Progress
from .stats import BatchStats

logger = logging.getLogger("gen_ai")


def _preimport_async_http() -> None:
    """Import aiohttp here, in the setup thread: importing it on the loop at the first send
    stalls the loop for about 100 ms."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:  # the in-process provider needs none
        pass


def _file_batch_setup(client: Any, input_path: Any, output_path: Any, max_concurrent: Any, timeout: Any,
                      max_tokens: Any, progress: Any, requests_per_minute: Any, tokens_per_minute: Any,
                      retry_failed: bool, use_body_model: bool, fsync: bool) -> tuple[Any, ...]:
    input_path, output_path = os.fspath(input_path), os.fspath(output_path)
    _check_max_concurrent(max_concurrent)
    _preimport_async_http()
    rpm = _positive("requests_per_minute", requests_per_minute)
    tpm = _positive("tokens_per_minute", tokens_per_minute)
    timeout = call_timeout(client, timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InvalidInputError(f"timeout: must be a number of seconds > 0, got {timeout!r}", field="timeout")
    ids = _validate(input_path)  # raises before anything is sent
    if os.path.abspath(input_path) == os.path.abspath(output_path):
        raise InvalidInputError("the output file is the input file", field="output")
    writer = _Writer(output_path, fsync)  # locked before recovery: two runs never interleave
    try:
        done, dropped = _recover_output(output_path, retry_failed)
        if dropped:
            writer.reopen()
    except BaseException:
        writer.close()
        raise
    stats = BatchStats(len(ids))
    # Ids in the output that are not in the input do not count as skipped input items.
    stats.skipped = sum(1 for custom_id in done if custom_id in ids)
    prog = _Progress(progress, len(ids), stats)
    model = client.model_name
    verbatim = bool(getattr(client.codec, "openai_response_body", False))
    dumps = json_codec()[1]

    def build(payload: tuple[str, dict[str, Any]]) -> Call | EmbeddingCall:
        kind, body = payload
        return _call_from_body(client, kind, body, timeout, max_tokens, use_body_model)

    def line(custom_id: str, payload: tuple[str, dict[str, Any]], result: Any,
             error: dict[str, Any] | None) -> bytes:
        return _output_line(custom_id, payload[0], result, error, model, payload[1], verbatim, dumps)

    return input_path, done, writer, stats, prog, build, line, rpm, tpm


def run_batch_file(client: Any, input: Any, output: Any, *, max_concurrent: int = 16, timeout: float | None = None,
                   max_tokens: int = 256, progress: Any = None, requests_per_minute: float | None = None,
                   tokens_per_minute: float | None = None, retry_failed: bool = True,
                   use_body_model: bool = False, fsync: bool = False) -> BatchStats:
    """Run an OpenAI Batch API input file and append results to ``output``; resumable.
    See ``docs/batch.md``. Returns the ``BatchStats`` of this run."""
    stats: BatchStats = _run_in_private_loop(lambda: arun_batch_file(
        client, input, output, max_concurrent=max_concurrent, timeout=timeout, max_tokens=max_tokens,
        progress=progress, requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
        retry_failed=retry_failed, use_body_model=use_body_model, fsync=fsync, _private=True))
    return stats


async def arun_batch_file(client: Any, input: Any, output: Any, *, max_concurrent: int = 16,
                          timeout: float | None = None, max_tokens: int = 256, progress: Any = None,
                          requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                          retry_failed: bool = True, use_body_model: bool = False, fsync: bool = False,
                          _private: bool = False, rate_limiter: Any = None) -> BatchStats:
    # The relaxed collector covers the setup too: reading a big input in a thread allocates
    # millions of objects, and a full collection (100-200 ms in a large process) holds the GIL
    # the event loop needs.
    with _RelaxedGC():
        return await _arun_batch_file(client, input, output, max_concurrent, timeout, max_tokens, progress,
                                      requests_per_minute, tokens_per_minute, retry_failed, use_body_model,
                                      fsync, _private, rate_limiter)


async def _arun_batch_file(client: Any, input: Any, output: Any, max_concurrent: int, timeout: float | None,
                           max_tokens: int, progress: Any, requests_per_minute: float | None,
                           tokens_per_minute: float | None, retry_failed: bool, use_body_model: bool,
                           fsync: bool, _private: bool, rate_limiter: Any = None) -> BatchStats:
    import asyncio

    start = time.monotonic()
    loop = asyncio.get_running_loop()
    # Every file read, write and fsync happens in a thread: validating and recovering here, the
    # input by _PendingReader, the output by _WriterThread. The loop only sends and parses.
    input_path, done, writer, stats, prog, build, line, rpm, tpm = await loop.run_in_executor(
        None, lambda: _file_batch_setup(client, input, output, max_concurrent, timeout, max_tokens, progress,
                                        requests_per_minute, tokens_per_minute, retry_failed,
                                        use_body_model, fsync))
    thread = _WriterThread(writer, loop)
    items = _PendingReader(input_path, done)

    def on_done(custom_id: str, payload: tuple[str, dict[str, Any]], result: Any,
                error: dict[str, Any] | None) -> Any:
        return thread.submit(line(custom_id, payload, result, error))

    try:
        todo = stats.items - stats.skipped
        if stats.skipped:
            logger.info("gen_ai: %s: %d of %d requests already have a result; sending %d",
                        os.fspath(output), stats.skipped, stats.items, todo)
        if todo:
            engine = _Engine(client, min(max_concurrent, todo), rpm, tpm, prog, stats)
            engine.gate.shared = rate_limiter  # gen_ai.ray_data: limits shared by the job's actors
            await _with_transport(client, engine.max_concurrent, _private,
                                  lambda t: engine.run_async(items, build, on_done, t))
    finally:
        items.close()
        # Shielded: a cancelled batch still gets its queued lines written and the file closed.
        await asyncio.shield(loop.run_in_executor(None, thread.close))
    stats.elapsed = time.monotonic() - start
    if prog.active:
        prog.update(finished=True)
    final: BatchStats = stats
    return final


