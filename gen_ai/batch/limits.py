"""Rate limits, the batch-wide 429 pause and adaptive (AIMD) concurrency.

Every HTTP request of every worker, retries included, passes one ``_Gate``: a slot of the AIMD
limiter, the shared token buckets of ``requests_per_minute`` / ``tokens_per_minute``, and the
batch-wide pause after a 429. The gate observes the single-call flow through ``_core.Observer``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from .. import _core
from ..errors import GenAIError, InvalidInputError
from ..types import Call, EmbeddingCall, Usage
from .stats import BatchStats

logger = logging.getLogger("gen_ai")

# A 429 or 503 lowers concurrency at most once per this many seconds: a burst of 256 rejections
# answering one overload is one signal, not 256.
_DECREASE_COOLDOWN = 0.5


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
        # Limits shared with other processes (gen_ai.ray_data: one Ray actor per job): an object
        # with ``async reserve(cost) -> seconds to wait`` and ``pause(seconds)``; None: local only.
        self.shared: Any = None

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
            if self.shared is not None:  # every process sharing the limits pauses too
                self.shared.pause(delay)
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
            if self.shared is not None:
                delay = max(delay, await self.shared.reserve(cost))
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


def _estimate_tokens(call: Call | EmbeddingCall) -> float:
    if type(call) is EmbeddingCall:
        return sum(len(text) for text in call.inputs) / 4.0
    assert type(call) is Call
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


