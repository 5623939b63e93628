"""Structured-output dialects, server detection, learned server state, n top-ups and cut-off
guided_json answers, against the loopback fault server (a real HTTP server, scripted) and as
pure codec functions. The real servers' side is in tests/test_server_dialects.py."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fault_server import FaultServer, Recorded, Step, chat_body, chat_chunks, completion_body

from gen_ai._state import ServerState, SingleFlight
from gen_ai.errors import BadRequestError, GenAIError, InvalidInputError, SchemaValidationError
from gen_ai.factory import create_client
from gen_ai.providers.openai import OpenAICodec, detect_server
from gen_ai.structured import Schema
from gen_ai.types import Call, RawResponse

MESSAGES = [{"role": "user", "content": "Give me a city as JSON."}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
SECRET = "sk-dialect-SECRET-abcdef0123"


def models(owned_by: str, model_id: str = "m") -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": owned_by}]}


def make(server: FaultServer, **options):
    return create_client(endpoint=server.url, model_name="m", api_key=SECRET, **options)


def schema_field(rec: Recorded) -> str | None:
    """Which structured-output dialect a recorded request body used."""
    body = rec.json()
    fmt = body.get("response_format")
    if fmt:
        return "tgi" if "value" in fmt else fmt["type"]
    for name in ("guided_json", "structured_outputs", "grammar"):
        if name in body:
            return name
    return "json_schema_field" if "json_schema" in body else None


def posts(server: FaultServer) -> list[Recorded]:
    return [r for r in server.requests if r.method == "POST"]


def probes(server: FaultServer) -> list[Recorded]:
    return [r for r in server.requests if r.method == "GET"]


# -- detection: what each server exposes ------------------------------------------------------


@pytest.mark.parametrize("body,headers,expected", [
    (models("vllm"), {}, "vllm"),                                   # vllm/entrypoints/openai protocol ModelCard
    (models("llamacpp"), {}, "llama.cpp"),                          # tools/server: {"owned_by", "llamacpp"}
    (models("x"), {"Server": "llama.cpp"}, "llama.cpp"),            # its Server header
    (models("me"), {}, "llama-cpp-python"),                         # llama_cpp/server/app.py
    (models("sglang"), {}, "sglang"),
    (models("organization_owner"), {}, "lmstudio"),
    (models("library", "llama3.2:latest"), {}, "ollama"),           # ollama openai.go: model namespace
    (models("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"), {}, "tgi"),  # TGI: owner == model id
    (models("openai"), {}, "openai"),                               # litellm's proxy, OpenAI itself
    ({"error": "nope"}, {}, "openai"),
])
def test_detect_server(body, headers, expected):
    raw = RawResponse(200, {k.lower(): v for k, v in headers.items()}, json.dumps(body).encode(), "", "GET")
    assert detect_server(raw) == expected


def test_no_answer_detects_nothing():
    assert detect_server(None) is None


# -- what is sent, per server, for chat and for completions ------------------------------------


@pytest.mark.parametrize("server,chat,completion", [
    ("openai", "json_schema", "json_schema"),
    ("vllm", "json_schema", "json_schema"),
    ("vllm-legacy", "guided_json", "guided_json"),
    ("llama.cpp", "json_schema", "json_schema_field"),
    ("llama-cpp-python", "json_object", "grammar"),
    ("sglang", "json_schema", "json_schema"),
    ("tgi", "tgi", None),
    ("lmstudio", "json_schema", None),
    ("ollama", "json_schema", None),
])
def test_bodies_per_server(server, chat, completion):
    from gen_ai.providers.openai import _have_gbnf

    if completion == "grammar" and not _have_gbnf():
        completion = None  # without llama-cpp-python here no grammar can be made: refused, not ignored
    codec = OpenAICodec(endpoint="http://x", model_name="m")
    state = ServerState(server=server)
    schema = Schema.from_user(SCHEMA)

    def sent(kind: str) -> str | None:
        call = Call(kind, messages=MESSAGES, prompt="JSON:", schema=schema)
        request = codec.build_request(call, state)
        return schema_field(Recorded("POST", "/", {}, request.body))

    assert sent("chat") == chat
    if completion is None:
        with pytest.raises(InvalidInputError) as info:
            sent("completion")
        assert "cannot be enforced" in info.value.message and info.value.field == "guided_json"
        assert "run_chat_completions" in info.value.suggestion
    else:
        assert sent("completion") == completion


def test_tgi_body_shape():
    codec = OpenAICodec(endpoint="http://x", model_name="m", dialect="tgi")
    body = json.loads(codec.build_request(Call("chat", messages=MESSAGES, schema=Schema.from_user(SCHEMA))).body)
    assert body["response_format"] == {"type": "json", "value": SCHEMA}


def test_llama_cpp_completion_takes_top_level_json_schema():
    codec = OpenAICodec(endpoint="http://x", model_name="m", dialect="llama.cpp")
    body = json.loads(codec.build_request(Call("completion", prompt="JSON:", schema=Schema.from_user(SCHEMA))).body)
    assert body["json_schema"] == SCHEMA and "response_format" not in body


# -- detection over HTTP: one probe, cached -----------------------------------------------------


def vllm_server(version: str, reject_json_schema: bool = False):
    def answer(rec: Recorded) -> Step:
        if rec.method == "GET" and rec.path == "/v1/models":
            return Step(200, models("vllm"))
        if rec.method == "GET" and rec.path == "/version":
            return Step(200, {"version": version})
        if reject_json_schema and schema_field(rec) == "json_schema":
            return Step(400, {"error": {"message": "response_format json_schema is not supported", "code": 400}})
        return Step(200, chat_body('{"city": "Lima"}'))
    return FaultServer(answer)


@pytest.mark.parametrize("version,dialect", [("0.11.2", "guided_json"), ("0.12.0", "json_schema"),
                                             ("0.32.1", "json_schema")])
def test_vllm_version_decides_guided_json(version, dialect):
    server = vllm_server(version)
    try:
        client = make(server)
        for _ in range(3):
            assert client.run_chat_completions(MESSAGES, guided_json=SCHEMA).parsed == {"city": "Lima"}
        assert [r.path for r in probes(server)] == ["/v1/models", "/version"]  # once per client
        assert [schema_field(r) for r in posts(server)] == [dialect] * 3
        assert client.server_state.version == version
        assert probes(server)[0].headers["authorization"] == f"Bearer {SECRET}"
    finally:
        server.close()


def test_vllm_falls_back_to_structured_outputs_never_guided_json():
    server = vllm_server("0.32.1", reject_json_schema=True)
    try:
        client = make(server)
        assert client.run_chat_completions(MESSAGES, guided_json=SCHEMA).parsed == {"city": "Lima"}
        assert [schema_field(r) for r in posts(server)] == ["json_schema", "structured_outputs"]
        assert client.server_state.chat_dialect == "structured_outputs"
    finally:
        server.close()


def test_llama_cpp_rejection_names_that_nothing_is_left(fault_server):
    """llama.cpp's server enforces response_format json_schema and nothing else in chat: when it
    rejects it, the client does not try fields it ignores (guided_json...), and says so."""
    fault_server.add(200, models("llamacpp"))
    fault_server.add(400, {"error": {"code": 400, "message": "response_format: json_schema is invalid",
                                     "type": "invalid_request_error"}})
    with pytest.raises(BadRequestError) as info:
        make(fault_server).run_chat_completions(MESSAGES, guided_json=SCHEMA)
    assert len(posts(fault_server)) == 1
    assert "no other structured-output field" in info.value.suggestion and "llama.cpp" in info.value.suggestion


def test_nothing_enforceable_is_refused_before_sending(fault_server):
    fault_server.add(200, models("organization_owner"))  # LM Studio: json_schema in chat only
    with pytest.raises(InvalidInputError) as info:
        make(fault_server).run_completions("JSON:", guided_json=SCHEMA)
    assert "lmstudio" in info.value.message
    assert posts(fault_server) == []


def test_probe_failure_is_retried_by_a_later_call(fault_server):
    fault_server.add(Step(drop=True))                       # the probe meets a dropped connection
    fault_server.add(200, chat_body('{"city": "Oslo"}'))    # the call goes on with the default
    fault_server.add(200, models("me"))                     # a later call probes again
    fault_server.add(200, chat_body('{"city": "Rome"}'))
    client = make(fault_server, max_retries=0)
    assert client.run_chat_completions(MESSAGES, guided_json=SCHEMA).parsed == {"city": "Oslo"}
    assert client.server_state.server is None
    assert client.run_chat_completions(MESSAGES, guided_json=SCHEMA).parsed == {"city": "Rome"}
    assert client.server_state.server == "llama-cpp-python"
    assert [schema_field(r) for r in posts(fault_server)] == ["json_schema", "json_object"]


# -- 32 concurrent guided calls on a fresh client -----------------------------------------------


def rejecting_server() -> FaultServer:
    """An unknown server that rejects response_format json_schema (400, slowly, so that every
    concurrent call has sent it before the first rejection comes back), enforces json_object,
    and answers anything else with text that is not JSON: a call that skipped a dialect, or
    was decided from the wrong one, fails validation."""
    def answer(rec: Recorded) -> Step:
        if rec.method == "GET":
            return Step(200, models("acme"), delay=0.3)
        field = schema_field(rec)
        if field == "json_schema":
            return Step(400, {"error": {"message": "unsupported response_format type json_schema"}}, delay=0.2)
        if field == "json_object":
            return Step(200, chat_body('{"city": "Quito"}'))
        return Step(200, chat_body("not json at all"))
    return FaultServer(answer)


def check_32(server: FaultServer, client, results) -> None:
    assert len(results) == 32 and all(r.parsed == {"city": "Quito"} for r in results)
    assert len(probes(server)) == 1 and client.server_state.probe.runs == 1
    assert client.server_state.server == "openai" and client.server_state.chat_dialect == "json_object"
    fields = [schema_field(r) for r in posts(server)]
    assert fields.count("json_object") == 32 and set(fields) == {"json_schema", "json_object"}
    assert server.max_in_flight > 8  # they really ran at once


def test_32_concurrent_guided_calls_threads():
    server = rejecting_server()
    try:
        client = make(server, schema_retries=0)
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(lambda _: client.run_chat_completions(MESSAGES, guided_json=SCHEMA), range(32)))
        check_32(server, client, results)
        client.close()
    finally:
        server.close()


def test_32_concurrent_guided_calls_async():
    server = rejecting_server()
    try:
        client = make(server, schema_retries=0)

        async def main():
            try:
                return await asyncio.gather(*(client.arun_chat_completions(MESSAGES, guided_json=SCHEMA)
                                              for _ in range(32)))
            finally:
                await client.aclose()

        check_32(server, client, asyncio.run(main()))
    finally:
        server.close()


def test_threads_and_event_loops_share_one_probe():
    """Sync threads and asyncio tasks (in an event loop of another thread) start together:
    still one probe."""
    server = rejecting_server()
    try:
        client = make(server, schema_retries=0)
        results = []
        lock = threading.Lock()

        def in_loop():
            async def main():
                out = await asyncio.gather(*(client.arun_chat_completions(MESSAGES, guided_json=SCHEMA)
                                             for _ in range(8)))
                await client.aclose()
                return out
            out = asyncio.run(main())
            with lock:
                results.extend(out)

        def in_thread():
            out = client.run_chat_completions(MESSAGES, guided_json=SCHEMA)
            with lock:
                results.append(out)

        threads = [threading.Thread(target=in_loop)] + [threading.Thread(target=in_thread) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 16 and all(r.parsed == {"city": "Quito"} for r in results)
        assert len(probes(server)) == 1
    finally:
        server.close()


def test_single_flight_leader_failure_lets_a_later_caller_lead():
    flight = SingleFlight()
    flight.run_sync(lambda: False, 1)
    assert not flight.done and flight.runs == 1
    flight.run_sync(lambda: True, 1)
    flight.run_sync(lambda: pytest.fail("ran twice"), 1)
    assert flight.done and flight.runs == 2


def test_state_changes_only_through_apply():
    state = ServerState()
    with pytest.raises(AttributeError):
        state.chat_dialect = "json_object"
    assert state.apply({"chat_dialect": (None, "json_object")})
    assert not state.apply({"chat_dialect": (None, "guided_json")})  # moved on: left alone
    assert state.chat_dialect == "json_object"


# -- stream usage learned once ----------------------------------------------------------------


def test_stream_options_rejected_once_per_client(fault_server):
    fault_server.add(400, {"error": {"message": "Unrecognized request argument supplied: stream_options"}})
    fault_server.add(200, chunks=chat_chunks(["a", "b"]))
    fault_server.add(200, chunks=chat_chunks(["c"]))
    client = make(fault_server)
    assert "".join(client.run_chat_completions_stream(MESSAGES)) == "ab"
    assert "".join(client.run_chat_completions_stream(MESSAGES)) == "c"
    sent = [r.json() for r in fault_server.requests]
    assert ["stream_options" in body for body in sent] == [True, False, False]
    assert client.server_state.stream_usage is False
    assert create_client(endpoint=fault_server.url, model_name="m").server_state.stream_usage is True


# -- n beyond what the server allows ------------------------------------------------------------


def n_limited_server() -> FaultServer:
    """llama.cpp's server with 2 slots: n above 2 is a 400 naming the field."""
    def answer(rec: Recorded) -> Step:
        n = rec.json().get("n", 1)
        if n > 2:
            return Step(400, {"error": {"code": 400, "message": f"Field 'n': Value must be between 1 <= value <= 2 "
                                                              f"(key {SECRET})", "type": "invalid_request_error"}})
        return Step(200, chat_body("one", n=n), delay=0.2)
    return FaultServer(answer)


