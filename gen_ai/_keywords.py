"""The extra keyword arguments each provider accepts, frozen here (checked against the specs by
tests/test_keywords.py, never parsed at run time).

A keyword a ``run_*`` method does not name itself goes into the request body. Most servers
ignore fields they do not know, so a typo (``temprature=0.7``) would silently do nothing: the
client refuses any keyword that is not listed for its provider, before anything is sent, with a
"did you mean". ``extra_body={...}`` passes anything through unchecked (as openai-python does).

To add a keyword every provider takes (a feature gen_ai maps in every codec, such as ``tools``),
add it to ``COMMON``; a keyword of one API goes in that API's set. Sources:

    OPENAI_*        OpenAI's OpenAPI file (../shared/specs/openai/openapi.json):
                    CreateChatCompletionRequest / CreateCompletionRequest properties
    SERVER_EXTRAS   fields the OpenAI-compatible servers we target read from the same body:
                    vLLM (vllm/entrypoints/openai/{chat_completion,completion}/protocol.py),
                    SGLang (python/sglang/srt/entrypoints/openai/protocol.py),
                    llama.cpp's llama-server (tools/server/server-task.cpp,
                    params_from_json_cmpl), llama-cpp-python's server (llama_cpp/server/types.py)
    ANTHROPIC       the Messages API request (anthropic SDK's MessageCreateParams)
    GEMINI          GenerateContentRequest + GenerationConfig (gemini-v1beta protos, in the REST
                    lowerCamelCase the codec sends)
    BEDROCK         ConverseRequest members (bedrock-runtime service-2.json)
    LOCAL_*         llama_cpp.Llama.create_chat_completion / create_completion parameters
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InvalidInputError

# gen_ai keywords that every codec accepts (mapped to each provider's own field where it differs:
# ``stop`` becomes Anthropic's stop_sequences, Gemini's and Bedrock's stopSequences). Helpers
# adding a cross-provider feature add its keywords here.
COMMON = frozenset({
    "stop", "extra_body",
    "tools", "tool_choice", "parallel_tool_calls",
    "reasoning_effort", "logprobs", "top_logprobs", "dimensions",
})

OPENAI_CHAT = frozenset({
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model", "moderation",
    "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
    "prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "response_format",
    "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options",
    "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
})

# The Responses API request (CreateResponse), for create_client(..., api="responses").
OPENAI_RESPONSES = frozenset({
    "background", "context_management", "conversation", "include", "input", "instructions",
    "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
    "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning", "safety_identifier", "service_tier", "store", "stream", "stream_options", "temperature",
    "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
})

OPENAI_COMPLETION = frozenset({
    "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "model", "n",
    "presence_penalty", "prompt", "seed", "stop", "stream", "stream_options", "suffix", "temperature",
    "top_p", "user",
})

VLLM_EXTRAS = frozenset({
    # sampling params (chat and completions)
    "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens",
    "spaces_between_special_tokens", "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids",
    "bad_words",
    # extra params
    "echo", "add_generation_prompt", "continue_final_message", "add_special_tokens", "documents",
    "chat_template", "chat_template_kwargs", "mm_processor_kwargs", "structured_outputs", "priority",
    "request_id", "logits_processors", "return_tokens_as_token_ids", "return_token_ids", "cache_salt",
    "kv_transfer_params", "vllm_xargs", "include_reasoning", "prompt_embeds",
    "max_repetition_pattern_size", "min_repetition_pattern_size", "repetition_min_count",
    # removed in vLLM 0.12 but still sent by gen_ai's "guided_json" dialect and older clients
    "guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
})

SGLANG_EXTRAS = frozenset({
    "top_k", "min_p", "min_tokens", "regex", "ebnf", "json_schema", "repetition_penalty",
    "stop_token_ids", "stop_regex", "no_stop_trim", "ignore_eos", "continue_final_message",
    "skip_special_tokens", "lora_path", "session_params", "separate_reasoning", "stream_reasoning",
    "chat_template_kwargs", "return_hidden_states", "rid", "custom_logit_processor", "custom_params",
})

LLAMA_SERVER_EXTRAS = frozenset({
    "top_k", "min_p", "typical_p", "top_n_sigma", "xtc_probability", "xtc_threshold",
    "dynatemp_range", "dynatemp_exponent", "repeat_last_n", "repeat_penalty", "dry_multiplier",
    "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers", "mirostat",
    "mirostat_tau", "mirostat_eta", "n_probs", "min_keep", "post_sampling_probs", "samplers",
    "n_predict", "n_keep", "n_indent", "cache_prompt", "id_slot", "t_max_predict_ms",
    "timings_per_token", "return_tokens", "json_schema", "grammar", "grammar_lazy", "ignore_eos",
    "lora", "reasoning_format", "chat_template_kwargs", "response_fields", "thinking_budget_tokens",
})

LLAMA_CPP_PYTHON_EXTRAS = frozenset({
    "top_k", "min_p", "min_tokens", "repeat_penalty", "logit_bias_type", "mirostat_mode",
    "mirostat_tau", "mirostat_eta", "grammar",
})

SERVER_EXTRAS = VLLM_EXTRAS | SGLANG_EXTRAS | LLAMA_SERVER_EXTRAS | LLAMA_CPP_PYTHON_EXTRAS

# Azure OpenAI adds "On Your Data" to chat (data_sources); no open-source server extras.
AZURE_EXTRAS = frozenset({"data_sources"})

# The anthropic SDK's MessageCreateParamsBase, plus the sampling fields older models take (newer
# SDKs dropped them) and two beta body fields.
ANTHROPIC_SAMPLING = frozenset({"temperature", "top_k", "top_p"})
ANTHROPIC_BETA = frozenset({"context_management", "mcp_servers"})
ANTHROPIC = frozenset({
    "cache_control", "container", "diagnostics", "inference_geo", "max_tokens", "messages", "metadata",
    "model", "output_config", "service_tier", "speed", "stop_sequences", "system", "thinking",
    "tool_choice", "tools", "user_profile_id", "workspace_id",
}) | ANTHROPIC_SAMPLING | ANTHROPIC_BETA

GEMINI_REQUEST = frozenset({
    "contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig",
    "cachedContent",
})
# GenerationConfig fields the Gemini codec moves into generationConfig (see providers/gemini.py).
GEMINI_GENERATION = frozenset({
    "stopSequences", "topK", "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs",
    "logprobs", "thinkingConfig", "responseModalities", "mediaResolution", "speechConfig",
    "enableEnhancedCivicAnswers", "imageConfig", "responseSchema",
})

BEDROCK = frozenset({
    "additionalModelRequestFields", "additionalModelResponseFieldPaths", "guardrailConfig",
    "inferenceConfig", "outputConfig", "performanceConfig", "promptVariables", "requestMetadata",
    "serviceTier", "system", "toolConfig",
})

LOCAL_CHAT = frozenset({
    "functions", "function_call", "tools", "tool_choice", "top_k", "min_p", "typical_p", "stop", "seed",
    "response_format", "presence_penalty", "frequency_penalty", "repeat_penalty", "tfs_z",
    "mirostat_mode", "mirostat_tau", "mirostat_eta", "logits_processor", "grammar", "logit_bias",
    "logprobs", "top_logprobs",
})
LOCAL_COMPLETION = frozenset({
    "suffix", "min_p", "typical_p", "logprobs", "echo", "stop", "frequency_penalty", "presence_penalty",
    "repeat_penalty", "top_k", "seed", "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta",
    "stopping_criteria", "logits_processor", "grammar", "logit_bias",
})


def per_kind(chat: Iterable[str], completion: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
    """A codec's ``extra_keywords``: the allowed names for chat and for text completions."""
    chat_set = frozenset(chat) | COMMON
    return {"chat": chat_set, "completion": chat_set if completion is None else frozenset(completion) | COMMON}


