"""Optional speed-ups for the work where gen_ai owns the event loop: the sync batch methods
(``run_chat_completions_batch``, ``run_batch_file``, ``run_embeddings_batch``) and ``gen-ai batch``.

- uvloop, when importable, runs the private event loop those methods start;
- orjson, when importable, reads and writes the batch files' JSON lines.

Both come with ``pip install 'gen_ai[fast]'`` and are never required. ``GEN_AI_SPEEDUPS=0``
turns both off (to compare, or to rule them out). Async code the caller runs on its own loop is
never switched: the caller owns that loop. See docs/batch.md for the measured difference.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from typing import Any


def switched_off(variable: str) -> bool:
    """Whether an on-by-default switch such as ``GEN_AI_SPEEDUPS`` is set to 0/false/no/off."""
    return os.environ.get(variable, "").strip().lower() in ("0", "false", "no", "off")


def enabled() -> bool:
    return not switched_off("GEN_AI_SPEEDUPS")


@functools.lru_cache(maxsize=1)
def _uvloop_factory() -> Callable[[], Any] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory


@functools.lru_cache(maxsize=1)
def _orjson() -> Any:
    try:
        import orjson
    except ImportError:
        return None
    return orjson


def loop_factory() -> Callable[[], Any] | None:
    """uvloop's ``new_event_loop`` when installed and allowed, else None (asyncio's own loop)."""
    return _uvloop_factory() if enabled() else None


def run(make_coro: Callable[[], Any]) -> Any:
    """``asyncio.run(make_coro())`` on uvloop's loop when it is installed and allowed."""
    import asyncio

    factory = loop_factory()
    if factory is None:
        return asyncio.run(make_coro())
    if hasattr(asyncio, "Runner"):  # Python 3.11+
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(make_coro())
    loop = factory()  # pragma: no cover - Python 3.10
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(make_coro())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def json_codec() -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    """(loads, dumps) for batch file lines: orjson's when installed and allowed, else json's.

    ``loads`` takes bytes and reads them exactly as ``json.loads`` would: what orjson refuses
    (NaN, 1e400, lone surrogates) and any run of 19 or more digits (orjson turns integers beyond
    64 bits into floats) go to ``json.loads``, so a bad line also gets json's own error message.
    ``dumps`` gives compact UTF-8 bytes, non-ASCII kept; a value orjson cannot encode goes to
    ``json.dumps``."""
    orjson = _orjson() if enabled() else None
    if orjson is None:
        return json.loads, _json_dumps
    fast_loads, fast_dumps, fast_error = orjson.loads, orjson.dumps, orjson.JSONEncodeError
    long_number = re.compile(rb"\d{19}").search

    def loads(data: bytes) -> Any:
        if long_number(data) is None:
            try:
                return fast_loads(data)
            except ValueError:
                pass
        return json.loads(data)

    def dumps(value: Any) -> bytes:
        try:
            out: bytes = fast_dumps(value)
            return out
        except (fast_error, TypeError):
            return _json_dumps(value)

    return loads, dumps


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
