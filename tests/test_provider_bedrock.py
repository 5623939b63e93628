"""provider="bedrock": request conformance with the Bedrock service model (botocore's own
validator), and the Converse / ConverseStream protocol against a loopback server that answers
like Bedrock: JSON bodies, binary event streams with real CRCs, error headers, SigV4 checks."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import struct
import zlib
from typing import Any

import pytest
from conftest import SPECS
from fault_server import FaultServer, Step

from gen_ai.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    GenAIError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ResponseError,
    ServerError,
    StreamError,
    StreamTruncatedError,
)
from gen_ai.factory import create_client
from gen_ai.structured import Schema
from gen_ai.types import Call

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
AKID = "AKIDEXAMPLE7777"
SECRET = "wJalrXUtnFEMI-secret-K7MDENG"
TOKEN = "FwoGZXIvYXdz-session-token-Xy9"
BEARER = "ABSKQmVkcm9ja0FQSUtleS-bearer-Zz"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


# -- helpers ----------------------------------------------------------------------------------


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total, headers length, CRC), string headers,
    payload, message CRC."""
    raw_headers = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(name: str, body: dict[str, Any]) -> bytes:
    return frame({":event-type": name, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps(body).encode())


def exception(name: str, message: str) -> bytes:
    return frame({":exception-type": name, ":content-type": "application/json", ":message-type": "exception"},
                 json.dumps({"message": message}).encode())


def stream_frames(deltas: list[str], stop: str = "end_turn") -> list[bytes]:
    out = [event("messageStart", {"role": "assistant"})]
    out += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": d}}) for d in deltas]
    out.append(event("contentBlockStop", {"contentBlockIndex": 0}))
    out.append(event("messageStop", {"stopReason": stop}))
    out.append(event("metadata", {"usage": {"inputTokens": 9, "outputTokens": len(deltas), "totalTokens": 9 + len(deltas)},
                                  "metrics": {"latencyMs": 12}}))
    return out


def converse_body(text: str = "Paris", stop: str = "end_turn", content: list[Any] | None = None) -> dict[str, Any]:
    return {"output": {"message": {"role": "assistant", "content": content or [{"text": text}]}},
            "stopReason": stop, "usage": {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14},
            "metrics": {"latencyMs": 42}}


def aws_error(status: int, code: str, message: str) -> Step:
    return Step(status, {"message": message}, headers={"x-amzn-errortype": f"{code}:http://internal.amazon.com/coral/"})


def event_stream_step(chunks: list[bytes]) -> Step:
    return Step(200, chunks=chunks, content_type="application/vnd.amazon.eventstream")


def bedrock(server: FaultServer, **options: Any):
    options.setdefault("api_key", AKID)
    options.setdefault("secret_key", SECRET)
    options.setdefault("session_token", TOKEN)
    return create_client(provider="bedrock", model_name=MODEL, region="us-west-2",
                         endpoint=f"http://127.0.0.1:{server.port}", **options)


_AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
                      r"/bedrock/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})")


def check_sigv4(server: FaultServer, rec: Any, akid: str = AKID, secret: str = SECRET, token: str | None = TOKEN,
                region: str = "us-west-2") -> None:
    """Recompute the signature from what arrived on the wire (path, Host, headers, body)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    match = _AUTH_RE.fullmatch(rec.headers["authorization"])
    assert match, rec.headers["authorization"]
    assert match["akid"] == akid and match["region"] == region
    assert rec.headers["x-amz-date"].startswith(match["date"])
    signed = match["signed"].split(";")
    assert {"host", "x-amz-date", "content-type"} <= set(signed)
    if token:
        assert rec.headers["x-amz-security-token"] == token and "x-amz-security-token" in signed
    request = AWSRequest(method=rec.method, url=f"http://127.0.0.1:{server.port}{rec.path}", data=rec.body,
                         headers={h: rec.headers[h] for h in signed})
    request.context["timestamp"] = rec.headers["x-amz-date"]
    signer = SigV4Auth(Credentials(akid, secret, token), "bedrock", region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    assert expected == match["sig"]


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch, tmp_path):
    """Keep the developer's own AWS setup (and the instance metadata service) out of the tests."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_BEARER_TOKEN_BEDROCK", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# -- conformance with the service model ----------------------------------------------------------


