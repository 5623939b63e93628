"""Many calls at once: ordered results, shared rate limits, adaptive concurrency, progress,
usage totals, and checkpointed JSONL batch files that resume after a crash.

    results = client.run_chat_completions_batch([[{"role": "user", "content": "Hi"}], ...],
                                                max_concurrent=64, requests_per_minute=600)
    results[0]            # a ChatResult (a str), or None if that item failed
    results.errors[0]     # None, or the error dict of that item
    results.stats         # BatchStats: requests, retries, failures, tokens, elapsed ...

    client.run_batch_file("input.jsonl", "output.jsonl")   # OpenAI Batch API files; resumable

How it works. One batch is one event loop running ``max_concurrent`` worker tasks that pull
items from a shared iterator (so a million items cost a million results, not a million
coroutines). Every HTTP request of every worker, retries included, passes one gate:

- a slot in an AIMD limiter: at most ``limit`` requests in flight, ``limit`` starting at
  ``max_concurrent``; halved (at most once per cool-down) when the server answers 429 or 503,
  grown back by about one per ``limit`` successes;
- the shared token buckets of ``requests_per_minute`` and ``tokens_per_minute`` (tokens are
  estimated as prompt characters / 4 + max_tokens * n, then corrected with the real usage);
- a batch-wide pause: a 429 anywhere stops every worker from sending until its Retry-After
  (or backoff delay) has passed, instead of each worker finding out by itself.

Retries, backoff and Retry-After of each request are the single-call flow of ``_core``; the
batch only observes them through ``_core.Observer``.

The sync methods run the async core on a private event loop with a private connection pool
(in a helper thread when the calling thread already runs a loop); ``concurrent=False`` runs the
items one by one on the sync client instead (same rate limits and pauses).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _core
from .errors import GenAIError, InvalidInputError
from .types import Call, ChatResult, ChatResults, Usage

logger = logging.getLogger("gen_ai")

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
_URL_KINDS = {CHAT_URL: "chat", COMPLETIONS_URL: "completion"}
# A 429 or 503 lowers concurrency at most once per this many seconds: a burst of 256 rejections
# answering one overload is one signal, not 256.
_DECREASE_COOLDOWN = 0.5
_PROGRESS_INTERVAL = 0.2


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


class BatchStats:
    """Totals of one batch. ``requests`` counts HTTP requests (retries included); ``retries``
    the retried ones; ``rate_limited`` the 429 answers that were retried; ``min_concurrency``
    the lowest in-flight limit the adaptive limiter went down to."""

    __slots__ = (
        "completion_tokens",
        "elapsed",
        "failed",
        "items",
        "min_concurrency",
        "prompt_tokens",
        "rate_limited",
        "requests",
        "retries",
        "skipped",
        "succeeded",
        "total_tokens",
    )

    def __init__(self, items: int = 0) -> None:
        self.items = items
        self.succeeded = 0
        self.failed = 0
        self.skipped = 0  # batch files: items that already had a result
        self.requests = 0
        self.retries = 0
        self.rate_limited = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0
        self.elapsed = 0.0
        self.min_concurrency = 0

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.total_tokens)

    def add_usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.total_tokens += usage.total_tokens

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return "BatchStats(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"


class BatchResults(list):  # type: ignore[type-arg]
    """The results of a batch, in input order: a plain ``list`` (a ``ChatResult``, a
    ``ChatResults`` for ``n > 1``, or ``None`` for a failed item) with two attributes:
    ``errors`` (one error dict or None per item) and ``stats`` (``BatchStats``)."""

    errors: list[dict[str, Any] | None]
    stats: BatchStats

    def __init__(self, results: Iterable[Any] = (), errors: list[dict[str, Any] | None] | None = None,
                 stats: BatchStats | None = None) -> None:
        super().__init__(results)
        self.errors = errors if errors is not None else [None] * len(self)
        self.stats = stats if stats is not None else BatchStats(len(self))


class BatchProgress:
    """What a ``progress=callable`` hook receives (at most every 0.2 s, and once at the end).
    ``done`` counts finished items, failed and (batch files) already-done ones included."""

    __slots__ = ("done", "elapsed", "eta", "failed", "finished", "rate", "skipped", "stats", "total")

    def __init__(self, total: int, stats: BatchStats, elapsed: float, finished: bool) -> None:
        self.total = total
        self.done = stats.succeeded + stats.failed + stats.skipped
        self.failed = stats.failed
        self.skipped = stats.skipped
        self.elapsed = elapsed
        self.rate = (self.done - self.skipped) / elapsed if elapsed > 0 else 0.0
        left = total - self.done
        self.eta = left / self.rate if self.rate > 0 else None
        self.stats = stats
        self.finished = finished

    def __repr__(self) -> str:
        return (f"BatchProgress(done={self.done}/{self.total}, failed={self.failed}, "
                f"rate={self.rate:.1f}/s, finished={self.finished})")


class _Progress:
    """Throttled progress reporting: a one-line bar on stderr, or the user's callback."""

    def __init__(self, option: Any, total: int, stats: BatchStats) -> None:
        self.total = total
        self.stats = stats
        self.start = time.monotonic()
        self._next = 0.0
        self.callback: Callable[[BatchProgress], Any] | None = None
        self.bar = False
        if callable(option) and not isinstance(option, bool):
            self.callback = option
        elif option is True:
            self.bar = True
        elif option is None:
            self.bar = total > 1 and _stderr_is_tty()
        elif option is not False:
            raise InvalidInputError(f"progress: must be None, True, False or a callable, got {option!r}",
                                    field="progress")
        self.active = self.bar or self.callback is not None

    def update(self, finished: bool = False) -> None:
        now = time.monotonic()
        if not finished and now < self._next:
            return
        self._next = now + _PROGRESS_INTERVAL
        info = BatchProgress(self.total, self.stats, now - self.start, finished)
        if self.callback is not None:
            try:
                self.callback(info)
            except Exception:  # a broken hook must not kill the batch
                logger.exception("gen_ai: the batch progress callback raised")
        if self.bar:
            _draw_bar(info)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def _draw_bar(info: BatchProgress) -> None:
    width = 24
    frac = info.done / info.total if info.total else 1.0
    fill = int(frac * width)
    line = (f"\r[{'#' * fill}{'.' * (width - fill)}] {info.done}/{info.total} {frac:4.0%} "
            f"{info.rate:7.1f}/s ETA {_clock(info.eta)} errors {info.failed}")
    try:
        sys.stderr.write(line + ("\n" if info.finished else ""))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------------------------
