"""``gen-ai batch INPUT.jsonl OUTPUT.jsonl``: its options and its run."""

from __future__ import annotations

import sys
from typing import Any

from .fileformat import BatchInputError
from .files import run_batch_file


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
    g.add_argument("--replica", action="append", default=[], metavar="URL",
                   help="another endpoint of the same server (repeatable): requests go to the least busy "
                        "one, a failing one is cooled down and its requests retried on another")
    g.add_argument("--ray", action="store_true",
                   help="run on the Ray cluster ray.init() finds (RAY_ADDRESS, or a local one): INPUT is JSONL or "
                        "Parquet, OUTPUT a directory of part-*.jsonl files (part-*.parquet when OUTPUT ends in "
                        ".parquet); rerun to resume a failed or killed job")
    g.add_argument("--ray-actors", type=int, default=2, metavar="N", help="with --ray: actors (default: 2)")
    g.add_argument("--json", action="store_true",
                   help="print the run's statistics as one JSON object on stdout (per-replica counts included)")


def prepare_args(args: Any) -> Any:
    """Before the client is made: ``--replica`` URLs join ``--endpoint`` as a list of endpoints."""
    replicas = getattr(args, "replica", None)
    if replicas:
        first = getattr(args, "endpoint", None)
        args.endpoint = (first if isinstance(first, list) else [first] if first else []) + list(replicas)
    return args


def _run_ray(client: Any, args: Any) -> int:
    import json
    import os

    import ray

    from ..cli import resolve_provider
    from ..ray_data import run_batch_file_on_ray

    client.close()
    options: dict[str, Any] = {}
    if getattr(args, "max_retries", None) is not None:
        options["max_retries"] = args.max_retries
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        counts = run_batch_file_on_ray(
            args.input, args.output, concurrency=args.ray_actors, retry_failed=not args.no_retry_failed,
            provider=resolve_provider(args), endpoint=getattr(args, "endpoint", None),
            model_name=getattr(args, "model", None) or os.environ.get("GEN_AI_MODEL") or None,
            api_key=getattr(args, "api_key", None), client_options=options, max_concurrent=args.max_concurrent,
            timeout=args.timeout, max_tokens=args.max_tokens, requests_per_minute=args.requests_per_minute,
            tokens_per_minute=args.tokens_per_minute, use_body_model=args.use_body_model, fsync=args.fsync)
    except BatchInputError as exc:
        sys.stderr.write(f"gen-ai: error: {exc.message}\n")
        for line, message in exc.problems:
            sys.stderr.write(f"  line {line}: {message}\n")
        return 2
    sys.stderr.write(f"gen-ai batch --ray: {counts['succeeded']} succeeded, {counts['failed']} failed, "
                     f"{counts['skipped']} already done, of {counts['items']}\n")
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(counts) + "\n")
    return 1 if counts["failed"] else 0


def run_cli(client: Any, args: Any) -> int:
    """Run ``gen-ai batch`` with parsed ``args``. Exit status: 0 all done, 1 some requests
    failed (rerun to retry them), 2 a bad input file or option (nothing sent)."""
    if getattr(args, "ray", False):
        return _run_ray(client, args)
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
    for url, counts in (stats.replicas or {}).items():
        sys.stderr.write(f"  {url}: {counts['requests']} requests, {counts['errors']} errors\n")
    if getattr(args, "json", False):
        import json

        sys.stdout.write(json.dumps(stats.to_dict()) + "\n")
    return 1 if stats.failed else 0
