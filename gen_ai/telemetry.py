"""OpenTelemetry GenAI spans and metrics, built on ``gen_ai.hooks``.

Names follow release v1.41.0 of the OpenTelemetry semantic conventions for generative AI
(``docs/gen-ai/gen-ai-spans.md``, ``gen-ai-metrics.md``, ``model/gen-ai/registry.yaml`` of
open-telemetry/semantic-conventions). ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``
switches the token metrics to the newer names of open-telemetry/semantic-conventions-genai
(``model/gen-ai/token-metrics.yaml``: ``gen_ai.client.inference.operation.*_tokens`` histograms
and ``gen_ai.client.inference.usage.*`` counters with ``gen_ai.token.modality``); span attributes
are the same in both (they did not change there when this was written).

gen_ai never configures a tracer or meter provider: with none set by the application (the
OpenTelemetry API's proxy providers), ``enabled()`` is False and a call costs one check.
Prompt and answer contents are recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
is true (``true``/``1``, or the newer ``SPAN_ONLY``/``SPAN_AND_EVENT`` values); credentials never.
"""

from __future__ import annotations

import json
import os
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.trace import SpanKind, Status, StatusCode

from .hooks import CallInfo, Hooks, RequestInfo, ResponseInfo

_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]

# gen_ai provider -> gen_ai.provider.name (well-known values of the conventions' registry).
PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "anthropic": "anthropic",
    "local": "llama_cpp",
}
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
_TRUE = ("1", "true", "yes", "on", "span_only", "span_and_event")


def _version() -> str:
    from . import __version__

    return __version__


def capture_content() -> bool:
    return os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() in _TRUE


def latest_experimental() -> bool:
    opt_in = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "gen_ai_latest_experimental" in (part.strip() for part in opt_in.split(","))