def test_n_refused_is_topped_up_with_parallel_single_calls(caplog):
    caplog.set_level(logging.INFO, logger="gen_ai")
    server = n_limited_server()
    try:
        client = make(server)
        results = client.run_chat_completions(MESSAGES, n=3)
        assert len(results) == 3 and [r.choice_index for r in results] == [0, 1, 2]
        assert [r.json().get("n", 1) for r in server.requests] == [3, 1, 1, 1]
        assert server.max_in_flight == 2  # the first n=1 call and the two top-ups at once ... at most
        assert results.usage.total_tokens == 3 * 7  # summed over the three answering requests
        assert [r.usage.total_tokens for r in results] == [7, 7, 7]  # each answer its own, not the sum
        assert client.server_state.max_n == 2
        # Learned once per client: the next call does not ask for n=3 again.
        again = client.run_chat_completions(MESSAGES, n=3)
        assert len(again) == 3 and [r.json().get("n", 1) for r in server.requests[4:]] == [1, 1, 1]
        assert SECRET not in caplog.text and "n <= 2" in caplog.text
    finally:
        server.close()


def test_n_refused_async():
    server = n_limited_server()
    try:
        client = make(server)

        async def main():
            try:
                return await client.arun_chat_completions(MESSAGES, n=4)
            finally:
                await client.aclose()

        results = asyncio.run(main())
        assert len(results) == 4 and results.usage.total_tokens == 4 * 7
        assert [r.json().get("n", 1) for r in server.requests] == [4, 1, 1, 1, 1]
    finally:
        server.close()