# Rate limits, pause and adaptive concurrency
# --------------------------------------------------------------------------------------------


class _Bucket:
    """A token bucket with reservations: a request takes its cost now (the level may go
    negative) and waits out the deficit, so waiters are served in order without polling.
    Holding one second's worth keeps the rate smooth instead of a minute's burst at once."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def reserve(self, cost: float, now: float) -> float:
        level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level = level - cost
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def refund(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


def _positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInputError(f"{name}: must be a number > 0 or None, got {value!r}", field=name)
    return float(value)


class _Gate(_core.Observer):
    """Shared by every worker of one batch: limits, pause, AIMD concurrency and the totals."""

    def __init__(self, max_concurrent: int, rpm: float | None, tpm: float | None, stats: BatchStats) -> None:
        self.max = max_concurrent
        self.limit = float(max_concurrent)
        self.active = 0
        self.waiters: deque[Any] = deque()
        self.requests = _Bucket(rpm) if rpm else None
        self.tokens = _Bucket(tpm) if tpm else None
        self.pause_until = 0.0
        self.next_decrease = 0.0
        self.stats = stats
        stats.min_concurrency = max_concurrent

    # -- observer (called by the call flow before it sleeps for a retry) ---------------------

    def on_retry(self, error: GenAIError, delay: float) -> None:
        stats = self.stats
        stats.retries += 1
        status = error.status_code
        now = time.monotonic()
        if status == 429:
            stats.rate_limited += 1
            if now + delay > self.pause_until:
                self.pause_until = now + delay
                logger.info("gen_ai: batch paused for %.2fs after a 429", delay)
        if status in (429, 503) and now >= self.next_decrease:
            self.next_decrease = now + max(_DECREASE_COOLDOWN, delay)
            self.limit = max(1.0, self.limit / 2)
            stats.min_concurrency = min(stats.min_concurrency, int(self.limit))
            logger.info("gen_ai: batch concurrency lowered to %d after HTTP %s", int(self.limit), status)

    def on_success(self) -> None:
        if self.limit < self.max:
            self.limit = min(float(self.max), self.limit + 1.0 / self.limit)

    # -- rate reservations (no awaiting: shared by the sync and async paths) -----------------

    def reserve(self, cost: float) -> float:
        """Take one request and ``cost`` tokens; return how long to wait before sending."""
        now = time.monotonic()
        delay = self.pause_until - now
        if self.requests is not None:
            delay = max(delay, self.requests.reserve(1.0, now))
        if self.tokens is not None:
            delay = max(delay, self.tokens.reserve(cost, now))
        return delay

    def reconcile(self, estimated: float, usage: Usage | None) -> None:
        """Give back (or take) the difference between the estimate and the real token count."""
        if self.tokens is not None and usage is not None and estimated:
            self.tokens.refund(estimated - usage.total_tokens)

    # -- async slots -------------------------------------------------------------------------

    async def acquire(self, cost: float) -> None:
        if self.active < self.limit and not self.waiters:
            self.active += 1
        else:
            import asyncio

            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.release()  # the slot was handed over just as we were cancelled
                else:
                    try:
                        self.waiters.remove(waiter)
                    except ValueError:
                        pass
                raise
        try:
            delay = self.reserve(cost)
            if delay > 0:
                import asyncio

                await asyncio.sleep(delay)
            await self.wait_pause()
        except BaseException:
            self.release()
            raise

    async def wait_pause(self) -> None:
        import asyncio

        while True:
            left = self.pause_until - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)

    def release(self) -> None:
        self.active -= 1
        waiters = self.waiters
        while waiters and self.active < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    # -- sync (concurrent=False) -------------------------------------------------------------

    def wait_sync(self, cost: float) -> None:
        delay = self.reserve(cost)
        if delay > 0:
            time.sleep(delay)
        while True:
            left = self.pause_until - time.monotonic()
            if left <= 0:
                return
            time.sleep(left)


class _WorkerTransport:
    """What one worker hands to ``_core.run_async``: every send passes the batch's gate.

    The worker takes its first slot before the call starts (so time spent waiting for a slot or
    for the rate limit does not eat into the item's ``timeout``); later sends (retries, ``n``
    top-ups, guided_json re-asks) take a slot each."""

    __slots__ = ("admitted", "cost", "debited", "gate", "inner")

    def __init__(self, gate: _Gate, inner: Any) -> None:
        self.gate = gate
        self.inner = inner
        self.cost = 0.0
        self.debited = 0.0
        self.admitted = False

    async def send(self, request: Any, timeout: float) -> Any:
        gate = self.gate
        if self.admitted:
            self.admitted = False
        else:
            await gate.acquire(self.cost)
            self.debited += self.cost
        gate.stats.requests += 1
        try:
            response = await self.inner.send(request, timeout)
            if response.status < 300:
                gate.on_success()
            return response
        finally:
            gate.release()

    async def open_stream(self, request: Any, timeout: float) -> Any:  # pragma: no cover - unused
        raise NotImplementedError("batch calls do not stream")


class _SyncWorkerTransport:
    """The ``concurrent=False`` twin: waits for the rate limits and pauses, then sends."""

    __slots__ = ("cost", "debited", "gate", "inner")

    def __init__(self, gate: _Gate, inner: Any) -> None:
        self.gate = gate
        self.inner = inner
        self.cost = 0.0
        self.debited = 0.0

    def send(self, request: Any, timeout: float) -> Any:
        self.gate.wait_sync(self.cost)
        self.debited += self.cost
        self.gate.stats.requests += 1
        return self.inner.send(request, timeout)

    def open_stream(self, request: Any, timeout: float) -> Any:  # pragma: no cover - unused
        raise NotImplementedError("batch calls do not stream")


def _estimate_tokens(call: Call) -> float:
    chars = 0
    if call.prompt is not None:
        chars = len(call.prompt)
    for message in call.messages or ():
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    chars += len(text)
    return chars / 4.0 + call.max_tokens * call.n


def _result_usage(result: Any) -> Usage | None:
    return getattr(result, "usage", None)


def _error_dict(exc: BaseException, secrets: Iterable[str]) -> dict[str, Any]:
    if isinstance(exc, GenAIError):
        return exc.redact(secrets).to_dict()
    # Not a gen_ai error: a bug or an unexpected exception; keep the batch going but say so.
    message = str(exc)
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    return {"type": type(exc).__name__, "message": message, "suggestion": "", "status_code": None,
            "url": None, "method": None, "retryable": False, "provider": None, "error_type": None,
            "field": None}


# --------------------------------------------------------------------------------------------
# The engine: workers over a shared iterator
# --------------------------------------------------------------------------------------------

# (key, payload) -> Call; raising GenAIError makes that item fail without a request.
BuildCall = Callable[[Any], Call]
# (key, payload, result or None, error dict or None)
OnDone = Callable[[Any, Any, Any, "dict[str, Any] | None"], None]


class _RelaxedGC:
    """Raise the young-generation GC threshold while batches run, then put it back.

    A batch keeps every result alive while hundreds of requests are in flight, so CPython's
    default threshold (700) runs a collection every few requests over a large young generation:
    measured here, 22% of a 20,000-request batch was spent in the collector, and a threshold of
    50,000 made the batch about 25% faster. Reference counting still frees everything at once;
    only cycle collection runs less often. Nested and concurrent batches share one change.
    """

    _lock = threading.Lock()
    _depth = 0
    _saved: tuple[int, ...] | None = None
    THRESHOLD = 50_000

    def __enter__(self) -> None:
        with _RelaxedGC._lock:
            if _RelaxedGC._depth == 0:
                current = gc.get_threshold()
                if gc.isenabled() and 0 < current[0] < self.THRESHOLD:
                    _RelaxedGC._saved = current
                    gc.set_threshold(self.THRESHOLD, *current[1:])
            _RelaxedGC._depth += 1

    def __exit__(self, *exc: Any) -> None:
        with _RelaxedGC._lock:
            _RelaxedGC._depth -= 1
            if _RelaxedGC._depth == 0 and _RelaxedGC._saved is not None:
                # Only restore what we set: a user who changed it meanwhile keeps theirs.
                if gc.get_threshold()[0] == self.THRESHOLD:
                    gc.set_threshold(*_RelaxedGC._saved)
                _RelaxedGC._saved = None


class _Engine:
    def __init__(self, client: Any, max_concurrent: int, rpm: float | None, tpm: float | None,
                 progress: _Progress, stats: BatchStats) -> None:
        self.client = client
        self.max_concurrent = max_concurrent
        self.gate = _Gate(max_concurrent, rpm, tpm, stats)
        self.progress = progress
        self.stats = stats

    def _finish_item(self, key: Any, payload: Any, result: Any, error: dict[str, Any] | None,
                     on_done: OnDone) -> None:
        stats = self.stats
        if error is None:
            stats.succeeded += 1
            stats.add_usage(_result_usage(result))
        else:
            stats.failed += 1
        on_done(key, payload, result, error)
        if self.progress.active:
            self.progress.update()

    async def run_async(self, items: Iterator[tuple[Any, Any]], build: BuildCall, on_done: OnDone,
                        transport: Any) -> None:
        import asyncio

        workers = [asyncio.ensure_future(self._worker(items, build, on_done, transport))
                   for _ in range(self.max_concurrent)]
        try:
            with _RelaxedGC():
                await asyncio.gather(*workers)
        except BaseException:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise

    async def _worker(self, items: Iterator[tuple[Any, Any]], build: BuildCall, on_done: OnDone,
                      transport: Any) -> None:
        client = self.client
        codec, secrets, max_retries = client._codec, client._secrets, client.max_retries
        state = client._state
        gate = self.gate
        wt = _WorkerTransport(gate, transport)
        for key, payload in items:
            result: Any = None
            error: dict[str, Any] | None = None
            try:
                call = build(payload)
            except Exception as exc:
                self._finish_item(key, payload, None, _error_dict(exc, secrets), on_done)
                continue
            wt.cost = cost = _estimate_tokens(call) if gate.tokens is not None else 0.0
            await gate.acquire(cost)
            wt.admitted = True
            wt.debited = cost
            try:
                result = await _core.run_async(_core.call_flow(codec, call, max_retries, gate, state), wt, secrets)
            except Exception as exc:
                if not isinstance(exc, GenAIError):
                    logger.exception("gen_ai: unexpected error in a batch item")
                error = _error_dict(exc, secrets)
            finally:
                if wt.admitted:  # the flow ended before its first send
                    wt.admitted = False
                    gate.release()
            if error is None:
                gate.reconcile(wt.debited, _result_usage(result))
            self._finish_item(key, payload, result, error, on_done)

    def run_sync(self, items: Iterator[tuple[Any, Any]], build: BuildCall, on_done: OnDone) -> None:
        client = self.client
        codec, secrets, max_retries = client._codec, client._secrets, client.max_retries
        state = client._state
        gate = self.gate
        wt = _SyncWorkerTransport(gate, client._transport)
        for key, payload in items:
            result: Any = None
            error: dict[str, Any] | None = None
            try:
                call = build(payload)
                wt.cost = _estimate_tokens(call) if gate.tokens is not None else 0.0
                wt.debited = 0.0
                result = _core.run_sync(_core.call_flow(codec, call, max_retries, gate, state), wt, secrets)
            except Exception as exc:
                if not isinstance(exc, GenAIError):
                    logger.exception("gen_ai: unexpected error in a batch item")
                error = _error_dict(exc, secrets)
            if error is None:
                gate.reconcile(wt.debited, _result_usage(result))
            self._finish_item(key, payload, result, error, on_done)


def _check_max_concurrent(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"max_concurrent: must be a whole number >= 1, got {value!r}",
                                suggestion="Pass e.g. max_concurrent=16.", field="max_concurrent")
    return value


def _run_in_private_loop(make_coro: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code, even when this thread already runs a loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gen_ai-batch") as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


def _private_transport(client: Any, max_concurrent: int) -> Any:
    """A fresh aiohttp pool for a private loop (a session cannot outlive its loop)."""
    from ._http import AsyncTransport

    shared = client._async_transport
    if isinstance(shared, AsyncTransport):
        return AsyncTransport(shared._timeouts, max_connections=max(max_concurrent, 1)), True
    return shared, False


async def _with_transport(client: Any, max_concurrent: int, private: bool,
                          body: Callable[[Any], Any]) -> Any:
    if private:
        transport, owned = _private_transport(client, max_concurrent)
    else:
        transport, owned = client._async_transport, False
        if hasattr(transport, "set_max_connections"):
            transport.set_max_connections(max_concurrent)
    try:
        return await body(transport)
    finally:
        if owned:
            await transport.close()


# --------------------------------------------------------------------------------------------
# List batches: run_chat_completions_batch / run_completions_batch
# --------------------------------------------------------------------------------------------


def _list_batch_setup(client: Any, kind: str, inputs: Any, max_tokens: Any, temperature: Any, top_p: Any,
                      n: Any, timeout: Any, guided_json: Any, max_concurrent: Any, progress: Any,
                      requests_per_minute: Any, tokens_per_minute: Any, schema_retries: Any,
                      extra: dict[str, Any]) -> tuple[Any, ...]:
    from .client import validate_params

    if isinstance(inputs, (str, bytes, dict)) or not hasattr(inputs, "__iter__"):
        what = "message lists" if kind == "chat" else "prompt strings"
        raise InvalidInputError(f"batch: expected a list of {what}, got {type(inputs).__name__}",
                                field="messages" if kind == "chat" else "prompts")
    items = list(inputs)
    validate_params(max_tokens, temperature, top_p, n, timeout)
    _check_max_concurrent(max_concurrent)
    rpm = _positive("requests_per_minute", requests_per_minute)
    tpm = _positive("tokens_per_minute", tokens_per_minute)
    stats = BatchStats(len(items))
    prog = _Progress(progress, len(items), stats)
    results: list[Any] = [None] * len(items)
    errors: list[dict[str, Any] | None] = [None] * len(items)

    def build(source: Any) -> Call:
        call: Call = client._call(kind, source, max_tokens, temperature, top_p, n, timeout, guided_json,
                                  schema_retries, False, dict(extra))
        return call

    def on_done(index: int, source: Any, result: Any, error: dict[str, Any] | None) -> None:
        results[index] = result
        if error is not None:
            errors[index] = error
            logger.warning("gen_ai: batch item %d failed: %s: %s", index, error.get("type"),
                           str(error.get("message"))[:200])

    engine = _Engine(client, min(max_concurrent, max(1, len(items))), rpm, tpm, prog, stats)
    return items, engine, build, on_done, results, errors, stats, prog


def _list_batch_result(results: list[Any], errors: list[dict[str, Any] | None], stats: BatchStats,
                       prog: _Progress, start: float, return_error: bool) -> Any:
    stats.elapsed = time.monotonic() - start
    if prog.active:
        prog.update(finished=True)
    out = BatchResults(results, errors, stats)
    return (out, errors) if return_error else out


def run_batch(client: Any, kind: str, inputs: Any, *, max_tokens: int = 256, temperature: float = 0,
              top_p: float = 1.0, n: int = 1, timeout: float = 60, guided_json: Any = None,
              concurrent: bool = True, max_concurrent: int = 5, return_error: bool = False,
              progress: Any = None, requests_per_minute: float | None = None,
              tokens_per_minute: float | None = None, schema_retries: int | None = None,
              **extra: Any) -> Any:
    """The sync list batch behind ``Client.run_chat_completions_batch`` / ``run_completions_batch``."""
    start = time.monotonic()
    items, engine, build, on_done, results, errors, stats, prog = _list_batch_setup(
        client, kind, inputs, max_tokens, temperature, top_p, n, timeout, guided_json, max_concurrent,
        progress, requests_per_minute, tokens_per_minute, schema_retries, extra)
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
                     top_p: float = 1.0, n: int = 1, timeout: float = 60, guided_json: Any = None,
                     concurrent: bool = True, max_concurrent: int = 5, return_error: bool = False,
                     progress: Any = None, requests_per_minute: float | None = None,
                     tokens_per_minute: float | None = None, schema_retries: int | None = None,
                     **extra: Any) -> Any:
    """The async list batch, on the client's own async pool (sized up to ``max_concurrent``).
    ``concurrent=False`` sends one item at a time."""
    start = time.monotonic()
    items, engine, build, on_done, results, errors, stats, prog = _list_batch_setup(
        client, kind, inputs, max_tokens, temperature, top_p, n, timeout, guided_json,
        max_concurrent if concurrent else 1, progress, requests_per_minute, tokens_per_minute,
        schema_retries, extra)
    if items:
        await _with_transport(client, engine.max_concurrent, False,
                              lambda t: engine.run_async(iter(enumerate(items)), build, on_done, t))
    return _list_batch_result(results, errors, stats, prog, start, return_error)


# --------------------------------------------------------------------------------------------
# Batch files (OpenAI Batch API format)
# --------------------------------------------------------------------------------------------


class BatchInputError(InvalidInputError):
    """The input file has problems; nothing was sent. ``problems`` is a list of
    ``(line_number, message)``, every problem of the file (line numbers start at 1)."""

    default_suggestion = ("Fix the lines listed; each line must be a JSON object "
                          '{"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}. '
                          "Nothing was sent to the server.")

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        shown = "; ".join(f"line {line}: {msg}" for line, msg in problems[:20])
        more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}: {shown}{more}",
                         field="input")
        self.problems = problems


def _check_line(line_no: int, raw: bytes, seen: dict[str, int], problems: list[tuple[int, str]]) -> None:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        problems.append((line_no, f"invalid JSON ({exc})"))
        return
    if not isinstance(obj, dict):
        problems.append((line_no, f"expected a JSON object, got {type(obj).__name__}"))
        return
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        problems.append((line_no, "missing custom_id" if custom_id is None
                         else f"custom_id must be a non-empty string, got {custom_id!r}"))
    elif custom_id in seen:
        problems.append((line_no, f"duplicate custom_id {custom_id!r} (first on line {seen[custom_id]})"))
    else:
        seen[custom_id] = line_no
    method = obj.get("method", "POST")
    if method != "POST":
        problems.append((line_no, f"method must be POST, got {method!r}"))
    url = obj.get("url")
    kind = _URL_KINDS.get(url) if isinstance(url, str) else None
    if kind is None:
        problems.append((line_no, f"unknown url {url!r} (use {CHAT_URL!r} or {COMPLETIONS_URL!r})"))
    body = obj.get("body")
    if not isinstance(body, dict):
        problems.append((line_no, "missing body" if body is None else "body must be a JSON object"))
        return
    if body.get("stream"):
        problems.append((line_no, "body.stream is not supported in a batch"))
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            problems.append((line_no, "body.messages must be a non-empty list"))
        elif not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            problems.append((line_no, "every item of body.messages must be an object with a role"))
    elif kind == "completion":
        if not isinstance(body.get("prompt"), str) or not body.get("prompt"):
            problems.append((line_no, "body.prompt must be a non-empty string"))


def validate_input_file(path: str | os.PathLike[str]) -> int:
    """Check every line of an input file; raise ``BatchInputError`` listing all problems.
    Returns the number of requests. Blank lines are ignored."""
    return len(_validate(path))


def _validate(path: str | os.PathLike[str]) -> dict[str, int]:
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if raw.strip():
                _check_line(line_no, raw, seen, problems)
    if problems:
        raise BatchInputError(os.fspath(path), problems)
    return seen


def _recover_output(path: str, retry_failed: bool) -> tuple[set[str], int]:
    """Read what an earlier run wrote; repair a half-written last line; drop failed results that
    will be retried. Returns (custom_ids that need no request, number of lines dropped)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return set(), 0
    keep_end = len(data)
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            json.loads(tail)
            whole = True
        except ValueError:
            whole = False
        if whole:  # the record is complete, only its newline is missing
            with open(path, "ab") as f:
                f.write(b"\n")
            data += b"\n"
            keep_end = len(data)
        else:
            logger.warning("gen_ai: %s ends with a half-written line (%d bytes); removed it", path, len(tail))
            with open(path, "r+b") as f:
                f.truncate(cut)
            keep_end = cut
    done: set[str] = set()
    failed_lines: list[int] = []
    bad_lines: list[int] = []
    lines = data[:keep_end].splitlines(keepends=True)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            custom_id = obj["custom_id"]
            ok = obj.get("error") is None
        except (ValueError, KeyError, TypeError, AttributeError):
            bad_lines.append(i)
            continue
        if ok:
            done.add(custom_id)
        elif retry_failed:
            failed_lines.append(i)
        else:
            done.add(custom_id)
    # Failed lines go (their ids are retried; an id that succeeded since keeps its success line).
    drop = set(bad_lines).union(failed_lines)
    if drop:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            for i, raw in enumerate(lines):
                if i not in drop:
                    f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        logger.info("gen_ai: %s: removed %d failed or unreadable result line(s) to retry them", path, len(drop))
    return done, len(drop)


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise InvalidInputError(f"{path} is being written by another running batch",
                                suggestion="Wait for it to finish or pick another output file.",
                                field="output") from None


