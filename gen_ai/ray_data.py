"""Ray Data integration: run a gen_ai batch on every block of a distributed dataset.

    import ray
    from gen_ai.ray_data import ChatCompletionsPredictor

    ds = ray.data.from_items([{"messages": [{"role": "user", "content": "Hi"}]}, ...])
    out = ds.map_batches(
        ChatCompletionsPredictor,
        fn_constructor_kwargs={"provider": "openai", "endpoint": "http://vllm:8000/v1",
                               "model_name": "m", "max_concurrent": 64, "max_tokens": 128},
        concurrency=4,          # 4 actors, each with one client and one connection pool
        batch_size=256,         # rows per call; each call runs them max_concurrent at a time
    )

Each actor builds one client in ``__init__`` and keeps one event loop (in a helper thread) for
its whole life, so its aiohttp connection pool is reused from block to block. A call takes a
block of rows (a dict of columns, numpy or lists, or a pandas DataFrame) and returns the same
rows with four more columns: ``answer`` (str, None when the row failed), ``prompt_tokens``,
``completion_tokens`` (ints, 0 when unknown) and ``error`` (None, or "ErrorType: message").
A failed row never fails the block. Use ``TextCompletionsPredictor`` for a ``prompt`` column.

Ray is never imported here: Ray imports this module, not the other way round. Install with
``pip install 'gen_ai[ray]'``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .factory import create_client


def _plain(value: Any) -> Any:
    """numpy arrays and Arrow-derived objects -> plain lists and dicts (JSON-ready)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        # Arrow gives every struct all the fields seen in the column: drop the ones set to None.
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Predictor:
    kind = "chat"
    default_column = "messages"

    def __init__(self, provider: str = "openai", endpoint: str | None = None, model_name: str | None = None,
                 *, api_key: str | None = None, input_column: str | None = None,
                 output_column: str = "answer", max_concurrent: int = 16, max_tokens: int = 256,
                 temperature: float = 0, top_p: float = 1.0, timeout: float | None = None,
                 requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 client_options: dict[str, Any] | None = None, **extra: Any) -> None:
        self.client = create_client(provider=provider, api_key=api_key, endpoint=endpoint,
                                    model_name=model_name, **(client_options or {}))
        self.input_column = input_column or self.default_column
        self.output_column = output_column
        self.options: dict[str, Any] = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                            timeout=timeout, max_concurrent=max_concurrent,
                                            requests_per_minute=requests_per_minute,
                                            tokens_per_minute=tokens_per_minute, progress=False,
                                            return_error=True, **extra)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gen_ai-ray", daemon=True)
        self._thread.start()

    def __call__(self, batch: Any) -> Any:
        frame = None
        if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas
            frame = batch
            columns = {name: list(batch[name]) for name in batch.columns}
        else:
            columns = {name: list(values) for name, values in batch.items()}
        if self.input_column not in columns:
            raise KeyError(f"gen_ai: the batch has no {self.input_column!r} column "
                           f"(columns: {', '.join(columns)}); pass input_column=...")
        inputs = [_plain(v) for v in columns[self.input_column]]
        if self.kind == "chat":
            coro = self.client.arun_chat_completions_batch(inputs, **self.options)
        else:
            coro = self.client.arun_completions_batch(inputs, **self.options)
        results, errors = asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        columns[self.output_column] = [None if r is None else str(r) for r in results]
        columns["prompt_tokens"] = [r.usage.prompt_tokens if r is not None and r.usage else 0 for r in results]
        columns["completion_tokens"] = [r.usage.completion_tokens if r is not None and r.usage else 0
                                        for r in results]
        columns["error"] = [None if e is None else f"{e['type']}: {e['message']}" for e in errors]
        if frame is not None:
            import pandas as pd

            return pd.DataFrame(columns)
        return columns

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.client.aclose(), loop).result(5)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)


class ChatCompletionsPredictor(_Predictor):
    """Callable class for ``Dataset.map_batches``: the ``messages`` column (a list of chat
    messages per row) in; ``answer``, ``prompt_tokens``, ``completion_tokens``, ``error`` out.
    Constructor: ``create_client`` arguments (``provider``, ``endpoint``, ``model_name``,
    ``api_key``, ``client_options``), then the batch options (``max_concurrent``,
    ``max_tokens``, ``temperature``, ``top_p``, ``timeout``, ``requests_per_minute``,
    ``tokens_per_minute``, extra body fields), ``input_column`` and ``output_column``."""

    kind = "chat"
    default_column = "messages"


class TextCompletionsPredictor(_Predictor):
    """Like ``ChatCompletionsPredictor`` for text completions of a ``prompt`` column."""

    kind = "completion"
    default_column = "prompt"