def test_a_400_not_about_n_is_raised(fault_server):
    fault_server.add(400, {"error": {"message": "max_tokens must be at most 100"}})
    with pytest.raises(BadRequestError):
        make(fault_server).run_chat_completions(MESSAGES, n=3)
    assert len(fault_server.requests) == 1


# -- cut-off structured answers ------------------------------------------------------------------


def test_cut_off_answer_names_max_tokens_and_is_not_reasked(fault_server):
    fault_server.add(200, models("vllm"))
    fault_server.add(200, {"version": "0.32.0"})
    fault_server.add(200, chat_body('{"city": "Ulaanba', finish_reason="length"))
    client = make(fault_server, schema_retries=2)
    with pytest.raises(SchemaValidationError) as info:
        client.run_chat_completions(MESSAGES, guided_json=SCHEMA, max_tokens=12)
    err = info.value
    assert "max_tokens=12" in err.message and "cut off" in err.message and "no re-ask" in err.message
    assert "max_tokens=64" in err.suggestion and err.field == "max_tokens"
    assert err.text == '{"city": "Ulaanba'
    assert len(posts(fault_server)) == 1  # the same budget would be cut off again


def test_cut_off_stream_names_max_tokens(fault_server):
    fault_server.add(200, models("vllm"))
    fault_server.add(200, {"version": "0.32.0"})
    chunks = chat_chunks(['{"city": ', '"Ulaan'], finish=False)[:-1]
    chunks.append(b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                  b'[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n')
    chunks.append(b"data: [DONE]\n\n")
    fault_server.add(200, chunks=chunks)
    stream = make(fault_server).run_chat_completions_stream(MESSAGES, guided_json=SCHEMA, max_tokens=40)
    with pytest.raises(SchemaValidationError) as info:
        list(stream)
    assert "max_tokens=40" in info.value.message and "max_tokens=80" in info.value.suggestion


