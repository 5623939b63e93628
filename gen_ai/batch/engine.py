"""The engine: ``max_concurrent`` workers over one shared iterator of items, each item one
call flow of ``_core`` through the batch's gate; and the private loop / pool the sync methods use."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from .. import _core, _speedups
from ..errors import GenAIError, InvalidInputError
from ..types import Call, EmbeddingCall, Usage
from .limits import _estimate_tokens, _Gate, _SyncWorkerTransport, _WorkerTransport
from .progress import _Progress
from .stats import BatchStats

logger = logging.getLogger("gen_ai")


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
BuildCall = Callable[[Any], "Call | EmbeddingCall"]
# (key, payload, result or None, error dict or None) -> None, or an awaitable the worker awaits
# before it takes its next item (the file batch: "this item's line is on disk").
OnDone = Callable[[Any, Any, Any, "dict[str, Any] | None"], Any]


def _flow(codec: Any, call: Call | EmbeddingCall, max_retries: int, observer: Any, state: Any) -> _core.Flow:
    if call.kind == "embedding":
        return _core.embedding_flow(codec, call, max_retries, observer, state)  # type: ignore[arg-type]
    return _core.call_flow(codec, call, max_retries, observer, state)  # type: ignore[arg-type]


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
        # Tracing (gen_ai.hooks): one observer for the whole batch, a child per item; None when
        # no hook is active, so an untraced batch pays one attribute check per item.
        self.hooks: Any = getattr(client, "hooks", None)
        self.observer: Any = None
        self._replicas_before: dict[str, dict[str, Any]] | None = None

    def _begin(self) -> None:
        counts = getattr(self.client.codec, "replica_stats", None)  # several endpoints
        self._replicas_before = counts() if counts is not None else None
        if self.hooks is not None:
            self.observer = self.hooks.begin("batch", params={"max_concurrent": self.max_concurrent})

    def _end(self, error: BaseException | None = None) -> None:
        """End the batch's span with its statistics."""
        before = self._replicas_before
        if before is not None:  # this batch's requests and errors per replica
            now = self.client.codec.replica_stats()
            self.stats.replicas = {url: {"requests": c["requests"] - before[url]["requests"],
                                         "errors": c["errors"] - before[url]["errors"]}
                                   for url, c in now.items()}
        observer = self.observer
        if observer is None:
            return
        self.observer = None
        stats = self.stats.to_dict()
        observer.info.state["attributes"] = {f"gen_ai_client.batch.{k}": v for k, v in stats.items()
                                             if isinstance(v, (int, float, str, bool))}
        observer.info.usage = self.stats.usage
        if error is not None:
            observer.end(error=error)
        else:
            observer.end(self.stats)

    def _item_observer(self, call: Call | EmbeddingCall) -> Any:
        """The flow's observer for one item: the gate, wrapped by a traced child when tracing
        (chat and completion items; embedding items are counted in the batch span only)."""
        if self.observer is None or call.kind == "embedding":
            return self.gate
        child = self.hooks.begin_call(call, inner=self.gate, parent=self.observer.info)
        return child if child is not None else self.gate

    def _finish_item(self, key: Any, payload: Any, result: Any, error: dict[str, Any] | None,
                     on_done: OnDone) -> Any:
        stats = self.stats
        if error is None:
            stats.succeeded += 1
            stats.add_usage(_result_usage(result))
        else:
            stats.failed += 1
        waiter = on_done(key, payload, result, error)
        if self.progress.active:
            self.progress.update()
        return waiter

    async def run_async(self, items: Iterator[tuple[Any, Any]] | AsyncIterator[tuple[Any, Any]],
                        build: BuildCall, on_done: OnDone, transport: Any) -> None:
        import asyncio

        self._begin()
        workers = [asyncio.ensure_future(self._worker(items, build, on_done, transport))
                   for _ in range(self.max_concurrent)]
        try:
            with _RelaxedGC():
                await asyncio.gather(*workers)
        except BaseException as exc:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._end(exc)
            raise
        self._end()

    async def _worker(self, items: Iterator[tuple[Any, Any]] | AsyncIterator[tuple[Any, Any]],
                      build: BuildCall, on_done: OnDone, transport: Any) -> None:
        client = self.client
        codec, secrets, max_retries = client.codec, client.secrets(), client.max_retries
        state = client.server_state  # what the client learned (dialect, n limit) serves the batch too
        gate = self.gate
        wt = _WorkerTransport(gate, transport)
        # A sync iterator (lists) or an async one shared by every worker (files read off the loop).
        sync_items = items if isinstance(items, Iterator) else None
        async_items = None if sync_items is not None else items
        while True:
            if sync_items is not None:
                try:
                    key, payload = next(sync_items)
                except StopIteration:
                    break
            else:
                assert async_items is not None
                try:
                    key, payload = await async_items.__anext__()  # type: ignore[union-attr]
                except StopAsyncIteration:
                    break
            result: Any = None
            error: dict[str, Any] | None = None
            try:
                call = build(payload)
            except Exception as exc:
                waiter = self._finish_item(key, payload, None, _error_dict(exc, secrets), on_done)
                if waiter is not None:
                    await waiter
                continue
            wt.cost = cost = _estimate_tokens(call) if gate.tokens is not None else 0.0
            await gate.acquire(cost)
            wt.admitted = True
            wt.debited = cost
            observer: Any = gate if self.observer is None else self._item_observer(call)
            try:
                result = await _core.run_async(_flow(codec, call, max_retries, observer, state), wt, secrets)
            except Exception as exc:
                if not isinstance(exc, GenAIError):
                    logger.exception("gen_ai: unexpected error in a batch item")
                error = _error_dict(exc, secrets)
                if observer is not gate:
                    observer.end(error=exc)
            finally:
                if wt.admitted:  # the flow ended before its first send
                    wt.admitted = False
                    gate.release()
            if error is None:
                gate.reconcile(wt.debited, _result_usage(result))
                if observer is not gate:
                    observer.end(result)
            waiter = self._finish_item(key, payload, result, error, on_done)
            if waiter is not None:
                await waiter

    def run_sync(self, items: Iterator[tuple[Any, Any]], build: BuildCall, on_done: OnDone) -> None:
        client = self.client
        codec, secrets, max_retries = client.codec, client.secrets(), client.max_retries
        gate = self.gate
        wt = _SyncWorkerTransport(gate, client.transport)
        self._begin()
        try:
            self._run_sync_items(items, build, on_done, codec, secrets, max_retries, wt)
        except BaseException as exc:
            self._end(exc)
            raise
        self._end()

    def _run_sync_items(self, items: Iterator[tuple[Any, Any]], build: BuildCall, on_done: OnDone, codec: Any,
                        secrets: Any, max_retries: int, wt: Any) -> None:
        gate = self.gate
        for key, payload in items:
            result: Any = None
            error: dict[str, Any] | None = None
            observer: Any = gate
            try:
                call = build(payload)
                wt.cost = _estimate_tokens(call) if gate.tokens is not None else 0.0
                wt.debited = 0.0
                observer = gate if self.observer is None else self._item_observer(call)
                result = _core.run_sync(_flow(codec, call, max_retries, observer, self.client.server_state),
                                        wt, secrets)
            except Exception as exc:
                if not isinstance(exc, GenAIError):
                    logger.exception("gen_ai: unexpected error in a batch item")
                error = _error_dict(exc, secrets)
                if observer is not gate:
                    observer.end(error=exc)
            if error is None:
                gate.reconcile(wt.debited, _result_usage(result))
                if observer is not gate:
                    observer.end(result)
            self._finish_item(key, payload, result, error, on_done)


