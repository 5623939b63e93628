"""Embedding batches: ``run_embeddings_batch`` / ``arun_embeddings_batch``.

The texts are checked once, split into requests of ``batch_size`` texts, and each request is one
engine item: the same workers, rate limits, 429 pause, adaptive concurrency and progress as chat
batches. The result has one vector per text (None for the texts of a request that failed, with
the error at the same index of ``.errors``); ``stats`` count requests.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import _core
from ..types import EmbeddingCall
from .engine import _check_max_concurrent, _Engine, _run_in_private_loop, _with_transport, call_timeout
from .limits import _positive
from .progress import _Progress
from .stats import BatchResults, BatchStats

logger = logging.getLogger("gen_ai")


def _setup(client: Any, texts: Any, dimensions: Any, timeout: Any, batch_size: Any, max_concurrent: Any,
           progress: Any, requests_per_minute: Any, tokens_per_minute: Any, as_numpy: Any,
           extra: dict[str, Any], rate_limiter: Any = None) -> tuple[Any, ...]:
    call = client.embedding_call(texts, dimensions, call_timeout(client, timeout), as_numpy, batch_size, 1, extra)
    _check_max_concurrent(max_concurrent)
    rpm = _positive("requests_per_minute", requests_per_minute)
    tpm = _positive("tokens_per_minute", tokens_per_minute)
    chunks = _core.embedding_chunks(client.codec, call)
    items: list[tuple[int, tuple[int, EmbeddingCall]]] = []
    start = 0
    for i, chunk in enumerate(chunks):
        items.append((i, (start, chunk)))
        start += len(chunk.inputs)
    stats = BatchStats(len(chunks))
    prog = _Progress(progress, len(chunks), stats)
    results: list[Any] = [None] * len(call.inputs)
    errors: list[dict[str, Any] | None] = [None] * len(call.inputs)

    def build(payload: tuple[int, EmbeddingCall]) -> EmbeddingCall:
        return payload[1]

    def on_done(index: int, payload: tuple[int, EmbeddingCall], result: Any, error: dict[str, Any] | None) -> None:
        first, chunk = payload
        count = len(chunk.inputs)
        if error is None:
            results[first:first + count] = list(result)
        else:
            for j in range(first, first + count):
                errors[j] = error
            logger.warning("gen_ai: embeddings batch request %d (texts %d-%d) failed: %s: %s", index, first,
                           first + count - 1, error.get("type"), str(error.get("message"))[:200])

    engine = _Engine(client, min(max_concurrent, len(chunks)), rpm, tpm, prog, stats)
    engine.gate.shared = rate_limiter  # gen_ai.ray_data: limits shared by the job's actors
    return items, engine, build, on_done, results, errors, stats, prog


def _finish(results: list[Any], errors: list[dict[str, Any] | None], stats: BatchStats, prog: _Progress,
            start: float, return_error: bool) -> Any:
    stats.elapsed = time.monotonic() - start
    if prog.active:
        prog.update(finished=True)
    out = BatchResults(results, errors, stats)
    return (out, errors) if return_error else out


def run_embeddings_batch(client: Any, texts: Any, *, dimensions: int | None = None, timeout: float | None = None,
                         batch_size: int | None = None, max_concurrent: int = 8, return_error: bool = False,
                         progress: Any = None, requests_per_minute: float | None = None,
                         tokens_per_minute: float | None = None, as_numpy: bool = False, rate_limiter: Any = None,
                         **extra: Any) -> Any:
    """The sync embeddings batch (a private event loop and pool, like the chat batches)."""
    start = time.monotonic()
    items, engine, build, on_done, results, errors, stats, prog = _setup(
        client, texts, dimensions, timeout, batch_size, max_concurrent, progress, requests_per_minute,
        tokens_per_minute, as_numpy, extra, rate_limiter)

    def make() -> Any:
        return _with_transport(client, engine.max_concurrent, True,
                               lambda t: engine.run_async(iter(items), build, on_done, t))

    _run_in_private_loop(make)
    return _finish(results, errors, stats, prog, start, return_error)


async def arun_embeddings_batch(client: Any, texts: Any, *, dimensions: int | None = None, timeout: float | None = None,
                                batch_size: int | None = None, max_concurrent: int = 8,
                                return_error: bool = False, progress: Any = None,
                                requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                                as_numpy: bool = False, rate_limiter: Any = None, **extra: Any) -> Any:
    """The async embeddings batch, on the client's own async pool. ``rate_limiter``: limits
    shared with other processes (``gen_ai.ray_data``), as for the list batches."""
    start = time.monotonic()
    items, engine, build, on_done, results, errors, stats, prog = _setup(
        client, texts, dimensions, timeout, batch_size, max_concurrent, progress, requests_per_minute,
        tokens_per_minute, as_numpy, extra, rate_limiter)
    await _with_transport(client, engine.max_concurrent, False,
                          lambda t: engine.run_async(iter(items), build, on_done, t))
    return _finish(results, errors, stats, prog, start, return_error)