def test_invalid_answer_that_was_not_cut_off_is_still_reasked(fault_server):
    fault_server.add(200, models("vllm"))
    fault_server.add(200, {"version": "0.32.0"})
    fault_server.add(200, chat_body('{"town": "Lima"}'))
    fault_server.add(200, chat_body('{"city": "Lima"}'))
    result = make(fault_server).run_chat_completions(MESSAGES, guided_json=SCHEMA)
    assert result.parsed == {"city": "Lima"} and len(posts(fault_server)) == 2
    assert result.usage.total_tokens == 14


def test_completions_guided_json_on_llama_cpp(fault_server):
    fault_server.add(200, models("llamacpp"), headers={"Server": "llama.cpp"})
    fault_server.add(200, completion_body('{"city": "Bern"}'))
    result = make(fault_server).run_completions("JSON:", guided_json=SCHEMA)
    assert result.parsed == {"city": "Bern"}
    body = posts(fault_server)[0].json()
    assert body["json_schema"] == SCHEMA and "response_format" not in body


# -- litellm's proxy: looks like OpenAI, tells its backend on /model/info ---------------------------


def litellm_info(routed: str) -> dict:
    return {"data": [{"model_name": "other", "litellm_params": {"model": "openai/x"}},
                     {"model_name": "m", "litellm_params": {"model": routed, "api_base": "http://10.0.0.1/v1"}}]}


