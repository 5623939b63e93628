"""provider="azure": bodies conform to the OpenAI spec, and the Azure routes, headers,
content-filter answers and errors work against a loopback server that answers like Azure."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import spec_validator
from fault_server import FaultServer, Step, chat_body, chat_chunks, completion_body, sse

from gen_ai.errors import ConfigurationError, ContentFilterError, GenAIError, RateLimitError
from gen_ai.factory import create_client
from gen_ai.structured import Schema
from gen_ai.types import Call

KEY = "azure-key-0123456789abcdef"
AD_TOKEN = "eyJ0eXAiOiJKV1Qi.entra-token.sig"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}
PNG_URL = "data:image/png;base64,iVBORw0KGgo="

FILTER_400 = {"error": {
    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
    "type": None, "param": "prompt", "code": "content_filter", "status": 400,
    "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
        "hate": {"filtered": False, "severity": "safe"},
        "jailbreak": {"filtered": False, "detected": False},
        "self_harm": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": False, "severity": "safe"},
        "violence": {"filtered": True, "severity": "medium"}}}}}


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _no_ambient_azure(monkeypatch):
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_AD_TOKEN", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)


def azure(server: FaultServer, **options: Any):
    options.setdefault("api_key", KEY)
    options.setdefault("deployment", "gpt4o-prod")
    return create_client(provider="azure", endpoint=f"http://127.0.0.1:{server.port}/", **options)


def query(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query)


# -- conformance with the OpenAI spec ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_chat_bodies_match_openai_spec(server, openai_spec, stream):
    validator = spec_validator(openai_spec, "CreateChatCompletionRequest")
    for route in ({}, {"api_version": "v1"}):
        codec = azure(server, **route).codec
        calls = [
            Call("chat", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
                 max_tokens=8, stream=stream),
            Call("chat", messages=[{"role": "user", "content": "City?"}], max_tokens=8, stream=stream,
                 schema=Schema.from_user(SCHEMA)),
            Call("chat", messages=[{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": PNG_URL}}]}], max_tokens=8, stream=stream),
        ]
        for call in calls:
            body = json.loads(codec.build_request(call).body)
            errors = [e.message for e in validator.iter_errors(body)]
            assert not errors, errors
            assert body["model"] == "gpt4o-prod"
        schema_body = json.loads(codec.build_request(calls[1]).body)
        assert schema_body["response_format"]["type"] == "json_schema"
        assert schema_body["response_format"]["json_schema"]["schema"] == SCHEMA


def test_completion_body_matches_openai_spec(server, openai_spec):
    validator = spec_validator(openai_spec, "CreateCompletionRequest")
    body = json.loads(azure(server).codec.build_request(Call("completion", prompt="Once", max_tokens=4)).body)
    assert not [e.message for e in validator.iter_errors(body)]
    # and the oracle rejects what is not a request
    assert list(validator.iter_errors({"prompt": "x"}))


# -- configuration ------------------------------------------------------------------------------


def test_configuration_errors(monkeypatch):
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="azure", endpoint="https://x.openai.azure.com", api_key=KEY)
    assert info.value.field == "deployment" and "deployment" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="azure", api_key=KEY, deployment="d")
    assert info.value.field == "endpoint"
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="azure", endpoint="https://x.openai.azure.com", deployment="d")
    assert info.value.field == "api_key"
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/openai/")
    client = create_client(provider="azure", deployment="dep")
    request = client.codec.build_request(Call("chat", messages=[{"role": "user", "content": "hi"}]))
    assert request.url == "https://res.openai.azure.com/openai/deployments/dep/chat/completions?api-version=2024-10-21"
    assert request.headers["api-key"] == KEY and "Authorization" not in request.headers


# -- loopback server ----------------------------------------------------------------------------


def test_classic_route_chat(server):
    body = chat_body("Paris", model="gpt-4o-2024-08-06")
    body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
    server.add(200, body)
    client = azure(server, api_version="2024-06-01")
    result = client.run_chat_completions([{"role": "user", "content": "Capital of France?"}], max_tokens=8)
    assert result == "Paris" and result.finish_reason == "stop" and result.usage.total_tokens == 7
    rec = server.requests[0]
    assert urlsplit(rec.path).path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert query(rec.path) == {"api-version": ["2024-06-01"]}
    assert rec.headers["api-key"] == KEY and "authorization" not in rec.headers


def test_v1_route_sends_deployment_as_model(server):
    server.add(200, chat_body("v1 ok"))
    server.add(200, completion_body("text ok"))
    client = create_client(provider="azure", endpoint=f"http://127.0.0.1:{server.port}/openai/v1",
                           api_key=KEY, api_version="v1", model_name="gpt4o-mini-dep")
    assert client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4) == "v1 ok"
    assert client.run_completions("Once", max_tokens=4) == "text ok"
    chat, text = server.requests
    assert chat.path == "/openai/v1/chat/completions" and chat.json()["model"] == "gpt4o-mini-dep"
    assert text.path == "/openai/v1/completions" and text.json()["prompt"] == "Once"


def test_completions_classic_route(server):
    server.add(200, completion_body("and then"))
    client = azure(server)
    assert client.run_completions("Once upon", max_tokens=4) == "and then"
    rec = server.requests[0]
    assert urlsplit(rec.path).path == "/openai/deployments/gpt4o-prod/completions"
    assert query(rec.path)["api-version"] == ["2024-10-21"]


def test_entra_id_token(server):
    server.add(200, chat_body("token ok"))
    server.add(200, chat_body("a"))
    server.add(200, chat_body("b"))
    client = azure(server, api_key=None, azure_ad_token=AD_TOKEN)
    assert client.run_chat_completions([{"role": "user", "content": "hi"}]) == "token ok"
    assert server.requests[0].headers["authorization"] == f"Bearer {AD_TOKEN}"
    assert "api-key" not in server.requests[0].headers
    tokens = iter(["tok-1", "tok-2"])  # a token provider is asked again for every request
    client = azure(server, api_key=None, azure_ad_token=lambda: next(tokens))
    client.run_chat_completions([{"role": "user", "content": "hi"}])
    client.run_chat_completions([{"role": "user", "content": "hi"}])
    assert [r.headers["authorization"] for r in server.requests[1:]] == ["Bearer tok-1", "Bearer tok-2"]


def test_stream(server):
    first = sse({"id": "", "object": "", "created": 0, "model": "", "choices": [],
                 "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]})
    server.add(Step(200, chunks=[first] + chat_chunks(["Hel", "lo"])))
    client = azure(server)
    stream = client.run_chat_completions_stream([{"role": "user", "content": "hi"}], max_tokens=8)
    assert list(stream) == ["Hel", "lo"]
    assert stream.finish_reason == "stop" and stream.usage.total_tokens == 7
    body = server.requests[0].json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_content_filter_finish_reason(server, caplog):
    body = chat_body("", finish_reason="content_filter")
    body["choices"][0]["content_filter_results"] = {"violence": {"filtered": True, "severity": "high"}}
    server.add(200, body)
    client = azure(server)
    with caplog.at_level(logging.WARNING, logger="gen_ai"):
        result = client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=8)
    assert result == "" and result.finish_reason == "content_filter"
    assert "content filter" in caplog.text and "violence (high)" in caplog.text

    server.add(Step(200, chunks=chat_chunks(["cut"], finish=False)[:1] + [sse({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}), b"data: [DONE]\n\n"]))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gen_ai"):
        stream = client.run_chat_completions_stream([{"role": "user", "content": "hi"}])
        assert "".join(stream) == "cut"
    assert stream.finish_reason == "content_filter" and "content filter" in caplog.text


def test_content_filter_error(server):
    server.add(400, FILTER_400)
    client = azure(server)
    with pytest.raises(ContentFilterError) as info:
        client.run_chat_completions([{"role": "user", "content": "something bad"}], max_tokens=8)
    error = info.value
    assert not error.retryable and error.status_code == 400 and error.error_type == "content_filter"
    assert "blocked by Azure's content filter" in error.suggestion and "violence (medium)" in error.suggestion
    assert len(server.requests) == 1
    server.add(400, FILTER_400)
    _, err = client.run_chat_completions([{"role": "user", "content": "x"}], return_error=True)
    assert err["type"] == "ContentFilterError" and "violence" in err["suggestion"]


def test_rate_limit_retry_after_then_success(server):
    server.add(429, {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation have "
                                                         "exceeded call rate limit."}},
               headers={"Retry-After": "0.3"})
    server.add(200, chat_body("after wait"))
    client = azure(server)
    start = time.monotonic()
    assert client.run_chat_completions([{"role": "user", "content": "hi"}]) == "after wait"
    assert time.monotonic() - start >= 0.3
    assert len(server.requests) == 2
    assert all(r.headers["api-key"] == KEY for r in server.requests)
    server.add(429, {"error": {"code": "429", "message": "slow down"}}, headers={"retry-after-ms": "10"})
    with pytest.raises(RateLimitError) as info:
        azure(server, max_retries=0).run_chat_completions([{"role": "user", "content": "hi"}])
    assert info.value.retryable and info.value.retry_after == pytest.approx(0.01)


def test_guided_json_no_probe(server):
    server.add(200, chat_body('{"city": "Paris"}'))
    client = azure(server)
    result = client.run_chat_completions([{"role": "user", "content": "City?"}], guided_json=SCHEMA, max_tokens=16)
    assert result.parsed == {"city": "Paris"}
    assert [r.method for r in server.requests] == ["POST"]  # no GET /models probe
    assert server.requests[0].json()["response_format"]["type"] == "json_schema"


def test_async(server):
    server.add(200, chat_body("async ok"))
    server.add(Step(200, chunks=chat_chunks(["a", "b"])))

    async def main() -> tuple[Any, list[str]]:
        client = azure(server)
        try:
            result = await client.arun_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4)
            deltas = [d async for d in client.arun_chat_completions_stream([{"role": "user", "content": "hi"}])]
            return result, deltas
        finally:
            await client.aclose()

    result, deltas = asyncio.run(main())
    assert result == "async ok" and deltas == ["a", "b"]
    assert all(urlsplit(r.path).path == "/openai/deployments/gpt4o-prod/chat/completions" for r in server.requests)
    assert all(query(r.path)["api-version"] == ["2024-10-21"] for r in server.requests)


# -- credentials never leak ------------------------------------------------------------------


def test_credentials_never_leak(server, caplog):
    def echo(rec: Any) -> Step:
        seen = rec.headers.get("api-key") or rec.headers.get("authorization")
        return Step(429, {"error": {"code": "429", "message": f"key {seen} is throttled"}},
                    headers={"Retry-After": "0"})

    server.default = echo
    for options, secret in (({}, KEY), ({"api_key": None, "azure_ad_token": AD_TOKEN}, AD_TOKEN)):
        client = azure(server, max_retries=1, **options)
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(GenAIError) as info:
                client.run_chat_completions([{"role": "user", "content": "hi"}])
            _, error = client.run_chat_completions([{"role": "user", "content": "hi"}], return_error=True)
            stream = client.run_chat_completions_stream([{"role": "user", "content": "hi"}], return_error=True)
            list(stream)
        assert "***" in info.value.message and "retry 1 of 1" in caplog.text
        for text in (str(info.value), repr(info.value), str(info.value.body), json.dumps(info.value.to_dict()),
                     json.dumps(error), json.dumps(stream.error), repr(client), caplog.text):
            assert secret not in text


def test_token_callable_tokens_never_leak(server, caplog):
    """Tokens from a token provider change per request; each one issued is still scrubbed."""
    fresh = "fresh-entra-token-0123456789"
    server.add(429, {"error": {"message": f"throttled for token {fresh}"}}, headers={"Retry-After": "0"})
    server.add(401, {"error": {"message": f"token {fresh} expired"}})
    client = azure(server, api_key=None, azure_ad_token=lambda: fresh, max_retries=1)
    caplog.set_level(logging.DEBUG, logger="gen_ai")
    _, error = client.run_chat_completions([{"role": "user", "content": "hi"}], return_error=True)
    assert error["type"] == "AuthenticationError"
    assert fresh not in str(error) and fresh not in caplog.text and "***" in error["message"]


# -- embeddings ----------------------------------------------------------------------------------


def _azure_embeddings(rec: Any) -> Step:
    import array
    import base64

    body = rec.json()
    data = []
    for i, text in enumerate(body["input"]):
        vec = [float(len(text)), 0.25]
        emb = (base64.b64encode(array.array("f", vec).tobytes()).decode()
               if body.get("encoding_format") == "base64" else vec)
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return Step(200, {"object": "list", "data": data, "model": "text-embedding-3-small",
                      "usage": {"prompt_tokens": len(body["input"]), "total_tokens": len(body["input"])}})


def test_embeddings_classic_and_v1_routes(server, openai_spec):
    server.default = _azure_embeddings
    client = azure(server, deployment="embed-dep")
    result = client.run_embeddings(["abc", "de"], dimensions=2)
    assert result == [[3.0, 0.25], [2.0, 0.25]] and result.model == "text-embedding-3-small"
    rec = server.requests[-1]
    assert urlsplit(rec.path).path == "/openai/deployments/embed-dep/embeddings"
    assert query(rec.path) == {"api-version": ["2024-10-21"]} and rec.headers["api-key"] == KEY
    assert list(spec_validator(openai_spec, "CreateEmbeddingRequest").iter_errors(rec.json())) == []
    assert rec.json()["encoding_format"] == "base64" and rec.json()["dimensions"] == 2

    tokens = iter(["tok-a", "tok-b"])
    v1 = create_client(provider="azure", endpoint=f"http://127.0.0.1:{server.port}/openai/v1", api_version="v1",
                       model_name="embed-dep", azure_ad_token=lambda: next(tokens))

    async def main():
        out = await v1.arun_embeddings(["x", "yy", "zzz"], batch_size=2, max_concurrent=1)
        await v1.aclose()
        return out

    assert asyncio.run(main()) == [[1.0, 0.25], [2.0, 0.25], [3.0, 0.25]]
    recs = server.requests[-2:]
    assert [r.path for r in recs] == ["/openai/v1/embeddings"] * 2
    assert [r.json()["model"] for r in recs] == ["embed-dep"] * 2
    assert [r.headers["authorization"] for r in recs] == ["Bearer tok-a", "Bearer tok-b"]


def test_embedding_errors_never_leak_the_key(server):
    server.default = Step(401, {"error": {"code": "401", "message": f"Access denied: key {KEY} is invalid"}})
    client = azure(server)
    none, error = client.run_embeddings(["a"], return_error=True)
    assert none is None and error["type"] == "AuthenticationError" and KEY not in json.dumps(error)
