"""Connection reuse in the transports, found by the benchmarks (benchmarks/run.py).

A loopback fault server answers streams with a Content-Length body on a keep-alive connection
(what nginx does for a static SSE file), the case where http.client's read1 left the response
"unfinished" and the next call on the pooled connection failed and was retried after a backoff.
"""

from __future__ import annotations

import asyncio

from fault_server import Step, chat_body, chat_chunks

from gen_ai import create_client

MESSAGES = [{"role": "user", "content": "Hi"}]


def _sse_with_length(deltas: list[str]) -> Step:
    return Step(200, b"".join(chat_chunks(deltas)), content_type="text/event-stream")


def test_streams_with_content_length_reuse_the_connection_without_retry(fault_server):
    for deltas in (["a", "b"], ["c"], ["d", "e", "f"]):
        fault_server.add(_sse_with_length(deltas))
    fault_server.add(200, chat_body("done"))
    client = create_client("openai", endpoint=fault_server.url, model_name="m", max_retries=0)
    assert list(client.run_chat_completions_stream(MESSAGES)) == ["a", "b"]
    assert list(client.run_chat_completions_stream(MESSAGES)) == ["c"]
    stream = client.run_chat_completions_stream(MESSAGES)
    assert "".join(stream) == "def" and stream.finish_reason == "stop"
    assert client.run_chat_completions(MESSAGES) == "done"
    # max_retries=0: any failed reuse would have raised; and nothing was sent twice
    assert len(fault_server.requests) == 4
    client.close()


def test_async_timeout_cache_stays_bounded(fault_server):
    fault_server.default = Step(200, chat_body("ok"))
    client = create_client("openai", endpoint=fault_server.url, model_name="m")

    async def run() -> list[str]:
        try:
            return [await client.arun_chat_completions(MESSAGES) for _ in range(60)]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == ["ok"] * 60
    # each call passes the time left before its deadline (a new float): the cache must not grow per call
    assert len(client._async_transport._timeout_cache) <= 32
