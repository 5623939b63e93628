"""OpenTelemetry spans and metrics (issue 16), with the real OpenTelemetry SDK: its in-memory
span exporter and metric reader, against the real llama-cpp-python server and the fault server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from fault_server import chat_body
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gen_ai import Hooks
from gen_ai.errors import BadRequestError
from gen_ai.factory import create_client
from gen_ai.telemetry import OpenTelemetryHooks

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
SECRET = "sk-otel-SECRET-9876543210"


class Otel:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def hooks(self) -> OpenTelemetryHooks:
        return OpenTelemetryHooks(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def spans(self):
        return self.exporter.get_finished_spans()

    def metrics(self) -> dict[str, list]:
        data = self.reader.get_metrics_data()
        out: dict[str, list] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


@pytest.fixture
def otel():
    return Otel()


def everything_recorded(otel: Otel) -> str:
    """Every attribute, event and status text of every span, and every metric attribute, as text."""
    parts = []
    for span in otel.spans():
        parts.append(json.dumps(dict(span.attributes), default=str))
        parts.append(str(span.status.description))
        for event in span.events:
            parts.append(json.dumps(dict(event.attributes), default=str))
    for points in otel.metrics().values():
        for point in points:
            parts.append(json.dumps(dict(point.attributes), default=str))
    return "\n".join(parts)


def test_chat_span_and_metrics_against_the_real_server(llama_server, otel):
    client = create_client(endpoint=llama_server, model_name="smollm2", hooks=[otel.hooks()], telemetry=False)
    answer = client.run_chat_completions(MESSAGES, max_tokens=8, seed=7)
    (span,) = otel.spans()
    assert span.name == "chat smollm2"
    assert span.kind == SpanKind.CLIENT
    attrs = dict(span.attributes)
    port = int(llama_server.rsplit(":", 1)[1].split("/")[0])
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "smollm2"
    assert attrs["gen_ai.request.max_tokens"] == 8
    assert attrs["gen_ai.request.temperature"] == 0.0
    assert attrs["gen_ai.request.top_p"] == 1.0
    assert attrs["gen_ai.request.seed"] == 7
    assert "gen_ai.request.choice.count" not in attrs  # only when n != 1
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == port
    assert attrs["gen_ai.response.id"] == answer.id
    assert attrs["gen_ai.response.model"] == answer.model
    assert attrs["gen_ai.response.finish_reasons"] == (answer.finish_reason,)
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens > 0
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens > 0
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs  # not opted in
    assert span.status.status_code != StatusCode.ERROR

    metrics = otel.metrics()
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert duration.count == 1 and duration.sum > 0
    assert list(duration.explicit_bounds) == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                                              10.24, 20.48, 40.96, 81.92]
    assert duration.attributes["gen_ai.operation.name"] == "chat"
    assert duration.attributes["gen_ai.provider.name"] == "openai"
    assert duration.attributes["server.port"] == port
    tokens = {p.attributes["gen_ai.token.type"]: p for p in metrics["gen_ai.client.token.usage"]}
    assert tokens["input"].sum == answer.usage.prompt_tokens
    assert tokens["output"].sum == answer.usage.completion_tokens
    assert list(tokens["input"].explicit_bounds)[:3] == [1, 4, 16]


def test_text_completion_and_n(llama_server, otel):
    client = create_client(endpoint=llama_server, model_name="smollm2", hooks=[otel.hooks()], telemetry=False)
    results = client.run_completions("The capital of France is", max_tokens=4, n=2, stop=["\n"])
    assert len(results) == 2
    (span,) = otel.spans()
    attrs = dict(span.attributes)
    assert span.name == "text_completion smollm2"
    assert attrs["gen_ai.operation.name"] == "text_completion"
    assert attrs["gen_ai.request.choice.count"] == 2
    assert attrs["gen_ai.request.stop_sequences"] == ("\n",)
    assert len(attrs["gen_ai.response.finish_reasons"]) == 2
    # llama-cpp-python ignores n: the second answer was a top-up request, shown as an event.
    assert [e.name for e in span.events] == ["gen_ai_client.request"]
    assert attrs["gen_ai.usage.output_tokens"] == results.usage.completion_tokens


def test_async_call(llama_server, otel):
    client = create_client(endpoint=llama_server, model_name="smollm2", hooks=[otel.hooks()], telemetry=False)

    async def main():
        async with client:
            return await client.arun_chat_completions(MESSAGES, max_tokens=4)

    answer = asyncio.run(main())
    (span,) = otel.spans()
    assert span.attributes["gen_ai.response.id"] == answer.id


def test_content_capture_is_opt_in(llama_server, otel, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    client = create_client(endpoint=llama_server, model_name="smollm2", hooks=[otel.hooks()], telemetry=False)
    answer = client.run_chat_completions(MESSAGES, max_tokens=6)
    attrs = dict(otel.spans()[0].attributes)
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hello."}]}]
    assert json.loads(attrs["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    (output,) = json.loads(attrs["gen_ai.output.messages"])
    assert output["parts"][0]["content"] == str(answer) and output["role"] == "assistant"


def test_retry_and_error_spans_carry_no_secret(fault_server, otel):
    # The server echoes the key back in its error bodies, as some gateways do.
    fault_server.add(503, {"error": {"message": f"overloaded (key {SECRET})"}})
    fault_server.add(200, chat_body("fine"))
    fault_server.add(400, {"error": {"message": f"bad key {SECRET}", "type": "invalid_request_error"}})
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=SECRET, hooks=[otel.hooks()],
                           telemetry=False)
    assert client.run_chat_completions(MESSAGES) == "fine"
    with pytest.raises(BadRequestError):
        client.run_chat_completions(MESSAGES)
    ok, failed = otel.spans()
    assert [e.name for e in ok.events] == ["gen_ai_client.retry", "gen_ai_client.request"]
    retry = dict(ok.events[0].attributes)
    assert retry["error.type"] == "ServerError" and retry["http.response.status_code"] == 503
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "BadRequestError"
    points = otel.metrics()["gen_ai.client.operation.duration"]
    assert {p.attributes.get("error.type") for p in points} == {None, "BadRequestError"}
    assert SECRET not in everything_recorded(otel)


def test_latest_experimental_names(llama_server, otel, monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    client = create_client(endpoint=llama_server, model_name="smollm2", hooks=[otel.hooks()], telemetry=False)
    answer = client.run_chat_completions(MESSAGES, max_tokens=4)
    metrics = otel.metrics()
    assert "gen_ai.client.token.usage" not in metrics
    (inp,) = metrics["gen_ai.client.inference.operation.input_tokens"]
    assert inp.sum == answer.usage.prompt_tokens
    (counted,) = metrics["gen_ai.client.inference.usage.output_tokens"]
    assert counted.value == answer.usage.completion_tokens
    assert counted.attributes["gen_ai.token.modality"] == "text"


def test_a_broken_hook_never_breaks_the_call(fault_server, caplog):
    class Broken(Hooks):
        def on_call_start(self, call):
            raise RuntimeError("boom")

        def on_call_end(self, call, result, error):
            raise RuntimeError("boom again")

    fault_server.add(200, chat_body("still fine"))
    client = create_client(endpoint=fault_server.url, model_name="m", hooks=[Broken()], telemetry=False)
    assert client.run_chat_completions(MESSAGES) == "still fine"
    assert "hook" in caplog.text


def test_hooks_see_requests_retries_and_usage_but_no_headers(fault_server):
    seen: list[tuple] = []

    class Recorder(Hooks):
        def on_call_start(self, call):
            seen.append(("start", call.operation, call.model, call.params["max_tokens"]))

        def on_request(self, call, request):
            seen.append(("request", request.method, request.url.rsplit("/", 2)[-2:], request.purpose))
            assert not hasattr(request, "headers")

        def on_response(self, call, response):
            seen.append(("response", response.status))

        def on_retry(self, call, error, delay, attempt):
            seen.append(("retry", type(error).__name__, attempt))

        def on_call_end(self, call, result, error):
            seen.append(("end", call.usage.total_tokens, error))

    fault_server.add(429, {"error": {"message": "slow"}}, headers={"Retry-After": "0"})
    fault_server.add(200, chat_body("ok"))
    client = create_client(endpoint=fault_server.url, model_name="m", hooks=[Recorder()], telemetry=False)
    client.run_chat_completions(MESSAGES, max_tokens=5)
    assert seen == [
        ("start", "chat", "m", 5),
        ("request", "POST", ["chat", "completions"], "call"),
        ("response", 429),
        ("retry", "RateLimitError", 1),
        ("request", "POST", ["chat", "completions"], "retry"),
        ("response", 200),
        ("end", chat_body_usage_total(), None),
    ]


def chat_body_usage_total() -> int:
    return int(chat_body("ok")["usage"]["total_tokens"])


def test_no_opentelemetry_import_unless_installed_and_used(llama_server):
    """`import gen_ai` never imports opentelemetry; with it missing, calls work and import nothing."""
    script = f"""