@pytest.fixture(scope="module")
def service_model():
    from botocore.model import ServiceModel

    return ServiceModel(json.loads((SPECS / "bedrock-runtime" / "service-2.json").read_text()), "bedrock-runtime")


def to_api_params(body: dict[str, Any]) -> dict[str, Any]:
    """REST JSON body -> botocore input parameters: modelId from the URL, base64 blobs as bytes."""
    params = json.loads(json.dumps(body))
    params["modelId"] = MODEL
    for message in params.get("messages", []):
        for block in message["content"]:
            if "image" in block:
                block["image"]["source"]["bytes"] = base64.b64decode(block["image"]["source"]["bytes"])
    return params


def validate(service_model: Any, operation: str, body: dict[str, Any]) -> None:
    from botocore.validate import ParamValidator

    shape = service_model.operation_model(operation).input_shape
    report = ParamValidator().validate(to_api_params(body), shape)
    assert not report.has_errors(), report.generate_report()


def body_of(client: Any, call: Call) -> dict[str, Any]:
    request = client.codec.build_request(call)
    return json.loads(request.body)


CHAT = [{"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Spain?"},
        {"role": "user", "content": [{"type": "text", "text": "One word."}]}]


@pytest.mark.parametrize("operation,stream", [("Converse", False), ("ConverseStream", True)])
def test_plain_chat_body_matches_service_model(server, service_model, operation, stream):
    client = bedrock(server)
    body = body_of(client, Call("chat", messages=CHAT, max_tokens=16, temperature=0.5, top_p=0.9, stream=stream))
    validate(service_model, operation, body)
    assert body["system"] == [{"text": "Answer briefly."}]
    # consecutive user turns are merged so roles alternate
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][2]["content"] == [{"text": "And of Spain?"}, {"text": "One word."}]
    assert body["inferenceConfig"] == {"maxTokens": 16, "temperature": 0.5, "topP": 0.9}


def test_completion_body_is_one_user_message(server, service_model):
    client = bedrock(server)
    body = body_of(client, Call("completion", prompt="Once upon a time", max_tokens=8))
    validate(service_model, "Converse", body)
    assert body["messages"] == [{"role": "user", "content": [{"text": "Once upon a time"}]}]
    assert "topP" not in body["inferenceConfig"]  # top_p=1.0 is not sent (Claude 4.5 rejects both)


@pytest.mark.parametrize("mode", ["output_config", "tool"])
def test_guided_json_bodies_match_service_model(server, service_model, mode):
    client = bedrock(server, structured_output=mode)
    call = Call("chat", messages=CHAT[:2], max_tokens=32, schema=Schema.from_user(SCHEMA))
    body = body_of(client, call)
    validate(service_model, "Converse", body)
    validate(service_model, "ConverseStream", body)
    if mode == "output_config":
        fmt = body["outputConfig"]["textFormat"]
        assert fmt["type"] == "json_schema"
        assert json.loads(fmt["structure"]["jsonSchema"]["schema"]) == SCHEMA
        assert "toolConfig" not in body
    else:
        tool = body["toolConfig"]["tools"][0]["toolSpec"]
        assert tool["inputSchema"]["json"] == SCHEMA
        assert body["toolConfig"]["toolChoice"] == {"tool": {"name": tool["name"]}}
        assert "outputConfig" not in body


def test_image_body_matches_service_model(server, service_model):
    client = bedrock(server)
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}},
    ]}]
    body = body_of(client, Call("chat", messages=messages, max_tokens=8))
    validate(service_model, "Converse", body)
    assert body["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": PNG}}}
    assert body["messages"][0]["content"][2]["image"]["format"] == "jpeg"


def test_validator_catches_a_wrong_body(service_model):
    """The oracle is not a rubber stamp: a schema object where the model wants a string fails."""
    from botocore.validate import ParamValidator

    bad = {"modelId": MODEL, "messages": [{"role": "user", "content": [{"text": "x"}]}],
           "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": SCHEMA}}}}}
    report = ParamValidator().validate(bad, service_model.operation_model("Converse").input_shape)
    assert report.has_errors() and "schema" in report.generate_report()


