"""One matrix of behaviours, run against every real server the suite starts.

Targets: llama-cpp-python's server, llama.cpp's own server (xllamacpp), vLLM on CPU, and
litellm's proxy in front of each of the three (the client sends litellm's master key as its
api_key). What each server does differently is recorded in docs/servers.md, from these tests.

Cases that fail today because of client bugs that issue 10 (parts 3-6) fixes on the
``dialects`` branch are marked ``xfail(strict=True)`` with the reason: when the fix merges they
XPASS, which fails the run until the marker is removed. Nothing here skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
from servers import LITELLM_ROUTES
from test_seed_examples import seed_blocks

from gen_ai import ChatResult, ChatResults
from gen_ai.errors import BadRequestError, GenAIError, NotFoundError, ServerError, StreamError
from gen_ai.factory import create_client

ROOT = Path(__file__).resolve().parents[1]
heavy = pytest.mark.heavy

LLAMA_CPP_PYTHON, XLLAMACPP, VLLM = "llama-cpp-python", "xllamacpp", "vllm"
BACKEND_FIXTURE = {LLAMA_CPP_PYTHON: "llama_server", XLLAMACPP: "xllamacpp_server", VLLM: "vllm_server"}
LITELLM_MODEL = {fixture: public for public, (_, fixture) in LITELLM_ROUTES.items()}

TARGETS = [
    pytest.param(LLAMA_CPP_PYTHON, id=LLAMA_CPP_PYTHON),
    pytest.param(XLLAMACPP, id=XLLAMACPP),
    pytest.param(VLLM, id=VLLM, marks=heavy),
    pytest.param(f"litellm->{LLAMA_CPP_PYTHON}", id=f"litellm-{LLAMA_CPP_PYTHON}", marks=heavy),
    pytest.param(f"litellm->{XLLAMACPP}", id=f"litellm-{XLLAMACPP}", marks=heavy),
    pytest.param(f"litellm->{VLLM}", id=f"litellm-{VLLM}", marks=heavy),
]

# (test, target) -> why it fails today: client limitations, strict so a fix shows up as XPASS.
CLIENT_BUGS: dict[tuple[str, str], str] = {
    # Empty: every client bug the matrix found is fixed (the dialects work). Known bugs go here as
    # (case, target) -> reason; they run as strict xfails, so a fix turns them into a failure.
}


class Target:
    """One row of the matrix: where to send, which model name, which key."""

    def __init__(self, name: str, backend: str, url: str, model: str, api_key: str | None) -> None:
        self.name, self.backend, self.url, self.model, self.api_key = name, backend, url, model, api_key
        self.via_litellm = name.startswith("litellm->")

    def client(self, **kwargs):
        return create_client(provider="openai", endpoint=self.url, model_name=kwargs.pop("model_name", self.model),
                             api_key=self.api_key, **kwargs)

    def __repr__(self) -> str:
        return f"Target({self.name})"


@pytest.fixture(params=TARGETS)
def target(request) -> Target:
    name = request.param
    backend = name.removeprefix("litellm->")
    if name.startswith("litellm->"):
        proxy = request.getfixturevalue("litellm_proxy")
        return Target(name, backend, proxy.url, LITELLM_MODEL[BACKEND_FIXTURE[backend]], proxy.api_key)
    server = request.getfixturevalue(BACKEND_FIXTURE[backend])
    url = server if isinstance(server, str) else server.url
    return Target(name, backend, url, "smollm2", None)


@pytest.fixture
def tclient(target):
    c = target.client()
    yield c
    c.close()


def known_client_bug(request, case: str, target: Target) -> None:
    reason = CLIENT_BUGS.get((case, target.name))
    if reason:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def no_secret(target: Target, *texts: str) -> None:
    if target.api_key:
        for text in texts:
            assert target.api_key not in text


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def check_person(text: str, parsed) -> None:
    value = json.loads(text)  # the text itself is the JSON answer
    jsonschema.validate(value, PERSON)
    assert parsed == value


# ------------------------------------------------------------------------------------------ seed


def test_seed_examples_run_verbatim(target):
    """Every code block of the seed document, with only endpoint, model and key replaced."""
    import contextlib
    import io

    namespace: dict = {}
    out = io.StringIO()
    for block in seed_blocks():
        code = block.replace('"https://api.example.com/v1"', repr(target.url))
        code = code.replace('"gpt-3.5-turbo"', repr(target.model))
        code = code.replace('"your-api-key"', repr(target.api_key or "your-api-key"))
        with contextlib.redirect_stdout(out):
            exec(compile(code, "chat-completions.md", "exec"), namespace)
        if "How does it compare to JavaScript?" in block:
            assert namespace["messages"][-2]["role"] == "assistant"
            assert namespace["response"].strip()
    assert out.getvalue().strip()
    review = json.loads(namespace["response"])
    namespace["CodeReview"].model_validate(review)
    namespace["client"].close()


# ------------------------------------------------------------------------------------- streaming

# Servers that send usage in the last chunk when asked (stream_options.include_usage).
# llama-cpp-python sends none; litellm then counts the tokens itself (its own tokenizer, so the
# numbers differ from the server's).
STREAM_USAGE = {LLAMA_CPP_PYTHON: False}


def test_chat_stream_deltas_usage_finish_reason(target, tclient):
    stream = tclient.run_chat_completions_stream([SYSTEM, {"role": "user", "content": "What is Python?"}],
                                                 max_tokens=12)
    deltas = list(stream)
    assert len(deltas) > 1 and all(isinstance(d, str) and d for d in deltas)
    assert "".join(deltas) == stream.text and stream.text.strip()
    assert stream.finish_reason == "length"  # 12 tokens are not enough for this question
    assert stream.first_token_latency is not None and stream.latency >= stream.first_token_latency
    if STREAM_USAGE.get(target.name, True):
        assert stream.usage is not None and stream.usage.completion_tokens > 0
        assert stream.usage.total_tokens == stream.usage.prompt_tokens + stream.usage.completion_tokens
        if not target.via_litellm:
            assert stream.usage.completion_tokens == 12
    else:
        assert stream.usage is None


def test_multi_turn(tclient):
    messages = [SYSTEM, {"role": "user", "content": "What is Python?"}]
    first = tclient.run_chat_completions(messages, max_tokens=10)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "And JavaScript?"}]
    second = tclient.run_chat_completions(messages, max_tokens=10)
    assert first.strip() and second.strip()
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens - 2


@pytest.mark.parametrize("n", [2, 3])
def test_n_answers(request, target, tclient, n):
    known_client_bug(request, f"n{n}", target)
    results = tclient.run_chat_completions([{"role": "user", "content": "Say hi."}], n=n, max_tokens=5,
                                           temperature=0.9)
    assert isinstance(results, ChatResults) and len(results) == n
    assert all(isinstance(r, ChatResult) and r.strip() for r in results)
    assert [r.choice_index for r in results] == list(range(n))
    assert results.usage is not None and results.usage.completion_tokens > 0


def test_text_completion_and_stream(target, tclient):
    text = tclient.run_completions("The capital of France is", max_tokens=6)
    assert isinstance(text, ChatResult) and text.strip()
    assert text.finish_reason in ("stop", "length") and text.usage.completion_tokens > 0
    stream = tclient.run_completions_stream("The capital of France is", max_tokens=6)
    deltas = list(stream)
    assert len(deltas) > 1 and "".join(deltas) == stream.text
    assert stream.finish_reason == "length"
    if STREAM_USAGE.get(target.name, True):
        assert stream.usage is not None and stream.usage.completion_tokens > 0


# ----------------------------------------------------------------------------------- guided_json

@pytest.mark.parametrize("stream", [False, True], ids=["call", "stream"])
def test_guided_json_chat(target, tclient, stream):
    """The server must enforce the schema: no re-ask (schema_retries=0) may rescue the answer."""
    messages = [{"role": "user", "content": "Describe a person as JSON."}]
    if stream:
        s = tclient.run_chat_completions_stream(messages, max_tokens=60, guided_json=PERSON)
        text = "".join(s)
        check_person(text, s.parsed)
    else:
        result = tclient.run_chat_completions(messages, max_tokens=60, guided_json=PERSON, schema_retries=0)
        check_person(result, result.parsed)
        assert result.finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["call", "stream"])
def test_guided_json_text_completion(request, target, tclient, stream):
    known_client_bug(request, "completion_guided", target)
    prompt = "A person as JSON: "
    if stream:
        s = tclient.run_completions_stream(prompt, max_tokens=60, guided_json=PERSON)
        text = "".join(s)
        check_person(text, s.parsed)
    else:
        result = tclient.run_completions(prompt, max_tokens=60, guided_json=PERSON, schema_retries=0)
        check_person(result, result.parsed)


# litellm hides its backend (owned_by "openai" for every route); the docs say to force the
# backend's dialect behind it. That must work for chat and text completions alike.
FORCED_DIALECT = {LLAMA_CPP_PYTHON: "llama-cpp-python", XLLAMACPP: "llama.cpp", VLLM: "vllm"}


@pytest.mark.parametrize("target", [p for p in TARGETS if p.values[0].startswith("litellm->")], indirect=True)
def test_guided_json_behind_litellm_forced(target):
    with target.client(dialect=FORCED_DIALECT[target.backend]) as c:
        chat = c.run_chat_completions([{"role": "user", "content": "Describe a person as JSON."}], max_tokens=60,
                                      guided_json=PERSON, schema_retries=0)
        check_person(chat, chat.parsed)
        text = c.run_completions("A person as JSON: ", max_tokens=60, guided_json=PERSON, schema_retries=0)
        check_person(text, text.parsed)


# ---------------------------------------------------------------------------------------- errors

# What each server says when the prompt does not fit its context (2048 tokens per slot).
CONTEXT_MESSAGE = {
    LLAMA_CPP_PYTHON: "maximum context length is 2048 tokens",
    XLLAMACPP: "exceeds the available context size (2048 tokens)",
    VLLM: "maximum context length is 2048 tokens",
}


def test_context_too_long(target):
    with target.client(max_retries=0) as c:
        with pytest.raises(BadRequestError) as info:
            c.run_chat_completions([{"role": "user", "content": "word " * 5000}], max_tokens=5)
        err = info.value
        assert err.status_code == 400
        assert CONTEXT_MESSAGE[target.backend] in err.message
        if target.via_litellm:
            assert "ContextWindowExceededError" in err.message
        assert "context" in err.suggestion.lower()
        assert err.url.endswith("/chat/completions")
        result, error = c.run_chat_completions([{"role": "user", "content": "word " * 5000}], max_tokens=5,
                                               return_error=True)
        assert result is None and error["type"] == "BadRequestError" and error["status_code"] == 400
        no_secret(target, str(err), repr(err), json.dumps(error))


def test_unknown_model(target):
    with target.client(model_name="no-such-model", max_retries=0) as c:
        call = lambda: c.run_chat_completions([{"role": "user", "content": "Hi"}], max_tokens=3)  # noqa: E731
        if target.via_litellm:
            # litellm checks the name against its routes: 400, not 404.
            with pytest.raises(BadRequestError) as info:
                call()
            assert info.value.status_code == 400
            assert "Invalid model name passed in model=no-such-model" in info.value.message
            no_secret(target, str(info.value), json.dumps(info.value.to_dict()))
        elif target.backend == VLLM:
            with pytest.raises(NotFoundError) as info:
                call()
            assert info.value.status_code == 404
            assert "The model `no-such-model` does not exist" in info.value.message
        else:
            # llama-cpp-python and llama.cpp serve their one model whatever name is asked for.
            result = call()
            assert isinstance(result, ChatResult) and result.strip()


BOGUS_FORMAT = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}


def test_invalid_grammar_in_a_stream(target):
    """An invalid schema passed straight through (``response_format=`` as an extra body field).

    vLLM answers 200 and sends the error as an SSE event; the client raises StreamError with the
    server's message. litellm reads that first event before answering, so through the proxy it
    is a plain 400. llama.cpp refuses with 400 up front; llama-cpp-python does not know the
    json_schema type at all and answers 500 with its validation error.
    """
    with target.client(max_retries=0) as c:
        stream = c.run_chat_completions_stream([{"role": "user", "content": "Hi"}], max_tokens=5,
                                               response_format=BOGUS_FORMAT)
        expected: type[GenAIError]
        if target.backend == VLLM and not target.via_litellm:
            expected, message = StreamError, "Grammar error: Invalid type: bogus"
        elif target.backend == LLAMA_CPP_PYTHON:
            expected, message = ServerError, "Input should be 'text' or 'json_object'"
        elif target.backend == VLLM:
            expected, message = BadRequestError, "Grammar error: Invalid type: bogus"
        else:
            expected, message = BadRequestError, "unrecognized type bogus"
        with pytest.raises(expected) as info:
            list(stream)
        assert message in info.value.message
        if expected is StreamError:
            assert "mid-stream" in info.value.message and stream.text == ""
        no_secret(target, str(info.value), json.dumps(info.value.to_dict()))


# ----------------------------------------------------------------------------------------- batch

def test_chat_batch(tclient):
    prompts = [[{"role": "user", "content": f"Say the number {i}."}] for i in range(6)]
    results = tclient.run_chat_completions_batch(prompts, max_tokens=4, max_concurrent=3, progress=False)
    assert len(results) == 6 and results.errors == [None] * 6
    assert all(isinstance(r, ChatResult) and r.strip() for r in results)
    assert results.stats.succeeded == 6 and results.stats.completion_tokens > 0
    completions = tclient.run_completions_batch(["One, two,", "Red, green,"], max_tokens=3, progress=False)
    assert all(r.strip() for r in completions) and completions.stats.failed == 0


def _batch_input(path: Path, count: int) -> list[str]:
    ids = [f"req-{i}" for i in range(count)]
    with open(path, "w") as f:
        for i, cid in enumerate(ids):
            if i % 4 == 3:
                line = {"custom_id": cid, "method": "POST", "url": "/v1/completions",
                        "body": {"model": "ignored", "prompt": f"{i} plus one is", "max_tokens": 3}}
            else:
                line = {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "ignored", "max_tokens": 3,
                                 "messages": [{"role": "user", "content": f"Say {i}."}]}}
            f.write(json.dumps(line) + "\n")
    return ids


def test_gen_ai_batch_killed_and_resumed(target, tmp_path):
    """``gen-ai batch`` against the real server: SIGKILL mid-run, rerun, every request once."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = _batch_input(inp, 40)
    env = {**os.environ, "OPENAI_API_KEY": target.api_key or ""}
    cmd = [sys.executable, "-m", "gen_ai", "batch", str(inp), str(out), "--endpoint", target.url,
           "--model", target.model, "-c", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 4:
            break
        if proc.poll() is not None:
            pytest.fail(f"the batch ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("the batch wrote fewer than 4 results in 120 s")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stderr.close()
    data = out.read_bytes()
    done_before = {json.loads(line)["custom_id"] for line in data[: data.rfind(b"\n") + 1].splitlines()}
    assert 4 <= len(done_before) < 40

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "already done" in rerun.stderr
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert Counter(r["custom_id"] for r in records) == Counter(ids)  # each exactly once, none lost
    for r in records:
        assert r["error"] is None and r["response"]["status_code"] == 200
        body = r["response"]["body"]
        choice = body["choices"][0]
        assert (choice.get("text") if r["custom_id"] in ids[3::4] else choice["message"]["content"]).strip()
    no_secret(target, rerun.stderr, out.read_text())