import sys
import importlib.abc

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(name)
        return None

if sys.argv[1] == "missing":
    sys.meta_path.insert(0, Missing())
import gen_ai
assert "opentelemetry" not in sys.modules, "import gen_ai imported opentelemetry"
from gen_ai.factory import create_client
client = create_client(endpoint={llama_server!r}, model_name="smollm2")
client.run_chat_completions([{{"role": "user", "content": "hi"}}], max_tokens=2)
print("opentelemetry" in sys.modules)
"""
    env = dict(os.environ)
    missing = subprocess.run([sys.executable, "-c", script, "missing"], capture_output=True, text=True, env=env,
                             timeout=120)
    assert missing.returncode == 0, missing.stderr
    assert missing.stdout.strip() == "False"
    env["GEN_AI_TELEMETRY"] = "0"
    off = subprocess.run([sys.executable, "-c", script, "installed"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip() == "False"


def test_auto_uses_the_applications_global_provider(llama_server, tmp_path):
    """With the extra installed, a provider set by the application (after the client was made)
    is picked up; before it is set, calls record nothing."""
    script = f"""
from gen_ai.factory import create_client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

client = create_client(endpoint={llama_server!r}, model_name="smollm2")
client.run_chat_completions([{{"role": "user", "content": "hi"}}], max_tokens=2)
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
client.run_chat_completions([{{"role": "user", "content": "hi"}}], max_tokens=2)
print([s.name for s in exporter.get_finished_spans()])
"""
    env = {k: v for k, v in os.environ.items() if k != "GEN_AI_TELEMETRY"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['chat smollm2']"


def test_batch_is_one_parent_span_with_a_child_per_item(llama_server, otel):
    client = create_client(endpoint=llama_server, model_name="smollm2", hooks=[otel.hooks()], telemetry=False)
    prompts = [[{"role": "user", "content": f"Count to {i}."}] for i in range(3)]
    results = client.run_chat_completions_batch(prompts, max_tokens=4, max_concurrent=2)
    spans = otel.spans()
    (batch,) = [s for s in spans if s.name.startswith("batch")]
    items = [s for s in spans if s.name == "chat smollm2"]
    assert len(items) == 3
    assert all(s.parent is not None and s.parent.span_id == batch.context.span_id for s in items)
    assert {s.context.trace_id for s in spans} == {batch.context.trace_id}
    attrs = dict(batch.attributes)
    assert attrs["gen_ai.operation.name"] == "batch"
    assert attrs["gen_ai_client.batch.succeeded"] == 3 and attrs["gen_ai_client.batch.failed"] == 0
    assert attrs["gen_ai.usage.output_tokens"] == results.stats.completion_tokens
    # Per-item metrics are recorded; the batch itself is not an operation of the conventions.
    assert otel.metrics()["gen_ai.client.operation.duration"][0].count == 3


def test_file_batch_items_are_traced(fault_server, otel, tmp_path):
    fault_server.default = lambda request: __import__("fault_server").Step(200, chat_body("ok"))
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                            "body": {"model": "m", "messages": MESSAGES}}) for i in range(4)) + "\n")
    client = create_client(endpoint=fault_server.url, model_name="m", hooks=[otel.hooks()], telemetry=False)
    stats = client.run_batch_file(source, tmp_path / "out.jsonl")
    assert stats.succeeded == 4
    spans = otel.spans()
    assert sorted(s.name for s in spans) == ["batch m"] + ["chat m"] * 4


def test_stream_span_ends_with_the_stream_and_has_time_to_first_chunk(xllamacpp_server, otel):
    # llama.cpp's server sends usage in streams (llama-cpp-python's does not).
    client = create_client(endpoint=xllamacpp_server.url, model_name=xllamacpp_server.model, hooks=[otel.hooks()],
                           telemetry=False)
    stream = client.run_chat_completions_stream(MESSAGES, max_tokens=8)
    text = "".join(stream)
    (span,) = otel.spans()
    attrs = dict(span.attributes)
    assert span.name == f"chat {xllamacpp_server.model}" and attrs["gen_ai.request.stream"] is True
    assert 0 < attrs["gen_ai.response.time_to_first_chunk"] <= stream.latency
    assert attrs["gen_ai.usage.output_tokens"] == stream.usage.completion_tokens
    assert attrs["gen_ai.response.finish_reasons"] == (stream.finish_reason,)
    assert text == stream.text
    (ttfc,) = otel.metrics()["gen_ai.client.operation.time_to_first_chunk"]
    assert ttfc.count == 1 and abs(ttfc.sum - stream.first_token_latency) < 0.05


def test_closed_stream_ends_its_span(fault_server, otel):
    from fault_server import Step, chat_chunks

    fault_server.add(Step(200, chunks=chat_chunks(["a", "b", "c", "d"]), chunk_delay=0.05))
    client = create_client(endpoint=fault_server.url, model_name="m", hooks=[otel.hooks()], telemetry=False)
    with client.run_chat_completions_stream(MESSAGES) as stream:
        for delta in stream:
            assert delta == "a"
            break
    (span,) = otel.spans()  # ended at close, not left open
    assert span.end_time is not None and span.status.status_code != StatusCode.ERROR


def test_async_stream_error_span(fault_server, otel):
    from fault_server import Step, chat_chunks

    fault_server.add(Step(200, chunks=chat_chunks(["x"], done=False, finish=False)))
    client = create_client(endpoint=fault_server.url, model_name="m", hooks=[otel.hooks()], telemetry=False,
                           max_retries=0)

    async def main():
        stream = client.arun_chat_completions_stream(MESSAGES, return_error=True)
        async for _ in stream:
            pass
        await client.aclose()
        return stream

    stream = asyncio.run(main())
    assert stream.error["type"] == "StreamTruncatedError"
    (span,) = otel.spans()
    assert span.attributes["error.type"] == "StreamTruncatedError"
    assert span.status.status_code == StatusCode.ERROR


def test_guided_call_records_the_dialect_probe(llama_server, otel):
    client = create_client(endpoint=llama_server, model_name="smollm2", hooks=[otel.hooks()], telemetry=False)
    client.run_chat_completions([{"role": "user", "content": "Give a name as JSON."}], max_tokens=30,
                                guided_json={"type": "object", "properties": {"name": {"type": "string"}},
                                             "required": ["name"], "additionalProperties": False})
    (span,) = otel.spans()
    (probe,) = [e for e in span.events if e.name == "gen_ai_client.dialect_probe"]
    assert probe.attributes["gen_ai_client.server"] == "llama-cpp-python"


def test_tool_loop_has_execute_tool_spans(fault_server, otel, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    boom = {"id": "call_2", "type": "function", "function": {"name": "explode", "arguments": "{}"}}
    body = chat_body("")
    body["choices"][0]["message"]["tool_calls"] = [call, boom]
    body["choices"][0]["finish_reason"] = "tool_calls"
    fault_server.add(200, body)
    fault_server.add(200, chat_body("Sunny in Paris."))

    def get_weather(city: str) -> str:
        """Weather of a city."""
        return f"sunny in {city}"

    def explode() -> str:
        """Always fails."""
        raise RuntimeError(f"broken with {SECRET}")

    client = create_client(endpoint=fault_server.url, model_name="m", api_key=SECRET, hooks=[otel.hooks()],
                           telemetry=False)
    result = client.run_tools([{"role": "user", "content": "Weather?"}], tools=[get_weather, explode])
    assert result == "Sunny in Paris."
    spans = otel.spans()
    names = [s.name for s in spans]
    assert names.count("chat m") == 2
    ok = next(s for s in spans if s.name == "execute_tool get_weather")
    bad = next(s for s in spans if s.name == "execute_tool explode")
    assert ok.attributes["gen_ai.operation.name"] == "execute_tool"
    assert ok.attributes["gen_ai.tool.call.id"] == "call_1" and ok.attributes["gen_ai.tool.type"] == "function"
    assert ok.attributes["gen_ai.tool.call.arguments"] == '{"city": "Paris"}'
    assert ok.attributes["gen_ai.tool.call.result"] == "sunny in Paris"
    assert bad.attributes["error.type"] == "RuntimeError" and bad.status.status_code == StatusCode.ERROR
    assert SECRET not in everything_recorded(otel)


@pytest.fixture(scope="module")
def embeddings_server(tmp_path_factory):
    from servers import start_xllamacpp

    handle = start_xllamacpp(tmp_path_factory.mktemp("otel-emb"), slots=1, embeddings=True)
    yield handle
    handle.stop()


def test_embeddings_span(embeddings_server, otel):
    client = create_client(endpoint=embeddings_server.url, model_name=embeddings_server.model, hooks=[otel.hooks()],
                           telemetry=False)
    vectors = client.run_embeddings(["one", "two", "three"])
    (span,) = otel.spans()
    attrs = dict(span.attributes)
    assert span.name == f"embeddings {embeddings_server.model}"
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.usage.input_tokens"] == vectors.usage.prompt_tokens > 0
    assert "gen_ai.request.max_tokens" not in attrs
    (tokens,) = [p for p in otel.metrics()["gen_ai.client.token.usage"] if p.attributes["gen_ai.token.type"] == "input"]
    assert tokens.sum == vectors.usage.prompt_tokens
