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

The package, one file per part:

    stats.py       BatchStats, BatchResults
    progress.py    the progress bar and the progress=callable hook
    limits.py      token buckets, the 429 pause, AIMD concurrency (the gate)
    engine.py      workers over a shared iterator; private loop and pool for sync methods
    lists.py       list batches (run_batch / arun_batch)
    embeddings.py  embedding batches (run_embeddings_batch / arun_embeddings_batch)
    fileformat.py  OpenAI Batch API input validation and output lines
    checkpoint.py  resume: output recovery, the lock, the append-only writer
    files.py       run_batch_file / arun_batch_file
    cli.py         gen-ai batch

The batch talks to the client only through its public seam (``codec``, ``max_retries``,
``secrets()``, ``transport``, ``async_transport``, ``new_async_transport()``, ``build_call()``,
``validate_params()``); it never imports ``gen_ai.client``.
"""

from __future__ import annotations

from .cli import add_cli_arguments, prepare_args, run_cli
from .embeddings import arun_embeddings_batch, run_embeddings_batch
from .fileformat import CHAT_URL, COMPLETIONS_URL, BatchInputError, validate_input_file
from .files import arun_batch_file, run_batch_file
from .lists import arun_batch, run_batch
from .progress import BatchProgress
from .stats import BatchResults, BatchStats

__all__ = [
    "CHAT_URL",
    "COMPLETIONS_URL",
    "BatchInputError",
    "BatchProgress",
    "BatchResults",
    "BatchStats",
    "add_cli_arguments",
    "prepare_args",
    "arun_batch",
    "arun_batch_file",
    "arun_embeddings_batch",
    "run_batch",
    "run_batch_file",
    "run_embeddings_batch",
    "run_cli",
    "validate_input_file",
]