def test_http_image_url_is_a_clear_input_error(server):
    client = bedrock(server)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]
    with pytest.raises(InvalidInputError, match="does not fetch image URLs"):
        client.run_chat_completions(messages, max_tokens=4)
    assert server.requests == []


def test_temperature_above_one_is_rejected_before_sending(server):
    client = bedrock(server)
    with pytest.raises(InvalidInputError, match="0..1"):
        client.run_chat_completions([{"role": "user", "content": "hi"}], temperature=1.5)
    assert server.requests == []


# -- configuration -----------------------------------------------------------------------------


def test_missing_region_and_credentials_are_configuration_errors(monkeypatch):
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="bedrock", model_name=MODEL, api_key=AKID, secret_key=SECRET)
    assert info.value.field == "region"
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="bedrock", model_name=MODEL, region="us-east-1")
    assert info.value.field == "api_key" and "credential" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="bedrock", model_name=MODEL, region="us-east-1", api_key=AKID)
    assert info.value.field == "secret_key"
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="bedrock", region="us-east-1", api_key=AKID, secret_key=SECRET)
    assert info.value.field == "model_name"


def test_region_from_environment_and_default_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    client = create_client(provider="bedrock", model_name="us.amazon.nova-lite-v1:0", api_key=AKID, secret_key=SECRET)
    request = client.codec.build_request(Call("chat", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert request.url == "https://bedrock-runtime.eu-central-1.amazonaws.com/model/us.amazon.nova-lite-v1:0/converse-stream"
    assert "/eu-central-1/bedrock/aws4_request" in request.headers["Authorization"]


# -- Converse against a loopback server -------------------------------------------------------


def test_converse_non_streaming_sigv4(server):
    server.add(200, converse_body("Paris"), headers={"x-amzn-RequestId": "req-1"})
    client = bedrock(server)
    result = client.run_chat_completions(CHAT[:2], max_tokens=8)
    assert result == "Paris" and result.finish_reason == "stop"
    assert result.usage.to_dict() == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14,
                                      "cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert result.model == MODEL and result.id == "req-1"
    rec = server.requests[0]
    assert rec.method == "POST" and rec.path == "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
    assert rec.json()["inferenceConfig"]["maxTokens"] == 8
    check_sigv4(server, rec)


def test_inference_profile_arn_in_path(server):
    arn = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
    server.add(200, converse_body("ok"))
    client = create_client(provider="bedrock", model_name=arn, region="us-west-2", api_key=AKID,
                           secret_key=SECRET, endpoint=f"http://127.0.0.1:{server.port}")
    assert client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4) == "ok"
    rec = server.requests[0]
    assert rec.path == "/model/" + arn.replace("/", "%2F") + "/converse"
    check_sigv4(server, rec, token=None)


def test_completion_and_stop_reason_mapping(server):
    server.add(200, converse_body("and then", stop="max_tokens"))
    server.add(200, converse_body("", stop="content_filtered"))
    client = bedrock(server)
    result = client.run_completions("Once upon a time", max_tokens=2)
    assert result == "and then" and result.finish_reason == "length"
    assert server.requests[0].json()["messages"] == [{"role": "user", "content": [{"text": "Once upon a time"}]}]
    assert client.run_completions("x", max_tokens=2).finish_reason == "content_filter"


def test_throttling_then_success(server, caplog):
    server.add(aws_error(429, "ThrottlingException", "Too many requests, please wait before trying again."))
    server.add(200, converse_body("after retry"))
    client = bedrock(server, max_retries=2)
    with caplog.at_level(logging.WARNING, logger="gen_ai"):
        assert client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4) == "after retry"
    assert len(server.requests) == 2
    assert "RateLimitError" in caplog.text
    # each retry is signed again (fresh request, same valid signature scheme)
    check_sigv4(server, server.requests[1])