def _call_from_body(client: Any, kind: str, body: dict[str, Any], timeout: float, default_max_tokens: int,
                    use_body_model: bool) -> Call:
    body = dict(body)
    source = body.pop("messages" if kind == "chat" else "prompt", None)
    model = body.pop("model", None)
    body.pop("stream", None)
    body.pop("stream_options", None)
    max_tokens = body.pop("max_tokens", None)
    completion_tokens = body.pop("max_completion_tokens", None)
    if max_tokens is None:
        max_tokens = completion_tokens if completion_tokens is not None else default_max_tokens
    temperature = body.pop("temperature", None)
    top_p = body.pop("top_p", None)
    n = body.pop("n", None)
    if use_body_model and model:
        body["model"] = model
    call: Call = client._call(kind, source, max_tokens, 0 if temperature is None else temperature,
                              1.0 if top_p is None else top_p, 1 if n is None else n, timeout, None, None,
                              False, body)
    return call


def _response_body(result: Any, kind: str, model: str | None) -> dict[str, Any]:
    """The OpenAI-shaped response body of a result: the server's own JSON when it is already an
    OpenAI response with every choice, otherwise one built from the result."""
    answers = list(result) if isinstance(result, ChatResults) else [result]
    raw = getattr(result, "raw", None)
    if isinstance(raw, dict) and isinstance(raw.get("choices"), list) and len(raw["choices"]) >= len(answers):
        return raw
    first: ChatResult = answers[0]
    usage = result.usage
    choices = []
    for i, answer in enumerate(answers):
        if kind == "chat":
            choices.append({"index": i, "message": {"role": "assistant", "content": str(answer)},
                            "finish_reason": answer.finish_reason, "logprobs": None})
        else:
            choices.append({"index": i, "text": str(answer), "finish_reason": answer.finish_reason,
                            "logprobs": None})
    return {"id": first.id or f"gen_ai-{os.urandom(8).hex()}",
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": result.model or model, "choices": choices,
            "usage": usage.to_dict() if usage is not None else None}


