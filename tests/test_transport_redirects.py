"""Redirect policy of both transports (docs/security.md, "Redirects").

Two loopback fault servers: the one the client is configured for, and a "redirector target" on
a second port that records every request it receives. Redirects are not followed by default;
``follow_redirects=True`` follows same-origin redirects only; a credential header never reaches
the other origin, for every provider's credential header, sync and async, streaming too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fault_server import FaultServer, Step, chat_body, chat_chunks

from gen_ai import RedirectError, create_client

MESSAGES = [{"role": "user", "content": "hi"}]
KEY = "sk-redirect-SECRET-0123456789"
AKID, AWS_SECRET, AWS_TOKEN = "AKIAREDIRECTTEST0001", "aws-secret-redirect-0123456789", "aws-session-token-0123456789"

# provider -> (create_client arguments given the server, the credential headers it sends)
PROVIDERS: dict[str, Any] = {
    "openai": (lambda s: dict(provider="openai", endpoint=s.url, model_name="m", api_key=KEY),
               {"authorization": f"Bearer {KEY}"}),
    "azure": (lambda s: dict(provider="azure", endpoint=f"http://127.0.0.1:{s.port}/", deployment="d",
                             api_key=KEY),
              {"api-key": KEY}),
    "anthropic": (lambda s: dict(provider="anthropic", endpoint=s.url, model_name="claude-x", api_key=KEY),
                  {"x-api-key": KEY}),
    "gemini": (lambda s: dict(provider="gemini", endpoint=s.url, model_name="gemini-x", api_key=KEY),
               {"x-goog-api-key": KEY}),
    "bedrock": (lambda s: dict(provider="bedrock", endpoint=f"http://127.0.0.1:{s.port}", model_name="m-1",
                               region="us-west-2", api_key=AKID, secret_key=AWS_SECRET, session_token=AWS_TOKEN),
                {"x-amz-security-token": AWS_TOKEN, "authorization": "AWS4-HMAC-SHA256 Credential=" + AKID}),
}
SECRETS = (KEY, AKID, AWS_SECRET, AWS_TOKEN)


@pytest.fixture
def elsewhere():
    """The other origin: records what it receives; must receive nothing."""
    s = FaultServer(default=Step(200, chat_body("you should not be here")))
    yield s
    s.close()


def _run(client: Any, mode: str) -> Any:
    """One call in ``mode``: sync / async, plain / stream; returns the error dict (or None)."""
    if mode == "sync":
        return client.run_chat_completions(MESSAGES, return_error=True)[1]
    if mode == "sync-stream":
        stream = client.run_chat_completions_stream(MESSAGES, return_error=True)
        list(stream)
        return stream.error

    async def main() -> Any:
        async with client:
            if mode == "async":
                return (await client.arun_chat_completions(MESSAGES, return_error=True))[1]
            stream = client.arun_chat_completions_stream(MESSAGES, return_error=True)
            async for _ in stream:
                pass
            return stream.error

    return asyncio.run(main())


MODES = ["sync", "sync-stream", "async", "async-stream"]


def _leaks(server: FaultServer) -> list[str]:
    return [f"{name}: {value}" for r in server.requests for name, value in r.headers.items()
            if any(secret in value for secret in SECRETS)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("follow", [False, True])
def test_cross_origin_redirect_is_never_followed(fault_server, elsewhere, provider, mode, follow):
    make, sent = PROVIDERS[provider]
    target = f"http://127.0.0.1:{elsewhere.port}/steal"
    fault_server.default = Step(307, {"error": {"message": "moved"}}, headers={"Location": target})
    client = create_client(**make(fault_server), **({"follow_redirects": True} if follow else {}), max_retries=0)
    error = _run(client, mode)
    assert error is not None and error["type"] == "RedirectError", error
    assert error["status_code"] == 307 and target in error["message"]
    assert elsewhere.requests == [], _leaks(elsewhere)
    # the credentials were really sent to the configured origin, so the test could see a leak
    first = fault_server.requests[0].headers
    for name, value in sent.items():
        assert value in first[name]
    assert not any(secret in str(error) for secret in SECRETS)


@pytest.mark.parametrize("mode", MODES)
def test_redirect_error_says_where_and_is_not_retried(fault_server, mode):
    fault_server.default = Step(308, b"", headers={"Location": "/v2/chat/completions"})
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY, max_retries=3)
    error = _run(client, mode)
    assert error["type"] == "RedirectError" and error["status_code"] == 308
    assert f"http://127.0.0.1:{fault_server.port}/v2/chat/completions" in error["message"]
    assert "follow_redirects=True" in error["suggestion"]
    assert len(fault_server.requests) == 1  # a redirect is an answer, not a failure to retry


def test_redirect_error_attributes(fault_server):
    fault_server.default = Step(301, b"", headers={"Location": "https://api.example.com/v1/chat/completions"})
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY)
    with pytest.raises(RedirectError) as info:
        client.run_chat_completions(MESSAGES)
    assert info.value.location == "https://api.example.com/v1/chat/completions"
    assert info.value.status_code == 301 and not info.value.retryable


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_same_origin_redirect_followed_on_opt_in(fault_server, provider, mode):
    make, sent = PROVIDERS[provider]
    fault_server.add(307, b"", headers={"Location": "/moved/here?x=1"})
    fault_server.add(500, {"error": {"message": "reached the new path"}})
    client = create_client(**make(fault_server), follow_redirects=True, max_retries=0)
    error = _run(client, mode)
    assert len(fault_server.requests) == 2
    first, second = fault_server.requests
    assert second.path == "/moved/here?x=1"
    assert second.method == first.method == "POST" and second.body == first.body  # 307 keeps method and body
    for name in sent:  # the credentials stay with their own origin, and go on being sent there
        assert second.headers[name] == first.headers[name]
    assert error is not None and "reached the new path" in error["message"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_same_origin_redirect_success_and_hop_limit(fault_server, mode):
    fault_server.add(302, b"", headers={"Location": "/v1/b"})
    fault_server.add(308, b"", headers={"Location": "/v1/c"})
    fault_server.add(200, chat_body("arrived"))
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY, follow_redirects=True)
    if mode == "sync":
        assert client.run_chat_completions(MESSAGES) == "arrived"
    else:
        async def main() -> Any:
            async with client:
                return await client.arun_chat_completions(MESSAGES)

        assert asyncio.run(main()) == "arrived"
    assert [r.path for r in fault_server.requests] == ["/v1/chat/completions", "/v1/b", "/v1/c"]
    fault_server.requests.clear()
    fault_server.default = Step(307, b"", headers={"Location": "/v1/loop"})
    error = _run(client, mode)
    assert error["type"] == "RedirectError" and "more than 5 redirects" in error["message"]
    assert len(fault_server.requests) == 6


def test_same_origin_stream_redirect_followed(fault_server):
    fault_server.add(307, b"", headers={"Location": "/v1/stream-here"})
    fault_server.add(200, chunks=chat_chunks(["a", "b"]))
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY, follow_redirects=True)
    assert list(client.run_chat_completions_stream(MESSAGES)) == ["a", "b"]
    assert fault_server.requests[1].path == "/v1/stream-here"


@pytest.mark.parametrize("location", ["http://localhost:{port}/v1/x", "https://127.0.0.1:{port}/v1/x"])
def test_other_host_name_or_scheme_is_another_origin(fault_server, location):
    target = location.format(port=fault_server.port)
    fault_server.default = Step(307, b"", headers={"Location": target})
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY, follow_redirects=True)
    _, error = client.run_chat_completions(MESSAGES, return_error=True)
    assert error["type"] == "RedirectError" and "another origin" in error["message"]
    assert len(fault_server.requests) == 1


def test_303_is_not_turned_into_a_get(fault_server):
    fault_server.default = Step(303, b"", headers={"Location": "/v1/result"})
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY, follow_redirects=True)
    _, error = client.run_chat_completions(MESSAGES, return_error=True)
    assert error["type"] == "RedirectError" and "303" in error["message"]
    assert len(fault_server.requests) == 1