def call_timeout(client: Any, timeout: Any) -> Any:
    """An item's timeout: the one given, else the client's (one timeout model, docs/security.md)."""
    if timeout is None:
        default = getattr(client, "timeout", None)
        return getattr(default, "total", 30.0) if default is not None else 30.0
    return timeout


def _check_max_concurrent(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"max_concurrent: must be a whole number >= 1, got {value!r}",
                                suggestion="Pass e.g. max_concurrent=16.", field="max_concurrent")
    return value


def _run_in_private_loop(make_coro: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code, even when this thread already runs a loop.
    The loop is gen_ai's own: uvloop's when installed (``gen_ai[fast]``, see ``_speedups``)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _speedups.run(make_coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gen_ai-batch") as pool:
        return pool.submit(lambda: _speedups.run(make_coro)).result()


async def _with_transport(client: Any, max_concurrent: int, private: bool,
                          body: Callable[[Any], Any]) -> Any:
    if private:
        # A fresh pool for a private loop (a session cannot outlive its loop); None when the
        # client's transport is not a pool (the in-process model): then the shared one is used.
        transport = client.new_async_transport(max(max_concurrent, 1))
        owned = transport is not None
        if transport is None:
            transport = client.async_transport
    else:
        transport, owned = client.async_transport, False
        if hasattr(transport, "set_max_connections"):
            transport.set_max_connections(max_concurrent)
    try:
        return await body(transport)
    finally:
        if owned:
            await transport.close()