class OpenTelemetryHooks(Hooks):
    """Spans and metrics for every call of a client (added by ``create_client`` when
    ``opentelemetry`` is installed; ``telemetry=False`` leaves it out)."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer: Any = None
        self._instruments: Any = None
        self.capture_content = capture_content()
        self.latest = latest_experimental()
        # Providers named by environment variables (loaded by the API on first use).
        self._env_providers = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER")
                                   or os.environ.get("OTEL_PYTHON_METER_PROVIDER"))

    # -- on or off ---------------------------------------------------------------------------

    def enabled(self) -> bool:
        if self._tracer is not None:
            return True
        if self._tracer_provider is None and self._meter_provider is None and not self._env_providers \
                and getattr(trace, "_TRACER_PROVIDER", 0) is None \
                and getattr(_metrics_internal, "_METER_PROVIDER", 0) is None:
            # The API's globals are None until the application sets a provider: one check per
            # call (the public getters read two environment variables each time). 0 (attribute
            # gone in another API version) falls through to the public getters.
            return False
        tracer_provider = self._tracer_provider or trace.get_tracer_provider()
        meter_provider = self._meter_provider or metrics.get_meter_provider()
        traced = not isinstance(tracer_provider, trace.ProxyTracerProvider)
        metered = type(meter_provider).__name__ != "_ProxyMeterProvider"
        if not traced and not metered:
            return False  # nothing configured yet: asked again on the next call
        self._tracer = tracer_provider.get_tracer("gen_ai", _version(), schema_url=SCHEMA_URL)
        self._instruments = _Instruments(meter_provider.get_meter("gen_ai", _version(), schema_url=SCHEMA_URL),
                                         self.latest)
        return True

    # -- spans -------------------------------------------------------------------------------

    def on_call_start(self, call: CallInfo) -> None:
        if call.operation == "execute_tool":
            name = f"execute_tool {call.params.get('tool_name')}"
        else:
            name = f"{call.operation} {call.model}" if call.model else call.operation
        parent = call.parent.state.get(self) if call.parent is not None else None
        context = trace.set_span_in_context(parent) if parent is not None else None
        kind = SpanKind.INTERNAL if call.operation in ("execute_tool", "batch") else SpanKind.CLIENT
        span = self._tracer.start_span(name, context=context, kind=kind, attributes=self._start_attributes(call))
        call.state[self] = span
        if self.capture_content and span.is_recording():
            _record_input(span, call)

    def _start_attributes(self, call: CallInfo) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": call.operation,
            "gen_ai.provider.name": PROVIDER_NAMES.get(call.provider, call.provider),
        }
        if call.model:
            attrs["gen_ai.request.model"] = call.model
        if call.server_address:
            attrs["server.address"] = call.server_address
            if call.server_port:
                attrs["server.port"] = call.server_port
        params = call.params
        if call.operation in ("chat", "text_completion"):
            attrs["gen_ai.request.max_tokens"] = params.get("max_tokens")
            attrs["gen_ai.request.temperature"] = float(params.get("temperature", 0))
            attrs["gen_ai.request.top_p"] = float(params.get("top_p", 1.0))
            if params.get("n", 1) != 1:
                attrs["gen_ai.request.choice.count"] = params["n"]
            if params.get("stream"):
                attrs["gen_ai.request.stream"] = True
            stop = params.get("stop")
            if stop is not None:
                attrs["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
            for name in ("seed", "frequency_penalty", "presence_penalty", "top_k"):
                if name in params:
                    attrs[f"gen_ai.request.{name}"] = params[name]
        elif call.operation == "execute_tool":
            attrs["gen_ai.tool.name"] = params.get("tool_name")
            attrs["gen_ai.tool.call.id"] = params.get("tool_call_id")
            attrs["gen_ai.tool.type"] = "function"
            if self.capture_content and params.get("arguments") is not None:
                attrs["gen_ai.tool.call.arguments"] = str(params["arguments"])
            attrs.pop("gen_ai.request.model", None)
        elif call.operation == "embeddings":
            if params.get("dimensions"):
                attrs["gen_ai.embeddings.dimension.count"] = params["dimensions"]
            if params.get("encoding_format"):
                attrs["gen_ai.request.encoding_formats"] = [str(params["encoding_format"])]
        else:
            for name, value in params.items():
                if isinstance(value, (str, bool, int, float)):
                    attrs[f"gen_ai_client.{call.operation}.{name}"] = value
        return {k: v for k, v in attrs.items() if v is not None}

    def on_request(self, call: CallInfo, request: RequestInfo) -> None:
        if request.attempt > 1:
            span = call.state.get(self)
            if span is not None:
                span.add_event("gen_ai_client.request", {"http.request.method": request.method,
                                                         "url.full": _url(request.url),
                                                         "gen_ai_client.attempt": request.attempt,
                                                         "gen_ai_client.purpose": request.purpose})

    def on_response(self, call: CallInfo, response: ResponseInfo) -> None:
        return None

    def on_retry(self, call: CallInfo, error: Any, delay: float, attempt: int) -> None:
        span = call.state.get(self)
        if span is not None:
            span.add_event("gen_ai_client.retry", {"error.type": _error_type(error), "gen_ai_client.attempt": attempt,
                                                   "gen_ai_client.retry_delay": float(delay),
                                                   "http.response.status_code": error.status_code or 0})

    def on_event(self, call: CallInfo, name: str, attributes: dict[str, Any]) -> None:
        span = call.state.get(self)
        if span is not None:
            clean = {f"gen_ai_client.{k}": v for k, v in attributes.items()
                     if isinstance(v, (str, bool, int, float)) and (self.capture_content or k != "message")}
            span.add_event(f"gen_ai_client.{name}", clean)

    def on_first_chunk(self, call: CallInfo, latency: float) -> None:
        span = call.state.get(self)
        if span is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", latency)

    def on_call_end(self, call: CallInfo, result: Any, error: Any) -> None:
        span = call.state.pop(self, None)
        instruments = self._instruments
        metric_attrs = _metric_attributes(call)
        if error is not None:
            error_type = _error_type(error)
            metric_attrs["error.type"] = error_type
        if span is not None:
            if span.is_recording():
                self._end_attributes(span, call, result, error)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, str(getattr(error, "message", error))[:500]))
            span.end()
        if instruments is not None and call.operation not in ("batch",):
            instruments.record(call, metric_attrs)

    def _end_attributes(self, span: Any, call: CallInfo, result: Any, error: Any) -> None:
        if error is not None:
            span.set_attribute("error.type", _error_type(error))
        if call.response_id:
            span.set_attribute("gen_ai.response.id", str(call.response_id))
        if call.response_model:
            span.set_attribute("gen_ai.response.model", str(call.response_model))
        if call.finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", [str(r) for r in call.finish_reasons])
        usage = call.usage
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", int(usage.prompt_tokens))
            span.set_attribute("gen_ai.usage.output_tokens", int(usage.completion_tokens))
            for attr, name in (("cached_tokens", "gen_ai.usage.cache_read.input_tokens"),
                               ("cache_write_tokens", "gen_ai.usage.cache_creation.input_tokens"),
                               ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens")):
                value = getattr(usage, attr, None)
                if value:
                    span.set_attribute(name, int(value))
        if call.operation in ("execute_tool", "batch"):
            for key, value in call.state.get("attributes", {}).items():
                span.set_attribute(key, value)
        if call.operation == "execute_tool" and self.capture_content and result is not None:
            output = getattr(result, "output", None)
            span.set_attribute("gen_ai.tool.call.result", str(output)[:4000])
        if self.capture_content and call.output is not None and call.operation in ("chat", "text_completion"):
            reasons = call.finish_reasons
            messages = [{"role": "assistant", "parts": [{"type": "text", "content": text}],
                         "finish_reason": reasons[i] if i < len(reasons) else "stop"}
                        for i, text in enumerate(call.output)]
            span.set_attribute("gen_ai.output.messages", json.dumps(messages, ensure_ascii=False))


class _Instruments:
    """The histograms (and, with the latest names, counters) of one meter."""

    def __init__(self, meter: Any, latest: bool) -> None:
        self.latest = latest
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk", unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        if latest:
            self.input_hist = meter.create_histogram(
                "gen_ai.client.inference.operation.input_tokens", unit="{token}",
                description="The number of input (prompt) tokens used per inference operation.",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
            self.output_hist = meter.create_histogram(
                "gen_ai.client.inference.operation.output_tokens", unit="{token}",
                description="The number of output (completion) tokens used per inference operation.",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
            self.counters = {
                attr: meter.create_counter(f"gen_ai.client.inference.usage.{name}", unit="{token}")
                for attr, name in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens"),
                                   ("cached_tokens", "cache_read.input_tokens"),
                                   ("cache_write_tokens", "cache_write.input_tokens"),
                                   ("reasoning_tokens", "reasoning.output_tokens"))
            }
        else:
            self.tokens = meter.create_histogram(
                "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)

    def record(self, call: CallInfo, attrs: dict[str, Any]) -> None:
        if call.latency is not None:
            self.duration.record(call.latency, attrs)
        if call.first_chunk_latency is not None:
            self.first_chunk.record(call.first_chunk_latency, {k: v for k, v in attrs.items() if k != "error.type"})
        usage = call.usage
        if usage is None or "error.type" in attrs:
            return
        if self.latest:
            self.input_hist.record(int(usage.prompt_tokens), attrs)
            self.output_hist.record(int(usage.completion_tokens), attrs)
            counted = dict(attrs, **{"gen_ai.token.modality": "text"})
            for attr, counter in self.counters.items():
                value = getattr(usage, attr, 0) or 0
                if value or attr in ("prompt_tokens", "completion_tokens"):
                    counter.add(int(value), counted)
        else:
            self.tokens.record(int(usage.prompt_tokens), dict(attrs, **{"gen_ai.token.type": "input"}))
            self.tokens.record(int(usage.completion_tokens), dict(attrs, **{"gen_ai.token.type": "output"}))


def _metric_attributes(call: CallInfo) -> dict[str, Any]:
    attrs: dict[str, Any] = {"gen_ai.operation.name": call.operation,
                             "gen_ai.provider.name": PROVIDER_NAMES.get(call.provider, call.provider)}
    if call.model:
        attrs["gen_ai.request.model"] = call.model
    if call.response_model:
        attrs["gen_ai.response.model"] = str(call.response_model)
    if call.server_address:
        attrs["server.address"] = call.server_address
        if call.server_port:
            attrs["server.port"] = call.server_port
    return attrs


def _error_type(error: Any) -> str:
    """The error's class name; for a tool that raised, the class of what it raised."""
    from .errors import ToolCallError

    if isinstance(error, ToolCallError) and error.error_type:
        return str(error.error_type)
    return type(error).__name__


