"""Two small, bounded thread pools shared by every client of the process (created on first use).

    blocking work of async calls   file reads, image decoding and resizing, token callables,
                                   credential refreshes: ``await offload(fn, ...)`` keeps the
                                   event loop free (BLOCKING_WORKERS threads)
    sync ``n`` top-ups             the missing choices of a sync call, asked for at once
                                   (TOPUP_WORKERS threads; more top-ups than that queue)

Shared rather than per call: a thread pool per call cost a pool start and join on every ``n > 1``
call, and nothing bounded the total. A pool is rebuilt after ``fork`` (its threads do not survive).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

BLOCKING_WORKERS = 4
TOPUP_WORKERS = 16

_lock = threading.Lock()
_pools: dict[str, tuple[int, Any]] = {}


def _pool(name: str, workers: int) -> Any:
    entry = _pools.get(name)
    pid = os.getpid()
    if entry is not None and entry[0] == pid:
        return entry[1]
    with _lock:
        entry = _pools.get(name)
        if entry is None or entry[0] != pid:
            from concurrent.futures import ThreadPoolExecutor

            entry = (pid, ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"gen_ai-{name}"))
            _pools[name] = entry
        return entry[1]


def blocking_pool() -> Any:
    return _pool("blocking", BLOCKING_WORKERS)


def topup_pool() -> Any:
    return _pool("topup", TOPUP_WORKERS)


async def offload(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in the blocking pool and await its result (exceptions propagate)."""
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(blocking_pool(), fn, *args)
