"""Embeddings against real servers: llama.cpp's own server (``xllamacpp``) started with
``--embeddings``, and vLLM's pooling runner (``--runner pooling``) on CPU, both serving SmolLM2.

The vectors are checked against the in-process llama.cpp (provider="local") for llama.cpp's
server, and for self-consistency (order, base64 == floats, similar sentences closer) on both.

Observed (see docs/embeddings.md): llama.cpp's server gives a text a different vector when other
texts share its decode batch (several inputs in one request, or requests on parallel slots),
cosine distance up to 0.33 for SmolLM2 with mean pooling, more than between two different
sentences. Exact comparisons therefore use one slot, so the batch composition is fixed.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from servers import start_vllm

from gen_ai import create_client

TEXTS = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell sharply today.",
         "Paris is the capital of France.", "The weather is sunny."]


def cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def check_server_embeddings(url: str, model: str, tolerance: float) -> None:
    client = create_client(endpoint=url, model_name=model, max_retries=1)
    plain = create_client(endpoint=url, model_name=model, embedding_encoding="float")
    alone = [plain.run_embeddings([t])[0] for t in TEXTS]  # one text per request, one at a time
    # one text per request, three requests at once: each vector lands at its own index
    fast = client.run_embeddings(TEXTS, batch_size=1, max_concurrent=3)
    assert client.codec.embedding_encoding == "base64"  # the server took base64
    assert len(fast) == len(TEXTS) and fast.dimensions == 576 and fast.usage.prompt_tokens > 0
    for a, b in zip(fast, alone, strict=True):  # base64 float32 == the printed decimals, to float32 precision
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < tolerance
    assert cos(fast[0], fast[1]) > cos(fast[0], fast[2])  # similar sentences are closer
    # several texts per request: the same batches with base64 and with floats agree
    two = client.run_embeddings(TEXTS, batch_size=2, max_concurrent=1)
    two_plain = plain.run_embeddings(TEXTS, batch_size=2, max_concurrent=1)
    for a, b in zip(two, two_plain, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < tolerance

    async def main():
        out = await client.arun_embeddings(TEXTS, batch_size=1, max_concurrent=3, as_numpy=True)
        await client.aclose()
        return out

    arrays = asyncio.run(main())
    for a, b in zip(arrays, alone, strict=True):
        assert max(abs(x - y) for x, y in zip(a.tolist(), b, strict=True)) < tolerance


def test_llama_cpp_server_embeddings(xllamacpp_embeddings_server):
    check_server_embeddings(xllamacpp_embeddings_server.url, xllamacpp_embeddings_server.model, 1e-6)


def test_llama_cpp_server_matches_in_process_llama_cpp(xllamacpp_embeddings_server):
    server = create_client(endpoint=xllamacpp_embeddings_server.url, model_name=xllamacpp_embeddings_server.model)
    local = create_client(provider="local", n_threads=1, n_ctx=512)
    for text in TEXTS[:3]:
        a = server.run_embeddings([text])[0]
        b = local.run_embeddings([text])[0]
        assert cos(a, b) > 0.99, text


@pytest.mark.heavy
def test_vllm_pooling_runner_embeddings(tmp_path):
    handle = start_vllm(tmp_path, ["--runner", "pooling", "--pooler-config", '{"seq_pooling_type": "MEAN"}'])
    try:
        check_server_embeddings(handle.url, handle.model, 1e-3)
    finally:
        handle.stop()


def test_batch_file_embedding_lines_on_llama_cpp(xllamacpp_embeddings_server, tmp_path):
    """gen-ai batch with /v1/embeddings lines against the real server: each line's vectors are
    the ones a direct call gives (one slot: the same batching either way)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": text}} for i, text in enumerate(TEXTS)]
    inp.write_text("".join(json.dumps(r) + "\n" for r in lines))
    proc = subprocess.run([sys.executable, "-m", "gen_ai", "batch", str(inp), str(out), "--endpoint",
                           xllamacpp_embeddings_server.url, "--model", xllamacpp_embeddings_server.model, "-c", "3",
                           "--no-progress"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_id = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    client = create_client(endpoint=xllamacpp_embeddings_server.url, model_name=xllamacpp_embeddings_server.model)
    for i, text in enumerate(TEXTS):
        body = by_id[f"e{i}"]["response"]["body"]
        assert body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
        got = body["data"][0]["embedding"]
        want = client.run_embeddings([text])[0]
        assert max(abs(x - y) for x, y in zip(got, want, strict=True)) < 1e-6
