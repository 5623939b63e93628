"""Embeddings: ``run_embeddings`` / ``arun_embeddings``.

The OpenAI wire format is checked against the OpenAI spec (CreateEmbeddingRequest /
CreateEmbeddingResponse) on a loopback server that answers as the spec says (base64 or float
vectors, shuffled ``index`` order, errors on demand); the local provider runs SmolLM2 in-process;
the real servers (llama.cpp's server with ``--embeddings``, vLLM's pooling runner) are in
tests/test_embeddings_servers.py.
"""

from __future__ import annotations

import array
import asyncio
import base64
import math
import threading
import time

import pytest
from conftest import spec_validator
from fault_server import FaultServer, Step

from gen_ai import create_client
from gen_ai.errors import ConfigurationError, InvalidInputError, ResponseError
from gen_ai.types import EmbeddingCall, Embeddings

KEY = "sk-embed-secret-0123456789"


def vector_of(text: str, dims: int = 4) -> list[float]:
    """A deterministic vector per text, exact in float32 (so base64 and JSON agree exactly)."""
    return [float(len(text)), float(sum(map(ord, text)) % 97), 0.5, -0.25][:dims] + [0.125] * max(0, dims - 4)


class EmbeddingServer:
    """Answers /v1/embeddings like the spec: data[] in a shuffled order with its index, base64
    when asked; records every body and the most requests it had in flight at once."""

    def __init__(self, delay: float = 0.0, reject_base64: bool = False) -> None:
        self.delay = delay
        self.reject_base64 = reject_base64
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = FaultServer(default=self)
        self.url = self.server.url

    def __call__(self, rec):
        body = rec.json()
        with self.lock:
            self.bodies.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.reject_base64 and body.get("encoding_format") == "base64":
                return Step(400, {"error": {"message": "encoding_format: unsupported value 'base64'",
                                            "type": "invalid_request_error", "param": "encoding_format"}})
            data = []
            dims = body.get("dimensions") or 4
            for i, text in enumerate(body["input"]):
                vec = vector_of(text, dims)
                if body.get("encoding_format") == "base64":
                    emb = base64.b64encode(array.array("f", vec).tobytes()).decode()
                else:
                    emb = vec
                data.append({"object": "embedding", "index": i, "embedding": emb})
            data.reverse()  # the index, not the position, says which input a vector belongs to
            tokens = sum(len(t.split()) for t in body["input"])
            return Step(200, {"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        finally:
            with self.lock:
                self.in_flight -= 1

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def emb_server():
    servers = []

    def make(**kwargs):
        s = EmbeddingServer(**kwargs)
        servers.append(s)
        return s, create_client(endpoint=s.url, model_name="embed-m", api_key=KEY, max_retries=2)

    yield make
    for s in servers:
        s.close()


TEXTS = [f"text number {i}" for i in range(23)]


def test_vectors_in_input_order_split_into_requests(emb_server, openai_spec):
    server, client = emb_server()
    result = client.run_embeddings(TEXTS, batch_size=5)
    assert isinstance(result, Embeddings) and isinstance(result, list)
    assert result == [vector_of(t) for t in TEXTS]
    assert all(type(x) is float for x in result[0])
    assert sorted(len(b["input"]) for b in server.bodies) == [3, 5, 5, 5, 5]
    assert sorted(t for b in server.bodies for t in b["input"]) == sorted(TEXTS)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 3 * len(TEXTS)
    assert result.usage.completion_tokens == 0
    assert result.model == "embed-m" and result.latency > 0 and result.dimensions == 4
    validator = spec_validator(openai_spec, "CreateEmbeddingRequest")
    for body in server.bodies:
        assert list(validator.iter_errors(body)) == [], body
        assert body["encoding_format"] == "base64" and body["model"] == "embed-m"


def test_requests_are_sent_concurrently(emb_server):
    server, client = emb_server(delay=0.2)
    start = time.monotonic()
    result = client.run_embeddings(TEXTS[:8], batch_size=1, max_concurrent=4)
    elapsed = time.monotonic() - start
    assert result == [vector_of(t) for t in TEXTS[:8]]
    assert server.max_in_flight == 4  # never more than max_concurrent
    assert elapsed < 8 * 0.2 * 0.75  # and not one after the other

    async def main():
        out = await client.arun_embeddings(TEXTS[:8], batch_size=2, max_concurrent=2)
        await client.aclose()
        return out

    server.max_in_flight = 0
    assert asyncio.run(main()) == [vector_of(t) for t in TEXTS[:8]]
    assert server.max_in_flight == 2


def test_float_and_base64_agree_and_numpy(emb_server):
    server, client = emb_server()
    fast = client.run_embeddings(TEXTS[:3])
    plain_client = create_client(endpoint=server.url, model_name="embed-m", embedding_encoding="float")
    plain = plain_client.run_embeddings(TEXTS[:3])
    assert "encoding_format" not in server.bodies[-1]
    assert fast == plain
    import numpy

    arrays = client.run_embeddings(TEXTS[:3], as_numpy=True, dimensions=6)
    assert server.bodies[-1]["dimensions"] == 6
    assert all(isinstance(a, numpy.ndarray) and a.dtype == numpy.float32 and a.shape == (6,) for a in arrays)
    assert [a.tolist() for a in arrays] == [vector_of(t, 6) for t in TEXTS[:3]]
    as_floats = plain_client.run_embeddings(TEXTS[:1], as_numpy=True)
    assert isinstance(as_floats[0], numpy.ndarray) and as_floats[0].tolist() == vector_of(TEXTS[0])


def test_server_without_base64_is_asked_for_floats(emb_server):
    server, client = emb_server(reject_base64=True)
    assert client.run_embeddings(["a b"]) == [vector_of("a b")]
    assert [b.get("encoding_format") for b in server.bodies] == ["base64", None]
    client.run_embeddings(["c"])  # learned: no base64 any more
    assert server.bodies[-1].get("encoding_format") is None and len(server.bodies) == 3


@pytest.mark.parametrize("texts,field,words", [
    ([], "texts", "is empty"),
    ("just one string", "texts", "list of strings"),
    (["ok", 3, "ok"], "texts[1]", "must be a string"),
    (["ok", "fine", ""], "texts[2]", "empty string"),
    (["ok", None], "texts[1]", "must be a string"),
])
def test_bad_input_raises_before_any_request(emb_server, texts, field, words):
    server, client = emb_server()
    with pytest.raises(InvalidInputError) as info:
        client.run_embeddings(texts)
    assert info.value.field == field and words in str(info.value)
    none, error = client.run_embeddings(texts, return_error=True)
    assert none is None and error["field"] == field
    assert server.server.requests == []


def test_bad_options_raise_before_any_request(emb_server):
    server, client = emb_server()
    for kwargs, field in (({"dimensions": 0}, "dimensions"), ({"batch_size": 0}, "batch_size"),
                          ({"max_concurrent": -1}, "max_concurrent"), ({"timeout": 0}, "timeout"),
                          ({"input": ["x"]}, "input"), ({"model": "other"}, "model")):
        with pytest.raises(InvalidInputError) as info:
            client.run_embeddings(["x"], **kwargs)
        assert info.value.field == field
    assert server.server.requests == []
    anthropic = create_client(provider="anthropic", api_key="k", model_name="claude")
    with pytest.raises(InvalidInputError, match="no embeddings"):
        anthropic.run_embeddings(["x"])


def test_retry_then_success_and_errors_are_scrubbed():
    server = FaultServer()
    try:
        ok = EmbeddingServer.__call__
        holder = EmbeddingServer.__new__(EmbeddingServer)
        holder.delay, holder.reject_base64, holder.bodies = 0.0, False, []
        holder.in_flight = holder.max_in_flight = 0
        holder.lock = threading.Lock()
        server.add(Step(503, {"error": {"message": "overloaded"}}, headers={"Retry-After": "0"}))
        server.default = lambda rec: ok(holder, rec)
        client = create_client(endpoint=server.url, model_name="embed-m", api_key=KEY, max_retries=2)
        assert client.run_embeddings(["a"]) == [vector_of("a")]
        assert len(server.requests) == 2
        server.default = Step(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
        none, error = client.run_embeddings(["a"], return_error=True)
        assert none is None and error["type"] == "AuthenticationError"
        assert KEY not in repr(error) and "***" in error["message"]
        server.default = Step(200, {"object": "list", "data": [], "model": "m"})
        with pytest.raises(ResponseError, match="0 embeddings for 1 inputs"):
            client.run_embeddings(["a"])
    finally:
        server.close()


def test_embedding_response_parses_per_spec(openai_spec):
    """The spec's own response shape, float vectors: what our parser reads, the spec accepts."""
    from gen_ai.providers.openai import embeddings_from_json
    from gen_ai.types import RawResponse

    body = {"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 1, "embedding": [0.5, 0.25]},
                     {"object": "embedding", "index": 0, "embedding": [1.0, -1.0]}],
            "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    assert list(spec_validator(openai_spec, "CreateEmbeddingResponse").iter_errors(body)) == []
    part = embeddings_from_json(body, EmbeddingCall(["a", "b"]), RawResponse(200, {}, b"", "u", "POST"), "openai")
    assert part.vectors == [[1.0, -1.0], [0.5, 0.25]] and part.usage.total_tokens == 8


def test_configuration_error_for_unknown_encoding():
    with pytest.raises(ConfigurationError):
        create_client(endpoint="http://127.0.0.1:9/v1", model_name="m", embedding_encoding="int8")


# -- local provider: llama.cpp in-process -------------------------------------------------------


@pytest.fixture(scope="module")
def local_client():
    return create_client(provider="local", n_threads=1, n_ctx=512)


def test_local_embeddings_match_llama_cpp(local_client):
    import llama_cpp
    from conftest import smollm2_path

    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell sharply today."]
    result = local_client.run_embeddings(texts, batch_size=2)
    assert len(result) == 3 and result.dimensions == 576
    assert result.usage.prompt_tokens > 0 and result.model == "SmolLM2-135M-Instruct.Q4_1"
    direct = llama_cpp.Llama(model_path=smollm2_path(), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                             n_threads=1, verbose=False, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    # The same requests (batch_size=2: two texts, then one) straight through llama-cpp-python.
    # (llama.cpp's numbers depend on how sequences are batched, so the split must match.)
    expected = [d["embedding"] for d in direct.create_embedding(texts[:2])["data"]]
    expected += [d["embedding"] for d in direct.create_embedding(texts[2:])["data"]]
    for got, want in zip(result, expected):
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    assert cos(result[0], result[1]) > cos(result[0], result[2])  # similar sentences are closer
    # chat still works on the same client (a separate context)
    assert local_client.run_chat_completions([{"role": "user", "content": "Hi"}], max_tokens=3)


def test_local_embeddings_async_numpy_and_bad_input(local_client):
    import numpy

    async def main():
        return await local_client.arun_embeddings(["one", "two"], as_numpy=True)

    arrays = asyncio.run(main())
    assert all(isinstance(a, numpy.ndarray) and a.shape == (576,) for a in arrays)
    with pytest.raises(InvalidInputError) as info:  # llama.cpp crashes on an empty text: refused first
        local_client.run_embeddings(["fine", ""])
    assert info.value.field == "texts[1]"
    with pytest.raises(InvalidInputError) as info:
        local_client.run_embeddings(["x"], dimensions=64)
    assert info.value.field == "dimensions"


# -- embeddings batches ---------------------------------------------------------------------------


def test_embeddings_batch_order_failures_rate_limit_and_progress(emb_server):
    server, client = emb_server()
    times: list[float] = []
    inner = server.server.default

    def rule(rec):
        times.append(time.monotonic())
        if any("bad" in t for t in rec.json()["input"]):
            return Step(400, {"error": {"message": "input rejected", "type": "invalid_request_error"}})
        return inner(rec)

    server.server.default = rule
    texts = [f"t{i}" if i != 7 else "bad text" for i in range(40)]
    seen = []
    results = client.run_embeddings_batch(texts, batch_size=2, max_concurrent=8, requests_per_minute=600,
                                          progress=seen.append)
    # 20 requests at 10/s with one second's burst: the last arrives about a second after the first
    assert len(times) == 20 and times[-1] - times[0] >= 0.8
    assert results.stats.items == 20 and results.stats.failed == 1 and results.stats.succeeded == 19
    for i, text in enumerate(texts):
        if i in (6, 7):  # the request holding "bad text" failed: both of its texts
            assert results[i] is None and results.errors[i]["type"] == "BadRequestError"
        else:
            assert results[i] == vector_of(text) and results.errors[i] is None
    assert seen and seen[-1].finished and seen[-1].done == 20
    assert results.stats.total_tokens == 38  # one word per text, from the server's usage


def test_async_embeddings_batch_and_bad_input(emb_server):
    server, client = emb_server()

    async def main():
        out = await client.arun_embeddings_batch(TEXTS, batch_size=4, max_concurrent=3, as_numpy=True)
        await client.aclose()
        return out

    results = asyncio.run(main())
    assert [r.tolist() for r in results] == [vector_of(t) for t in TEXTS]
    assert results.stats.items == 6 and results.stats.requests == 6
    with pytest.raises(InvalidInputError) as info:
        client.run_embeddings_batch(["a", "", "b"])
    assert info.value.field == "texts[1]" and len(server.bodies) == 6