def _output_line(custom_id: str, kind: str, result: Any, error: dict[str, Any] | None,
                 model: str | None) -> bytes:
    request_id = f"req_{os.urandom(12).hex()}"
    record: dict[str, Any] = {"id": f"batch_req_{os.urandom(12).hex()}", "custom_id": custom_id}
    if error is None:
        record["response"] = {"status_code": 200, "request_id": request_id,
                              "body": _response_body(result, kind, model)}
        record["error"] = None
    else:
        status = error.get("status_code")
        record["response"] = None if status is None else {
            "status_code": status, "request_id": request_id,
            "body": {"error": {"message": error.get("message"), "type": error.get("error_type"),
                               "param": error.get("field"), "code": None}}}
        record["error"] = {"code": error.get("type"), "message": error.get("message")}
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _pending(path: str, done: set[str]) -> Iterator[tuple[str, tuple[str, dict[str, Any]]]]:
    """The input lines still without a result, read lazily (the file was validated already)."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            obj = json.loads(raw)
            custom_id = obj["custom_id"]
            if custom_id not in done:
                yield custom_id, (_URL_KINDS[obj["url"]], obj["body"])


class _Writer:
    """Appends one result line per ``os.write`` (no user-space buffer to lose on kill -9)."""

    def __init__(self, path: str, fsync: bool) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _lock(self.fd, path)
        self.fsync = fsync
        self._next_sync = 0.0

    def reopen(self) -> None:
        """After recovery replaced the file: write to (and lock) the new one."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self.fd)
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        if self.fsync:
            now = time.monotonic()
            if now >= self._next_sync:  # batched: at most once a second
                os.fsync(self.fd)
                self._next_sync = now + 1.0

    def close(self) -> None:
        try:
            if self.fsync:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)


