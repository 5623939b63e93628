"""Progress reporting: the throttled stderr bar and the ``progress=callable`` hook."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError
from .stats import BatchStats

logger = logging.getLogger("gen_ai")

_PROGRESS_INTERVAL = 0.2


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