@pytest.mark.parametrize("status,code,cls,retryable", [
    (400, "ValidationException", BadRequestError, False),
    (403, "AccessDeniedException", AuthenticationError, False),
    (404, "ResourceNotFoundException", NotFoundError, False),
    (503, "ServiceUnavailableException", ServerError, True),
    (429, "ModelNotReadyException", ServerError, True),
    (500, "InternalServerException", ServerError, True),
    (429, "ThrottlingException", RateLimitError, True),
])
def test_error_mapping(server, status, code, cls, retryable):
    server.add(aws_error(status, code, f"{code} happened"))
    client = bedrock(server, max_retries=0)
    with pytest.raises(cls) as info:
        client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4)
    error = info.value
    assert error.retryable is retryable and error.error_type == code
    assert f"{code} happened" in error.message and error.provider == "bedrock"


def test_error_code_from_body_type_without_header(server):
    server.add(400, {"__type": "com.amazon.bedrock#ValidationException", "message": "bad maxTokens"})
    client = bedrock(server, max_retries=0)
    result, error = client.run_chat_completions([{"role": "user", "content": "hi"}], return_error=True)
    assert result is None and error["type"] == "BadRequestError"
    assert error["error_type"] == "ValidationException" and error["message"] == "bad maxTokens"


def test_guided_json_forced_tool_call(server):
    server.add(200, converse_body(stop="tool_use", content=[
        {"toolUse": {"toolUseId": "t1", "name": "x", "input": {"city": "Paris"}}}]))
    client = bedrock(server, structured_output="tool")
    result = client.run_chat_completions([{"role": "user", "content": "City?"}], guided_json=SCHEMA, max_tokens=32)
    assert result.parsed == {"city": "Paris"} and json.loads(result) == {"city": "Paris"}
    assert result.finish_reason == "stop"
    assert "toolConfig" in server.requests[0].json()


def test_guided_json_auto_falls_back_to_tool_call(server):
    server.add(aws_error(400, "ValidationException", "This model doesn't support the outputConfig.textFormat field."))
    server.add(200, converse_body(stop="tool_use", content=[
        {"toolUse": {"toolUseId": "t1", "name": "x", "input": {"city": "Rome"}}}]))
    client = bedrock(server)
    result = client.run_chat_completions([{"role": "user", "content": "City?"}], guided_json=SCHEMA, max_tokens=32)
    assert result.parsed == {"city": "Rome"}
    first, second = (r.json() for r in server.requests)
    assert "outputConfig" in first and "toolConfig" not in first
    assert "toolConfig" in second and "outputConfig" not in second


def test_guided_json_output_config_answer(server):
    server.add(200, converse_body('{"city": "Oslo"}'))
    client = bedrock(server)
    result = client.run_chat_completions([{"role": "user", "content": "City?"}], guided_json=SCHEMA, max_tokens=32)
    assert result.parsed == {"city": "Oslo"}
    assert len(server.requests) == 1 and server.requests[0].method == "POST"


def test_n_is_topped_up_with_single_requests(server):
    server.add(200, converse_body("one"))
    server.add(200, converse_body("two"))
    client = bedrock(server)
    results = client.run_chat_completions([{"role": "user", "content": "hi"}], n=2, max_tokens=4)
    assert [str(r) for r in results] == ["one", "two"]
    assert results.usage.total_tokens == 28
    assert all("n" not in r.json() for r in server.requests)


# -- ConverseStream ----------------------------------------------------------------------------


def test_frames_decode_with_botocore():
    """The hand-built frames are real event-stream messages (botocore checks both CRCs)."""
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(stream_frames(["a", "b"])))
    messages = list(buffer)
    assert [m.headers[":event-type"] for m in messages] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]


def test_converse_stream(server):
    payload = b"".join(stream_frames(["The ", "capital ", "is Paris."]))
    # split the bytes at awkward places so frames straddle reads
    chunks = [payload[i:i + 37] for i in range(0, len(payload), 37)]
    server.add(event_stream_step(chunks))
    client = bedrock(server)
    stream = client.run_chat_completions_stream(CHAT[:2], max_tokens=16)
    deltas = list(stream)
    assert deltas == ["The ", "capital ", "is Paris."]
    assert stream.text == "The capital is Paris." and stream.finish_reason == "stop"
    assert stream.usage.to_dict() == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                                      "cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    rec = server.requests[0]
    assert rec.path.endswith("/converse-stream")
    assert rec.headers["accept"] == "application/vnd.amazon.eventstream"
    check_sigv4(server, rec)