def _file_batch_setup(client: Any, input_path: Any, output_path: Any, max_concurrent: Any, timeout: Any,
                      max_tokens: Any, progress: Any, requests_per_minute: Any, tokens_per_minute: Any,
                      retry_failed: bool, use_body_model: bool, fsync: bool) -> tuple[Any, ...]:
    input_path, output_path = os.fspath(input_path), os.fspath(output_path)
    _check_max_concurrent(max_concurrent)
    rpm = _positive("requests_per_minute", requests_per_minute)
    tpm = _positive("tokens_per_minute", tokens_per_minute)
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

    def build(payload: tuple[str, dict[str, Any]]) -> Call:
        kind, body = payload
        return _call_from_body(client, kind, body, timeout, max_tokens, use_body_model)

    def on_done(custom_id: str, payload: tuple[str, dict[str, Any]], result: Any,
                error: dict[str, Any] | None) -> None:
        writer.write(_output_line(custom_id, payload[0], result, error, model))

    return _pending(input_path, done), writer, stats, prog, build, on_done, rpm, tpm


def run_batch_file(client: Any, input: Any, output: Any, *, max_concurrent: int = 16, timeout: float = 60,
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
                          timeout: float = 60, max_tokens: int = 256, progress: Any = None,
                          requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                          retry_failed: bool = True, use_body_model: bool = False, fsync: bool = False,
                          _private: bool = False) -> BatchStats:
    start = time.monotonic()
    items, writer, stats, prog, build, on_done, rpm, tpm = _file_batch_setup(
        client, input, output, max_concurrent, timeout, max_tokens, progress, requests_per_minute,
        tokens_per_minute, retry_failed, use_body_model, fsync)
    try:
        todo = stats.items - stats.skipped
        if stats.skipped:
            logger.info("gen_ai: %s: %d of %d requests already have a result; sending %d",
                        os.fspath(output), stats.skipped, stats.items, todo)
        if todo:
            engine = _Engine(client, min(max_concurrent, todo), rpm, tpm, prog, stats)
            await _with_transport(client, engine.max_concurrent, _private,
                                  lambda t: engine.run_async(items, build, on_done, t))
    finally:
        writer.close()
    stats.elapsed = time.monotonic() - start
    if prog.active:
        prog.update(finished=True)
    final: BatchStats = stats
    return final


