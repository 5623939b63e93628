"""Parameters reasoning models require (max_completion_tokens, no sampling parameters) and the one
``reasoning_effort=`` keyword mapped per provider. Bodies are checked against each provider's
published schema; the adapt-on-400 path runs against a loopback server answering as OpenAI does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import SPECS, spec_validator
from fault_server import FaultServer, chat_body

from gen_ai.errors import InvalidInputError
from gen_ai.factory import create_client
from gen_ai.providers.anthropic import AnthropicCodec, thinking_mode
from gen_ai.providers.gemini import GeminiCodec
from gen_ai.providers.openai import OpenAICodec, reasoning_model_facts
from gen_ai.types import Call

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def openai_body(model: str, call: Call, endpoint: str = "https://api.openai.com/v1") -> dict[str, Any]:
    return json.loads(OpenAICodec(api_key="k", endpoint=endpoint, model_name=model).build_request(call).body)


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


# -- OpenAI: which models take max_completion_tokens, decided from the name ------------------------


@pytest.mark.parametrize("model, field, dropped", [
    ("gpt-4o-mini", "max_tokens", set()),
    ("gpt-4.1", "max_tokens", set()),
    ("o1", "max_completion_tokens", {"temperature", "top_p"}),
    ("o3-mini", "max_completion_tokens", {"temperature", "top_p"}),
    ("o4-mini-2025-04-16", "max_completion_tokens", {"temperature", "top_p"}),
    ("gpt-5", "max_completion_tokens", {"temperature", "top_p"}),
    ("gpt-5.1-codex", "max_completion_tokens", {"temperature", "top_p"}),
    ("openai/gpt-5-mini", "max_completion_tokens", {"temperature", "top_p"}),
    ("gpt-5-chat-latest", "max_completion_tokens", set()),
    ("omni-moderation", "max_tokens", set()),
    ("Qwen/Qwen3-8B", "max_tokens", set()),
])
def test_reasoning_model_facts_from_the_name(model, field, dropped):
    assert reasoning_model_facts(model) == (field, frozenset(dropped))


def test_reasoning_model_body_validates(openai_spec):
    call = Call("chat", messages=MESSAGES, max_tokens=500, reasoning_effort="high")
    body = openai_body("o3", call)
    assert body["max_completion_tokens"] == 500 and "max_tokens" not in body
    assert "temperature" not in body and "top_p" not in body
    assert body["reasoning_effort"] == "high" and "chat_template_kwargs" not in body
    spec_validator(openai_spec, "CreateChatCompletionRequest").validate(body)
    # The plain model keeps max_tokens and the sampling parameters.
    body = openai_body("gpt-4o", Call("chat", messages=MESSAGES, max_tokens=500))
    assert body["max_tokens"] == 500 and body["temperature"] == 0
    # Text completions have no max_completion_tokens.
    assert "max_tokens" in openai_body("o3", Call("completion", prompt="x"))


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh"])
def test_reasoning_effort_values_validate_against_the_spec(openai_spec, effort):
    body = openai_body("gpt-5.1", Call("chat", messages=MESSAGES, reasoning_effort=effort))
    assert body["reasoning_effort"] == effort
    spec_validator(openai_spec, "CreateChatCompletionRequest").validate(body)


def test_none_also_switches_chat_templates_off_on_open_servers():
    body = openai_body("Qwen/Qwen3-8B", Call("chat", messages=MESSAGES, reasoning_effort="none"),
                       endpoint="http://127.0.0.1:8000/v1")
    assert body["reasoning_effort"] == "none"
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    # The caller's own chat_template_kwargs win.
    call = Call("chat", messages=MESSAGES, reasoning_effort="none", extra={"chat_template_kwargs": {"thinking": False}})
    assert openai_body("m", call, "http://127.0.0.1:1/v1")["chat_template_kwargs"] == {"thinking": False}


def test_token_budget_is_refused_by_openai_before_sending(server):
    client = create_client(endpoint=server.url, model_name="o3", api_key="k")
    with pytest.raises(InvalidInputError, match="reasoning_effort") as info:
        client.run_chat_completions(MESSAGES, reasoning_effort=2048)
    assert info.value.field == "reasoning_effort" and server.requests == []
    with pytest.raises(InvalidInputError, match="reasoning_effort"):
        client.run_chat_completions(MESSAGES, reasoning_effort=["high"])
    with pytest.raises(InvalidInputError, match="top_logprobs"):
        client.run_chat_completions(MESSAGES, top_logprobs=99)
    assert server.requests == []


def openai_400(message: str, param: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


MAX_TOKENS_400 = openai_400("Unsupported parameter: 'max_tokens' is not supported with this model. "
                            "Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
TEMPERATURE_400 = openai_400("Unsupported value: 'temperature' does not support 0 with this model. "
                             "Only the default (1) value is supported.", "temperature", "unsupported_value")
TOP_P_400 = openai_400("Unsupported parameter: 'top_p' is not supported with this model.", "top_p",
                       "unsupported_parameter")


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_adapts_on_400_once_per_client(server, provider):
    """A model the name does not reveal (an Azure deployment, a gateway alias): the 400s teach the
    client, once, and the next call is sent right the first time."""
    if provider == "azure":
        root = server.url.removesuffix("/v1")
        client = create_client("azure", endpoint=root, api_key="k", deployment="prod-reasoner")
    else:
        client = create_client(endpoint=server.url, model_name="my-alias", api_key="k")
    server.add(400, MAX_TOKENS_400).add(400, TEMPERATURE_400).add(400, TOP_P_400).add(200, chat_body("ok"))
    assert client.run_chat_completions(MESSAGES, max_tokens=300, top_p=0.5) == "ok"
    bodies = [r.json() for r in server.requests]
    assert "max_tokens" in bodies[0] and "max_completion_tokens" not in bodies[0]
    assert bodies[1]["max_completion_tokens"] == 300 and "temperature" in bodies[1]
    assert "temperature" not in bodies[2] and bodies[2]["top_p"] == 0.5
    assert "top_p" not in bodies[3] and bodies[3]["max_completion_tokens"] == 300
    server.add(200, chat_body("again"))
    assert client.run_chat_completions(MESSAGES, max_tokens=300) == "again"
    assert len(server.requests) == 5
    last = server.requests[-1].json()
    assert last["max_completion_tokens"] == 300 and "temperature" not in last and "top_p" not in last
    state = client.server_state  # learned once per client
    assert state.max_tokens_field == "max_completion_tokens" and state.rejected_fields == {"temperature", "top_p"}
    client.close()


def test_server_rejecting_reasoning_effort_none_stops_getting_it(server):
    """Older vLLM validates reasoning_effort as low|medium|high (pydantic 400 for "none")."""
    client = create_client(endpoint=server.url, model_name="Qwen/Qwen3-8B", api_key="k")
    server.add(400, {"error": {"message": "1 validation error for ChatCompletionRequest\nreasoning_effort\n  "
                                          "Input should be 'low', 'medium' or 'high'", "type": "BadRequestError",
                               "param": None, "code": 400}})
    server.add(200, chat_body("ok"))
    assert client.run_chat_completions(MESSAGES, reasoning_effort="none") == "ok"
    second = server.requests[1].json()
    assert "reasoning_effort" not in second and second["chat_template_kwargs"] == {"enable_thinking": False}
    assert second["temperature"] == 0  # only the rejected field went
    client.close()


def test_other_400s_are_not_adapted(server):
    client = create_client(endpoint=server.url, model_name="gpt-4o", api_key="k", max_retries=0)
    server.add(400, openai_400("Invalid 'messages[0].content': string too long.", "messages", "string_above_max"))
    with pytest.raises(Exception, match="too long"):
        client.run_chat_completions(MESSAGES)
    assert len(server.requests) == 1
    client.close()


# -- Anthropic ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, mode", [
    ("claude-3-7-sonnet-20250219", "enabled"), ("claude-sonnet-4-20250514", "enabled"),
    ("claude-sonnet-4-5", "enabled"), ("claude-opus-4-1-20250805", "enabled"),
    ("claude-opus-4-6", "adaptive"), ("claude-sonnet-4-6", "adaptive"), ("claude-opus-5", "adaptive"),
    ("anthropic.claude-opus-4-6-v1", "adaptive"), ("my-gateway-model", "enabled"),
])
def test_anthropic_thinking_mode_from_the_name(model, mode):
    assert thinking_mode(model) == mode


def anthropic_body(model: str, call: Call) -> dict[str, Any]:
    return json.loads(AnthropicCodec(api_key="k", model_name=model).build_request(call).body)


def test_anthropic_budget_thinking_body():
    from test_provider_anthropic import conform

    body = anthropic_body("claude-sonnet-4-5", Call("chat", messages=MESSAGES, max_tokens=20000,
                                                    reasoning_effort="medium", top_p=0.5))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert "temperature" not in body and "top_p" not in body
    assert conform(body) == []
    # The budget stays below max_tokens (thinking counts against it).
    body = anthropic_body("claude-sonnet-4-5", Call("chat", messages=MESSAGES, max_tokens=4000,
                                                    reasoning_effort="high"))
    assert body["thinking"]["budget_tokens"] == 3999 and conform(body) == []
    body = anthropic_body("claude-sonnet-4-5", Call("chat", messages=MESSAGES, max_tokens=9000, reasoning_effort=5000))
    assert body["thinking"]["budget_tokens"] == 5000
    body = anthropic_body("claude-sonnet-4-5", Call("chat", messages=MESSAGES, reasoning_effort="none"))
    assert body["thinking"] == {"type": "disabled"} and body["temperature"] == 0  # sampling kept: no thinking
    del body["temperature"]  # the SDK's 2026 request types have no sampling parameters
    assert conform(body) == []


def test_anthropic_adaptive_thinking_body():
    from test_provider_anthropic import conform

    body = anthropic_body("claude-opus-4-6", Call("chat", messages=MESSAGES, max_tokens=2000, reasoning_effort="high"))
    assert body["thinking"] == {"type": "adaptive"} and body["output_config"] == {"effort": "high"}
    assert conform(body) == []
    from gen_ai.structured import Schema

    call = Call("chat", messages=MESSAGES, reasoning_effort="minimal",
                schema=Schema.from_user({"type": "object", "properties": {"a": {"type": "integer"}}}))
    body = anthropic_body("claude-opus-4-6", call)
    assert body["output_config"]["effort"] == "low" and body["output_config"]["format"]["type"] == "json_schema"
    assert conform(body) == []


def test_anthropic_small_max_tokens_is_a_clear_error(server):
    client = create_client("anthropic", api_key="k", endpoint=server.url, model_name="claude-sonnet-4-5")
    with pytest.raises(InvalidInputError, match="max_tokens=256") as info:
        client.run_chat_completions(MESSAGES, reasoning_effort="low")
    assert info.value.field == "max_tokens" and server.requests == []


def test_anthropic_learns_the_other_thinking_form(server):
    client = create_client("anthropic", api_key="k", endpoint=server.url, model_name="claude-opus-4-6")
    server.add(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                "message": "thinking.type: 'adaptive' is not supported for this model"}})
    server.add(200, {"id": "m", "type": "message", "role": "assistant", "model": "claude-opus-4-6",
                     "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                     "usage": {"input_tokens": 1, "output_tokens": 1}})
    assert client.run_chat_completions(MESSAGES, max_tokens=5000, reasoning_effort="low") == "ok"
    assert server.requests[1].json()["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert client.server_state.thinking_mode == "enabled" and client.codec.thinking_mode == "adaptive"
    client.close()


# -- Gemini ---------------------------------------------------------------------------------------


def gemini_config(model: str, effort: Any) -> dict[str, Any]:
    codec = GeminiCodec(api_key="k", model_name=model)
    return json.loads(codec.build_request(Call("chat", messages=MESSAGES, reasoning_effort=effort)).body)[
        "generationConfig"]


def test_gemini_thinking_config():
    assert gemini_config("gemini-2.5-flash", "low")["thinkingConfig"] == {"thinkingBudget": 1024,
                                                                            "includeThoughts": True}
    assert gemini_config("gemini-2.5-flash", "none")["thinkingConfig"] == {"thinkingBudget": 0}
    assert gemini_config("gemini-2.5-pro", 3000)["thinkingConfig"] == {"thinkingBudget": 3000, "includeThoughts": True}
    assert gemini_config("gemini-3-pro-preview", "high")["thinkingConfig"] == {"thinkingLevel": "high",
                                                                                "includeThoughts": True}
    assert gemini_config("gemini-3-flash", "none")["thinkingConfig"]["thinkingLevel"] == "minimal"


def test_gemini_thinking_config_fields_are_in_the_proto():
    """thinkingBudget / includeThoughts are ThinkingConfig fields of the v1beta proto here;
    thinkingLevel is newer than this proto (google-genai's ThinkingConfig.thinking_level)."""
    proto = (SPECS / "gemini-v1beta" / "generative_service.proto").read_text()
    block = proto[proto.index("message ThinkingConfig {"):]
    block = block[:block.index("}")]
    assert "include_thoughts" in block and "thinking_budget" in block
    assert "ThinkingConfig thinking_config" in proto


# -- Bedrock --------------------------------------------------------------------------------------


def bedrock_body(model: str, call: Call) -> dict[str, Any]:
    from gen_ai.providers.bedrock import BedrockCodec

    codec = BedrockCodec(model_name=model, region="us-east-1", bearer_token="tok")
    return codec.build_body(call)


def test_bedrock_reasoning_fields_per_model_family():
    body = bedrock_body("us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                        Call("chat", messages=MESSAGES, max_tokens=8000, reasoning_effort="medium"))
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 7999}}
    assert "temperature" not in body["inferenceConfig"]
    body = bedrock_body("us.anthropic.claude-opus-4-6-v1", Call("chat", messages=MESSAGES, reasoning_effort="high"))
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}
    body = bedrock_body("us.amazon.nova-2-lite-v1:0", Call("chat", messages=MESSAGES, reasoning_effort="low",
                                                          extra={"additionalModelRequestFields": {"x": 1}}))
    assert body["additionalModelRequestFields"] == {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "low"},
                                                    "x": 1}
    body = bedrock_body("openai.gpt-oss-120b-1:0", Call("chat", messages=MESSAGES, reasoning_effort="high"))
    assert body["additionalModelRequestFields"] == {"reasoning_effort": "high"}
    with pytest.raises(InvalidInputError, match="additionalModelRequestFields"):
        bedrock_body("meta.llama3-70b-instruct-v1:0", Call("chat", messages=MESSAGES, reasoning_effort="high"))