def test_stream_mid_stream_exception_event(server):
    frames = stream_frames(["partial "])[:2] + [exception("throttlingException", "Too many tokens, slow down")]
    server.add(event_stream_step(frames))
    client = bedrock(server)
    stream = client.run_chat_completions_stream([{"role": "user", "content": "hi"}], max_tokens=8)
    got: list[str] = []
    with pytest.raises(StreamError) as info:
        for delta in stream:
            got.append(delta)  # noqa: PERF402 - the loop ends in the exception under test
    assert got == ["partial "]
    assert info.value.error_type == "throttlingException" and info.value.retryable
    assert "Too many tokens" in info.value.message

    server.add(event_stream_step(stream_frames(["x"])[:1] + [exception("validationException", "bad input")]))
    stream = client.run_chat_completions_stream([{"role": "user", "content": "hi"}], max_tokens=8, return_error=True)
    assert list(stream) == []
    assert stream.error["type"] == "StreamError" and stream.error["retryable"] is False
    assert stream.error["error_type"] == "validationException"


def test_stream_bad_crc_and_truncation(server):
    frames = stream_frames(["ok"])
    broken = bytearray(frames[1])
    broken[-6] ^= 0xFF  # flip a payload byte: the message CRC no longer matches
    server.add(event_stream_step([frames[0], bytes(broken)] + frames[2:]))
    server.add(event_stream_step(frames[:3]))  # no messageStop: the connection closed early
    client = bedrock(server)
    with pytest.raises(StreamError, match="malformed event-stream frame"):
        list(client.run_chat_completions_stream([{"role": "user", "content": "hi"}], max_tokens=8))
    with pytest.raises(StreamTruncatedError):
        list(client.run_chat_completions_stream([{"role": "user", "content": "hi"}], max_tokens=8))


def test_stream_error_status_before_stream(server):
    server.add(aws_error(429, "ThrottlingException", "slow down"))
    server.add(event_stream_step(stream_frames(["fine"])))
    client = bedrock(server)
    assert "".join(client.run_chat_completions_stream([{"role": "user", "content": "hi"}], max_tokens=8)) == "fine"
    assert len(server.requests) == 2


def test_stream_structured_tool_deltas(server):
    frames = [event("messageStart", {"role": "assistant"}),
              event("contentBlockStart", {"contentBlockIndex": 0,
                                          "start": {"toolUse": {"toolUseId": "t", "name": "x"}}}),
              event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '{"city": '}}}),
              event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '"Lima"}'}}}),
              event("messageStop", {"stopReason": "tool_use"})]
    server.add(event_stream_step(frames))
    client = bedrock(server, structured_output="tool")
    stream = client.run_chat_completions_stream([{"role": "user", "content": "City?"}], guided_json=SCHEMA)
    assert "".join(stream) == '{"city": "Lima"}'
    assert stream.parsed == {"city": "Lima"} and stream.finish_reason == "stop"


# -- other credentials -------------------------------------------------------------------------


def test_bearer_token_mode(server, monkeypatch):
    server.add(200, converse_body("bearer ok"))
    client = create_client(provider="bedrock", model_name=MODEL, region="us-west-2", bearer_token=BEARER,
                           endpoint=f"http://127.0.0.1:{server.port}")
    assert client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4) == "bearer ok"
    rec = server.requests[0]
    assert rec.headers["authorization"] == f"Bearer {BEARER}"
    assert "x-amz-date" not in rec.headers
    # and from the environment
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", BEARER + "2")
    server.add(200, converse_body("env ok"))
    client = create_client(provider="bedrock", model_name=MODEL, region="us-west-2",
                           endpoint=f"http://127.0.0.1:{server.port}")
    assert client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4) == "env ok"
    assert server.requests[1].headers["authorization"] == f"Bearer {BEARER}2"


