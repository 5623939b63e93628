"""List batches: ``run_chat_completions_batch`` / ``run_completions_batch`` and async twins."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import InvalidInputError
from ..types import Call
from .engine import _check_max_concurrent, _Engine, _run_in_private_loop, _with_transport, call_timeout
from .limits import _positive
from .progress import _Progress
from .stats import BatchResults, BatchStats

logger = logging.getLogger("gen_ai")


def _list_batch_setup(client: Any, kind: str, inputs: Any, max_tokens: Any, temperature: Any, top_p: Any,
                      n: Any, timeout: Any, guided_json: Any, max_concurrent: Any, progress: Any,
                      requests_per_minute: Any, tokens_per_minute: Any, schema_retries: Any,
                      extra: dict[str, Any], rate_limiter: Any = None) -> tuple[Any, ...]:
    if isinstance(inputs, (str, bytes, dict)) or not hasattr(inputs, "__iter__"):
        what = "message lists" if kind == "chat" else "prompt strings"
        raise InvalidInputError(f"batch: expected a list of {what}, got {type(inputs).__name__}",
                                field="messages" if kind == "chat" else "prompts")
    items = list(inputs)
    timeout = call_timeout(client, timeout)
    client.validate_params(max_tokens, temperature, top_p, n, timeout)
    _check_max_concurrent(max_concurrent)
    rpm = _positive("requests_per_minute", requests_per_minute)
    tpm = _positive("tokens_per_minute", tokens_per_minute)
    stats = BatchStats(len(items))
    prog = _Progress(progress, len(items), stats)
    results: list[Any] = [None] * len(items)
    errors: list[dict[str, Any] | None] = [None] * len(items)

    def build(source: Any) -> Call:
        call: Call = client.build_call(kind, source, max_tokens, temperature, top_p, n, timeout, guided_json,
                                  schema_retries, False, dict(extra))
        return call

    def on_done(index: int, source: Any, result: Any, error: dict[str, Any] | None) -> None:
        results[index] = result
        if error is not None:
            errors[index] = error
            logger.warning("gen_ai: batch item %d failed: %s: %s", index, error.get("type"),
                           str(error.get("message"))[:200])

    engine = _Engine(client, min(max_concurrent, max(1, len(items))), rpm, tpm, prog, stats)
    engine.gate.shared = rate_limiter
    return items, engine, build, on_done, results, errors, stats, prog


def _list_batch_result(results: list[Any], errors: list[dict[str, Any] | None], stats: BatchStats,
                       prog: _Progress, start: float, return_error: bool) -> Any:
    stats.elapsed = time.monotonic() - start
    if prog.active:
        prog.update(finished=True)
    out = BatchResults(results, errors, stats)
    return (out, errors) if return_error else out


def run_batch(client: Any, kind: str, inputs: Any, *, max_tokens: int = 256, temperature: float = 0,
              top_p: float = 1.0, n: int = 1, timeout: float | None = None, guided_json: Any = None,
              concurrent: bool = True, max_concurrent: int = 5, return_error: bool = False,
              progress: Any = None, requests_per_minute: float | None = None,
              tokens_per_minute: float | None = None, schema_retries: int | None = None,
              rate_limiter: Any = None, **extra: Any) -> Any:
    """The sync list batch behind ``Client.run_chat_completions_batch`` / ``run_completions_batch``."""
    start = time.monotonic()
    items, engine, build, on_done, results, errors, stats, prog = _list_batch_setup(
        client, kind, inputs, max_tokens, temperature, top_p, n, timeout, guided_json, max_concurrent,
        progress, requests_per_minute, tokens_per_minute, schema_retries, extra, rate_limiter)
    if items:
        if concurrent:
            def make() -> Any:
                return _with_transport(client, engine.max_concurrent, True,
                                       lambda t: engine.run_async(iter(enumerate(items)), build, on_done, t))
            _run_in_private_loop(make)
        else:
            engine.run_sync(iter(enumerate(items)), build, on_done)
    return _list_batch_result(results, errors, stats, prog, start, return_error)


async def arun_batch(client: Any, kind: str, inputs: Any, *, max_tokens: int = 256, temperature: float = 0,
                     top_p: float = 1.0, n: int = 1, timeout: float | None = None, guided_json: Any = None,
                     concurrent: bool = True, max_concurrent: int = 5, return_error: bool = False,
                     progress: Any = None, requests_per_minute: float | None = None,
                     tokens_per_minute: float | None = None, schema_retries: int | None = None,
                     rate_limiter: Any = None, **extra: Any) -> Any:
    """The async list batch, on the client's own async pool (sized up to ``max_concurrent``).
    ``concurrent=False`` sends one item at a time."""
    start = time.monotonic()
    items, engine, build, on_done, results, errors, stats, prog = _list_batch_setup(
        client, kind, inputs, max_tokens, temperature, top_p, n, timeout, guided_json,
        max_concurrent if concurrent else 1, progress, requests_per_minute, tokens_per_minute,
        schema_retries, extra, rate_limiter)
    if items:
        await _with_transport(client, engine.max_concurrent, False,
                              lambda t: engine.run_async(iter(enumerate(items)), build, on_done, t))
    return _list_batch_result(results, errors, stats, prog, start, return_error)