@pytest.mark.parametrize("routed,server,completion", [("hosted_vllm/smollm2", "vllm", "structured_outputs"),
                                                      ("openai/smollm2", "litellm", "grammar")])
def test_litellm_backend_detection(fault_server, routed, server, completion):
    from gen_ai.providers.openai import _have_gbnf

    fault_server.add(200, models("openai"))
    fault_server.add(200, litellm_info(routed))
    # litellm's own answer to response_format on /completions (seen with litellm 1.8x):
    fault_server.add(500, {"error": {"message": "litellm.InternalServerError: OpenAIException - "
                                                "AsyncCompletions.create() got an unexpected keyword argument "
                                                "'response_format'", "type": "internal_server_error"}})
    fault_server.add(200, completion_body('{"city": "Lyon"}'))
    client = make(fault_server)
    if completion == "grammar" and not _have_gbnf():
        completion = None
    if completion is None:
        with pytest.raises(GenAIError):
            client.run_completions("JSON:", guided_json=SCHEMA)
        return
    assert client.run_completions("JSON:", guided_json=SCHEMA).parsed == {"city": "Lyon"}
    assert [r.path for r in probes(fault_server)] == ["/v1/models", "/v1/model/info"]
    assert client.server_state.server == server
    assert [schema_field(r) for r in posts(fault_server)] == ["json_schema", completion]


def test_openai_like_server_without_model_info(fault_server):
    fault_server.add(200, models("openai"))
    fault_server.add(404, {"error": {"message": "Not Found"}})
    fault_server.add(200, chat_body('{"city": "Nice"}'))
    client = make(fault_server)
    assert client.run_chat_completions(MESSAGES, guided_json=SCHEMA).parsed == {"city": "Nice"}
    assert client.server_state.server == "openai"


def test_fallback_after_detection_changed_the_server():
    """A request built before detection finished (generic json_schema) and rejected after the
    probe found llama-cpp-python is sent again from that server's list, not refused."""
    codec = OpenAICodec(endpoint="http://x", model_name="m")
    state = ServerState()
    call = Call("chat", messages=MESSAGES, schema=Schema.from_user(SCHEMA))
    early = codec.build_request(call, state)
    state.learn({"server": "llama-cpp-python"})
    err = codec.parse_error(RawResponse(500, {}, b'{"detail": "response_format json_schema not supported"}', "",
                                        "POST"))
    assert codec.fallback(call, early, err, state) == {}
    assert json.loads(codec.build_request(call, state).body)["response_format"]["type"] == "json_object"