def test_credential_chain_from_environment(server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    server.add(200, converse_body("chain ok"))
    client = create_client(provider="bedrock", model_name=MODEL, endpoint=f"http://127.0.0.1:{server.port}")
    assert client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4) == "chain ok"
    check_sigv4(server, server.requests[0], akid="AKIDFROMENV", secret="env-secret-value", token=None)


def test_credential_chain_from_profile(server, monkeypatch, tmp_path):
    (tmp_path / "credentials").write_text(
        "[work]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n")
    (tmp_path / "config").write_text("[profile work]\nregion = us-west-2\n")
    server.add(200, converse_body("profile ok"))
    client = create_client(provider="bedrock", model_name=MODEL, profile="work",
                           endpoint=f"http://127.0.0.1:{server.port}")
    assert client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4) == "profile ok"
    check_sigv4(server, server.requests[0], akid="AKIDPROFILE", secret="profile-secret", token=None)


# -- async ---------------------------------------------------------------------------------------


def test_async_chat_and_stream(server):
    server.add(aws_error(503, "ServiceUnavailableException", "busy"))
    server.add(200, converse_body("async ok"))
    server.add(event_stream_step(stream_frames(["as", "ync"])))

    async def main() -> tuple[Any, list[str], Any]:
        client = bedrock(server)
        try:
            result = await client.arun_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4)
            stream = client.arun_chat_completions_stream([{"role": "user", "content": "hi"}], max_tokens=4)
            deltas = [d async for d in stream]
            return result, deltas, stream
        finally:
            await client.aclose()

    result, deltas, stream = asyncio.run(main())
    assert result == "async ok" and result.usage.total_tokens == 14
    assert deltas == ["as", "ync"] and stream.finish_reason == "stop"
    assert len(server.requests) == 3
    for rec in server.requests:
        check_sigv4(server, rec)


# -- credentials never leak ------------------------------------------------------------------


def _echo(rec: Any) -> Step:
    """A hostile gateway: quotes every credential it saw (and the secret, as if misconfigured)."""
    echoed = " ".join(f"{k}={v}" for k, v in rec.headers.items())
    return aws_error(429, "ThrottlingException", f"rejected {echoed} secret={SECRET} token={TOKEN} key={AKID}")


def test_credentials_never_leak(server, caplog):
    server.default = _echo
    client = bedrock(server, max_retries=1)
    secrets = (AKID, SECRET, TOKEN)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(GenAIError) as info:
            client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4)
        _, error = client.run_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4, return_error=True)
        stream = client.run_chat_completions_stream([{"role": "user", "content": "hi"}], return_error=True)
        list(stream)
    assert TOKEN in server.requests[0].headers["x-amz-security-token"]  # the echo really carried it
    texts = [str(info.value), repr(info.value), json.dumps(info.value.to_dict()), str(info.value.body),
             json.dumps(error), json.dumps(stream.error), repr(client), repr(client.codec), caplog.text]
    assert "***" in str(info.value)
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_bearer_token_never_leaks(server, caplog):
    server.default = lambda rec: aws_error(403, "AccessDeniedException", f"bad {rec.headers['authorization']}")
    client = create_client(provider="bedrock", model_name=MODEL, region="us-west-2", bearer_token=BEARER,
                           endpoint=f"http://127.0.0.1:{server.port}")
    with caplog.at_level(logging.DEBUG):
        _, error = client.run_chat_completions([{"role": "user", "content": "hi"}], return_error=True)
    assert error["type"] == "AuthenticationError" and "***" in error["message"]
    for text in (json.dumps(error), repr(client), caplog.text):
        assert BEARER not in text


def test_async_inference_profile_arn_signature(server):
    """aiohttp must put the signed path on the wire ('/' in an ARN stays %2F)."""
    arn = "arn:aws:bedrock:us-west-2:123456789012:application-inference-profile/abc123"
    server.add(200, converse_body("arn ok"))

    async def main() -> Any:
        client = create_client(provider="bedrock", model_name=arn, region="us-west-2", api_key=AKID,
                               secret_key=SECRET, session_token=TOKEN, endpoint=f"http://127.0.0.1:{server.port}")
        try:
            return await client.arun_chat_completions([{"role": "user", "content": "hi"}], max_tokens=4)
        finally:
            await client.aclose()

    assert asyncio.run(main()) == "arn ok"
    rec = server.requests[0]
    assert rec.path == "/model/" + arn.replace("/", "%2F") + "/converse"
    check_sigv4(server, rec)