# --------------------------------------------------------------------------------------------
# Command line: gen-ai batch INPUT.jsonl OUTPUT.jsonl
# --------------------------------------------------------------------------------------------


def add_cli_arguments(parser: Any) -> None:
    """The options of ``gen-ai batch`` (the model, ``--timeout`` and ``--max-retries`` come from
    the CLI's shared client options)."""
    parser.add_argument("input", help="input JSONL in the OpenAI Batch API format")
    parser.add_argument("output", help="output JSONL in the OpenAI batch output format; appended to, "
                                       "rerun the same command to resume")
    g = parser.add_argument_group("batch")
    g.add_argument("-c", "--max-concurrent", type=int, default=16, metavar="N",
                   help="requests in flight (default: 16)")
    g.add_argument("--requests-per-minute", type=float, default=None, metavar="N")
    g.add_argument("--tokens-per-minute", type=float, default=None, metavar="N")
    g.add_argument("--max-tokens", type=int, default=256, metavar="N",
                   help="for bodies without max_tokens (default: 256)")
    g.add_argument("--no-retry-failed", action="store_true",
                   help="on a rerun, keep earlier error lines instead of retrying those requests")
    g.add_argument("--use-body-model", action="store_true",
                   help="send each body's model instead of --model")
    g.add_argument("--fsync", action="store_true", help="fsync the output about once a second")
    g.add_argument("--no-progress", action="store_true", help="never draw the progress bar")


def run_cli(client: Any, args: Any) -> int:
    """Run ``gen-ai batch`` with parsed ``args``. Exit status: 0 all done, 1 some requests
    failed (rerun to retry them), 2 a bad input file or option (nothing sent)."""
    try:
        stats = run_batch_file(client, args.input, args.output, max_concurrent=args.max_concurrent,
                               timeout=args.timeout, max_tokens=args.max_tokens,
                               progress=False if args.no_progress else None,
                               requests_per_minute=args.requests_per_minute,
                               tokens_per_minute=args.tokens_per_minute,
                               retry_failed=not args.no_retry_failed,
                               use_body_model=args.use_body_model, fsync=args.fsync)
    except BatchInputError as exc:
        sys.stderr.write(f"gen-ai: error: {exc.message}\n")
        for line, message in exc.problems:
            sys.stderr.write(f"  line {line}: {message}\n")
        return 2
    finally:
        client.close()
    sys.stderr.write(f"gen-ai batch: {stats.succeeded} succeeded, {stats.failed} failed, {stats.skipped} "
                     f"already done; {stats.requests} requests, {stats.retries} retries, "
                     f"{stats.total_tokens} tokens, {stats.elapsed:.1f}s\n")
    return 1 if stats.failed else 0