def _url(url: str) -> str:
    """A URL without its query string (Gemini's legacy ``?key=`` must never reach a span)."""
    return url.split("?", 1)[0]


def _record_input(span: Any, call: CallInfo) -> None:
    if call.messages is not None:
        system, messages = [], []
        for message in call.messages:
            role = message.get("role")
            parts = _parts(message)
            if role in ("system", "developer"):
                system.extend(parts)
            else:
                messages.append({"role": role, "parts": parts})
        span.set_attribute("gen_ai.input.messages", json.dumps(messages, ensure_ascii=False, default=str))
        if system:
            span.set_attribute("gen_ai.system_instructions", json.dumps(system, ensure_ascii=False, default=str))
    elif call.prompt is not None:
        span.set_attribute("gen_ai.input.messages", json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": call.prompt}]}], ensure_ascii=False))


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append({"type": "text", "content": part.get("text", "")})
            elif isinstance(part, dict):
                parts.append({"type": str(part.get("type"))})  # images: the kind, never the bytes
    for tool_call in message.get("tool_calls") or ():
        function = tool_call.get("function", {}) if isinstance(tool_call, dict) else {}
        parts.append({"type": "tool_call", "id": tool_call.get("id") if isinstance(tool_call, dict) else None,
                      "name": function.get("name"), "arguments": function.get("arguments")})
    if message.get("role") == "tool":
        parts = [{"type": "tool_call_response", "id": message.get("tool_call_id"), "result": content}]
    return parts
