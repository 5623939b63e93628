"""Batch results and totals: ``BatchStats`` and ``BatchResults``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..types import Usage


class BatchStats:
    """Totals of one batch. ``requests`` counts HTTP requests (retries included); ``retries``
    the retried ones; ``rate_limited`` the 429 answers that were retried; ``min_concurrency``
    the lowest in-flight limit the adaptive limiter went down to."""

    __slots__ = (
        "cache_write_tokens",
        "cached_tokens",
        "completion_tokens",
        "elapsed",
        "failed",
        "items",
        "min_concurrency",
        "prompt_tokens",
        "rate_limited",
        "reasoning_tokens",
        "replicas",
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
        self.cached_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.elapsed = 0.0
        self.min_concurrency = 0
        # With several endpoints: {url: {"requests": n, "errors": m}} for this batch's requests.
        self.replicas: dict[str, dict[str, int]] | None = None

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.total_tokens, self.cached_tokens,
                     self.cache_write_tokens, self.reasoning_tokens)

    def add_usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.total_tokens += usage.total_tokens
            self.cached_tokens += usage.cached_tokens
            self.cache_write_tokens += usage.cache_write_tokens
            self.reasoning_tokens += usage.reasoning_tokens

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

