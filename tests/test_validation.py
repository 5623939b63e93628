"""Bad input raises a clear InvalidInputError naming the field, before any network call."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gen_ai import ConfigurationError, InvalidInputError, create_client
from gen_ai.factory import create_client as factory_create_client

GOOD = [{"role": "user", "content": "hi"}]


@pytest.fixture
def offline(fault_server):
    """A client whose server records every request, to prove nothing was sent."""
    yield create_client(endpoint=fault_server.url, model_name="m")
    assert fault_server.requests == [], "bad input reached the network"


@pytest.mark.parametrize("messages,field", [
    ("hello", "messages"),
    ([], "messages"),
    (["hi"], "messages[0]"),
    ([{"role": "wizard", "content": "x"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": "ok"}, {"role": "user", "content": 5}], "messages[1].content"),
    ([{"role": "user", "content": [{"text": "no type"}]}], "messages[0].content[0]"),
])
def test_bad_messages(offline, messages, field):
    with pytest.raises(InvalidInputError) as info:
        offline.run_chat_completions(messages)
    assert info.value.field == field and field in str(info.value)
    assert info.value.suggestion
    _, error = offline.run_chat_completions(messages, return_error=True)
    assert error["type"] == "InvalidInputError" and error["field"] == field


@pytest.mark.parametrize("kwargs,field", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"timeout": 0}, "timeout"),
    ({"stream": True}, "stream"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_json": 42}, "guided_json"),
    ({"guided_json": {"type": "objekt"}}, "guided_json"),
    ({"schema_retries": -1}, "schema_retries"),
])
def test_bad_parameters(offline, kwargs, field):
    with pytest.raises(InvalidInputError) as info:
        offline.run_chat_completions(GOOD, **kwargs)
    assert info.value.field == field


def test_stream_bad_input_raises_at_call(offline):
    with pytest.raises(InvalidInputError):
        offline.run_chat_completions_stream([], max_tokens=5)
    with pytest.raises(InvalidInputError):
        offline.run_completions_stream("", max_tokens=5)


def test_bad_prompt(offline):
    with pytest.raises(InvalidInputError) as info:
        offline.run_completions(["a", "b"])
    assert info.value.field == "prompt"


def test_unknown_provider_lists_known_ones():
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="opneai", endpoint="http://x", model_name="m")
    assert "openai" in info.value.suggestion


def test_missing_endpoint_and_model(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError) as info:
        create_client(model_name="m")
    assert "OPENAI_BASE_URL" in info.value.suggestion and info.value.field == "endpoint"
    with pytest.raises(ConfigurationError) as info:
        create_client(endpoint="http://x")
    assert info.value.field == "model_name"
    with pytest.raises(ConfigurationError):
        create_client(endpoint="localhost:8000", model_name="m")
    with pytest.raises(ConfigurationError) as info:
        create_client(endpoint="http://x", model_name="m", max_retriez=3)
    assert "max_retriez" in str(info.value)


def test_environment_fallbacks(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://envhost:9000/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123")
    client = factory_create_client(model_name="m")
    assert client.codec.base_url == "http://envhost:9000/v1"
    assert client.codec.secrets() == ("sk-from-env-123",)
    assert "sk-from-env" not in repr(client)


@pytest.mark.parametrize("endpoint,base", [
    ("http://h:8000", "http://h:8000/v1"),
    ("http://h:8000/", "http://h:8000/v1"),
    ("http://h:8000/v1", "http://h:8000/v1"),
    ("http://h:8000/v1/", "http://h:8000/v1"),
    ("https://gw.example.com/openai/v1/", "https://gw.example.com/openai/v1"),
])
def test_endpoint_forms(endpoint, base):
    assert create_client(endpoint=endpoint, model_name="m").codec.base_url == base


def test_import_is_light():
    """import gen_ai loads no transport, validator or optional dependency."""
    code = ("import sys, gen_ai; from gen_ai.factory import create_client; "
            "heavy = [m for m in ('aiohttp', 'jsonschema', 'pydantic', 'http.client', 'ssl', 'llama_cpp', "
            "'botocore', 'PIL', 'ray', 'asyncio') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == "[]"


def test_schema_is_checked_once_and_keeps_property_order():
    from gen_ai.structured import Schema

    schema = {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "integer"}}}
    first = Schema.from_user(schema)
    assert Schema.from_user(dict(schema)) is first        # same content: one check, one validator
    assert list(first.json_schema["properties"]) == ["z", "a"]
    schema["properties"]["z"]["type"] = "number"          # the caller's later edits are a new schema
    assert Schema.from_user(schema) is not first and first.json_schema["properties"]["z"]["type"] == "string"
    for _ in range(2):                                      # a bad schema is never cached as good
        with pytest.raises(InvalidInputError):
            Schema.from_user({"type": "objekt"})