OPENAI_KEYWORDS = per_kind(OPENAI_CHAT | SERVER_EXTRAS, OPENAI_COMPLETION | SERVER_EXTRAS)
AZURE_KEYWORDS = per_kind(OPENAI_CHAT | AZURE_EXTRAS, OPENAI_COMPLETION)
ANTHROPIC_KEYWORDS = per_kind(ANTHROPIC)
GEMINI_KEYWORDS = per_kind(GEMINI_REQUEST | GEMINI_GENERATION)
BEDROCK_KEYWORDS = per_kind(BEDROCK)
LOCAL_KEYWORDS = per_kind(LOCAL_CHAT, LOCAL_COMPLETION)
RESPONSES_KEYWORDS = per_kind(OPENAI_RESPONSES | SERVER_EXTRAS)


def check_keywords(extra: Mapping[str, Any], allowed: frozenset[str], provider: str, kind: str) -> None:
    """Raise InvalidInputError for the first keyword of ``extra`` not in ``allowed``."""
    for name in extra:
        if name not in allowed:
            raise unknown_keyword(name, allowed, provider, kind)


def unknown_keyword(name: str, allowed: Iterable[str], provider: str, kind: str) -> InvalidInputError:
    import difflib  # only on the error path

    close = difflib.get_close_matches(name, sorted(allowed), n=3, cutoff=0.6)
    what = "chat completions" if kind == "chat" else "text completions"
    if close:
        hint = f"Did you mean {close[0]!r}?" + (f" (or {', '.join(map(repr, close[1:]))})" if close[1:] else "")
    else:
        hint = "Check the spelling against the provider's API reference."
    return InvalidInputError(
        f"{name}: unknown keyword argument for provider {provider!r} ({what}); nothing was sent",
        suggestion=f"{hint} To send a field gen_ai does not know, pass it in extra_body={{{name!r}: ...}}.",
        field=name,
    )
