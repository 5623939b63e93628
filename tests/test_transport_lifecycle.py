"""Async lifecycle (docs/security.md, "Async sessions"): one aiohttp session per event loop,
closed with its loop, by ``aclose()``/``close()``, when the client is dropped, or at exit, so no
"Unclosed client session" / "Unclosed connector" report in any documented pattern.

Each pattern runs in a fresh interpreter (these reports come from finalizers, at garbage
collection and exit) with ResourceWarning turned into an error, and its stderr is checked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from fault_server import Step, chat_body, chat_chunks

PRELUDE = """
import asyncio, gc, sys, threading
from gen_ai import create_client
URL = sys.argv[1]
M = [{"role": "user", "content": "hi"}]
client = create_client(endpoint=URL, model_name="m", api_key="sk-x")

async def one():
    return await client.arun_chat_completions(M)

async def one_stream():
    return "".join([d async for d in client.arun_chat_completions_stream(M)])
"""

PATTERNS = {
    "repeated asyncio.run": """
        for _ in range(3):
            assert asyncio.run(one()) == "ok"
        gc.collect()
    """,
    "repeated asyncio.run, streams": """
        fresh = create_client(endpoint=URL + "/stream", model_name="m")
        async def s():
            return "".join([d async for d in fresh.arun_chat_completions_stream(M)])
        for _ in range(3):
            assert asyncio.run(s()) == "ab"
        gc.collect()
    """,
    "async with": """
        async def main():
            async with client:
                return await one()
        for _ in range(2):
            assert asyncio.run(main()) == "ok"
        gc.collect()
    """,
    "aclose then reuse": """
        async def main():
            await one()
            await client.aclose()
            await one()
            await client.aclose()
        asyncio.run(main())
        gc.collect()
    """,
    "notebook: one loop that never ends, nothing closed": """
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        assert loop.run_until_complete(one()) == "ok"
        assert loop.run_until_complete(one()) == "ok"
        # the kernel exits with its loop still open and the client never closed
    """,
    "notebook: loop running in a thread (ipykernel-like), cells submitted to it": """
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        for _ in range(2):
            assert asyncio.run_coroutine_threadsafe(one(), loop).result(10) == "ok"
    """,
    "notebook: client dropped while its loop runs": """
        async def main():
            global client
            await one()
            client = None
            gc.collect()
            await asyncio.sleep(0.1)
        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        gc.collect()
    """,
    "sync close() from inside a running loop": """
        async def main():
            await one()
            client.close()
            await asyncio.sleep(0.1)
        asyncio.run(main())
    """,
    "sync close() after the loop is gone": """
        loop = asyncio.new_event_loop()
        loop.run_until_complete(one())
        client.close()
        loop.close()
        gc.collect()
    """,
    "threads each running their own loop, one shared client": """
        errors = []
        def worker():
            try:
                for _ in range(3):
                    assert asyncio.run(one()) == "ok"
            except Exception as exc:
                errors.append(exc)
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, errors
        gc.collect()
    """,
}


@pytest.fixture
def answering(fault_server):
    fault_server.default = lambda rec: (Step(200, chunks=chat_chunks(["a", "b"])) if "/stream" in rec.path
                                        else Step(200, chat_body("ok")))
    return fault_server


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_no_unclosed_session_reports(answering, name):
    code = PRELUDE + textwrap.dedent(PATTERNS[name]) + "\nprint('done')\n"
    proc = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", code,
                           answering.url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr[-3000:]
    # (a notebook pattern leaves its own event loop open on purpose: "unclosed event loop" and
    # its self-pipe sockets are the pattern's, not ours; a TCP socket would show its raddr)
    for word in ("Unclosed client session", "Unclosed connector", "unclosed transport", "raddr=",
                 "Task was destroyed", "aiohttp", "gen_ai"):
        assert word not in proc.stderr, proc.stderr[-3000:]


def test_one_session_per_loop_and_closed_with_it(answering):
    import asyncio

    from gen_ai import create_client

    client = create_client(endpoint=answering.url, model_name="m")
    seen = []

    async def main():
        await client.arun_chat_completions([{"role": "user", "content": "hi"}])
        await client.arun_chat_completions([{"role": "user", "content": "hi"}])
        seen.append(client.async_transport._session)

    asyncio.run(main())
    asyncio.run(main())
    first, second = seen
    assert first is not second and first.closed and second.closed
    assert client.async_transport._sessions == {}