# -- embeddings through InvokeModel: Titan (one text per request) and Cohere (up to 96) -----------

TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"


def _bedrock_embedder(rec):
    body = rec.json()
    if "/model/amazon.titan-embed-text-v2:0/invoke" == rec.path:
        text = body["inputText"]
        return Step(200, {"embedding": [float(len(text)), 0.5], "inputTextTokenCount": len(text.split())})
    if "/model/cohere.embed-english-v3/invoke" == rec.path:
        return Step(200, {"id": "e1", "response_type": "embeddings_floats", "texts": body["texts"],
                          "embeddings": [[float(len(t)), -0.5] for t in body["texts"]]})
    return aws_error(404, "ResourceNotFoundException", f"no model at {rec.path}")


def test_titan_embeddings_signed_invoke_model(server, service_model):
    server.default = _bedrock_embedder
    client = create_client(provider="bedrock", model_name=TITAN, region="us-west-2", api_key=AKID,
                           secret_key=SECRET, session_token=TOKEN, endpoint=f"http://127.0.0.1:{server.port}")
    result = client.run_embeddings(["one two", "three", "four five six"], dimensions=256)
    assert result == [[7.0, 0.5], [5.0, 0.5], [13.0, 0.5]]
    assert result.usage.prompt_tokens == 6 and result.model == TITAN
    assert len(server.requests) == 3  # Titan embeds one text per request
    op = service_model.operation_model("InvokeModel")
    assert op.http["method"] == "POST" and op.http["requestUri"] == "/model/{modelId}/invoke"
    from botocore.validate import ParamValidator

    for rec in server.requests:
        check_sigv4(server, rec)
        report = ParamValidator().validate({"modelId": TITAN, "body": rec.body, "contentType": "application/json",
                                            "accept": rec.headers["accept"]}, op.input_shape)
        assert not report.has_errors(), report.generate_report()
        assert set(rec.json()) == {"inputText", "dimensions"} and rec.json()["dimensions"] == 256


def test_cohere_embeddings_batches_of_96_async(server):
    server.default = _bedrock_embedder
    client = create_client(provider="bedrock", model_name=COHERE, region="us-west-2", api_key=AKID,
                           secret_key=SECRET, endpoint=f"http://127.0.0.1:{server.port}")
    texts = [f"doc {'y' * (i % 7)}" for i in range(200)]

    async def main():
        out = await client.arun_embeddings(texts, input_type="search_query")
        await client.aclose()
        return out

    result = asyncio.run(main())
    assert result == [[float(len(t)), -0.5] for t in texts] and result.usage is None
    sizes = sorted(len(r.json()["texts"]) for r in server.requests)
    assert sizes == [8, 96, 96]
    assert all(r.json()["input_type"] == "search_query" for r in server.requests)
    for rec in server.requests:
        check_sigv4(server, rec, token=None)


def test_embedding_errors_are_mapped_and_scrubbed(server):
    server.add(aws_error(429, "ThrottlingException", "Too many requests"))
    server.default = _bedrock_embedder
    client = create_client(provider="bedrock", model_name=TITAN, region="us-west-2", api_key=AKID,
                           secret_key=SECRET, endpoint=f"http://127.0.0.1:{server.port}", max_retries=1)
    assert client.run_embeddings(["a"]) == [[1.0, 0.5]] and len(server.requests) == 2
    server.default = aws_error(403, "UnrecognizedClientException", f"The security token {AKID} is invalid")
    none, error = client.run_embeddings(["a"], return_error=True)
    assert none is None and error["type"] == "AuthenticationError"
    assert AKID not in repr(error) and SECRET not in repr(error)
    server.default = Step(200, {"nothing": True})
    with pytest.raises(ResponseError, match="no embeddings for 1 inputs"):
        client.run_embeddings(["a"])
