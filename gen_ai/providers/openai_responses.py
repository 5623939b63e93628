"""The OpenAI Responses API (``POST /v1/responses``) as a wire protocol for the same ``run_*`` calls.
Pure codec, no I/O. ``create_client(provider="openai", api="responses")``; served by OpenAI, vLLM,
SGLang, llama.cpp's server, Ollama and LM Studio.

What the call becomes:

    messages                 ``input`` items: {role, content} messages (text parts -> input_text,
                             image_url -> input_image; an assistant turn's parts joined as text),
                             assistant ``tool_calls`` -> function_call items, ``tool`` messages ->
                             function_call_output items, and the ``openai.reasoning`` items of a
                             to_message() (reasoning with its encrypted_content) put back before
                             the assistant message they came with
    text completion prompt   ``input`` as a string
    max_tokens               ``max_output_tokens`` (reasoning tokens count against it)
    temperature, top_p       sent, except to reasoning models (o-series, gpt-5: from the name, or
                             learned from a 400 like the chat codec)
    reasoning_effort         ``reasoning: {effort, summary: "auto"}``, and
                             ``include: ["reasoning.encrypted_content"]`` with ``store: false`` so
                             the reasoning can be sent back statelessly
    guided_json              ``text.format = {type: json_schema, name, schema, strict}``
    tools, tool_choice       ``tools: [{type: function, name, description, parameters}]``,
                             ``tool_choice`` "auto" / "none" / "required" / {type: function, name}
    n > 1                    not in the API: the call flow asks again with n=1
    logprobs, top_logprobs   ``include: ["message.output_text.logprobs"]``, ``top_logprobs``

Answers: the ``message`` items' ``output_text`` parts are the text; ``reasoning`` items give
``result.reasoning`` (their ``reasoning_text`` content, as vLLM sends it, else the summaries) and
``reasoning_details`` (the items themselves); ``function_call`` items the tool calls; ``status:
incomplete`` with ``incomplete_details.reason == "max_output_tokens"`` is ``finish_reason
"length"``, and so is a "completed" answer that used all of max_output_tokens (llama.cpp's server
does not mark the cut). Streams are read from the typed events (``response.output_text.delta``,
``response.reasoning_text.delta``, ``response.reasoning_summary_text.delta``,
``response.function_call_arguments.delta``, ``response.output_item.done``,
``response.completed`` / ``response.incomplete`` / ``response.failed``, ``error``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._keywords import RESPONSES_KEYWORDS
from .._sse import SSEDecoder
from .._state import FRESH, Changes, ServerState
from ..errors import GenAIError, ResponseError, StreamError, StreamTruncatedError
from ..types import Call, Completion, RawResponse, Request, StreamEvent, TokenLogprob, ToolCall, Usage
from ._base import StreamParser, decode_json, dumps, error_details
from .openai import OpenAICodec, logprob_value

_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


class OpenAIResponsesCodec(OpenAICodec):
    """OpenAI's credentials, endpoint rules, errors and learned facts; the Responses wire format."""

    extra_keywords = RESPONSES_KEYWORDS
    openai_response_body = False  # a Responses body, not Chat Completions

    def __init__(self, api_key: str | None = None, endpoint: str | None = None, model_name: str | None = None,
                 *, strict_schema: bool = True, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(api_key, endpoint, model_name, dialect="json_schema", strict_schema=strict_schema,
                         headers=headers)
        self._url = f"{self.base_url}/responses"

    # -- requests -------------------------------------------------------------------------

    def build_body(self, call: Call, state: ServerState = FRESH) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_name}
        if call.kind == "chat":
            instructions, items = responses_input(call.messages or [])
            if instructions:
                body["instructions"] = instructions
            body["input"] = items
        else:
            body["input"] = call.prompt or ""
        body["max_output_tokens"] = call.max_tokens
        rejected = self._name_rejected | state.rejected_fields
        if "temperature" not in rejected:
            body["temperature"] = call.temperature
        if "top_p" not in rejected:
            body["top_p"] = call.top_p
        include: list[str] = []
        effort = call.reasoning_effort
        if effort is not None and "reasoning_effort" not in rejected:
            if isinstance(effort, int):
                self._add_reasoning_effort(body, effort, rejected)  # raises the clear error
            body["reasoning"] = {"effort": effort} if effort == "none" else {"effort": effort, "summary": "auto"}
            if effort != "none":
                include.append("reasoning.encrypted_content")
                body["store"] = False
        if call.logprobs:
            include.append("message.output_text.logprobs")
            if call.top_logprobs is not None:
                body["top_logprobs"] = call.top_logprobs
        if include:
            body["include"] = include
        if call.schema is not None:
            body["text"] = {"format": {"type": "json_schema", "name": call.schema.name,
                                       "schema": call.schema.json_schema, "strict": self.strict_schema}}
        if call.tools:
            # strict is required by the Responses schema; false unless asked, as in Chat Completions.
            body["tools"] = [{"type": "function", "name": t.name, "parameters": t.parameters,
                              "strict": bool(t.strict),
                              **({"description": t.description} if t.description else {})} for t in call.tools]
        choice = call.tool_choice
        if choice is not None:
            body["tool_choice"] = choice if choice in ("auto", "none", "required") else {"type": "function",
                                                                                         "name": choice}
        if call.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = call.parallel_tool_calls
        if call.stream:
            body["stream"] = True
        if call.extra:
            body.update(call.extra)
        return body

    def build_request(self, call: Call, state: ServerState = FRESH) -> Request:
        return Request("POST", self._url, self._headers, dumps(self.build_body(call, state)), call.stream)

    def probe_request(self, call: Call, state: ServerState) -> Request | None:
        return None  # one structured-output shape: text.format

    def fallback(self, call: Call, request: Request, error: GenAIError, state: ServerState) -> Changes | None:
        return self.adapt_reasoning_params(call, request, error, state)

    # -- responses ------------------------------------------------------------------------

    def parse_response(self, call: Call, response: RawResponse) -> Completion:
        data = decode_json(response, self.provider)
        if not isinstance(data, dict) or not isinstance(data.get("output"), list):
            message, _, _ = error_details(response.body)
            raise ResponseError(f"the response has no 'output' list: {message[:300]}", status_code=response.status,
                                url=response.url, method=response.method, provider=self.provider)
        if data.get("status") == "failed":
            err = data.get("error") or {}
            raise ResponseError(f"the response failed: {err.get('message') or err}", status_code=response.status,
                                url=response.url, method=response.method, provider=self.provider,
                                error_type=err.get("code"))
        return completion_from_response(data, response.body or data, call.max_tokens)

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:
        return ResponsesStreamParser(self.provider, call.max_tokens)


def responses_input(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """Chat messages -> (None, Responses input items). System and developer messages stay input
    messages (their roles keep their precedence), so ``instructions`` is not used."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id") or "",
                          "output": content if isinstance(content, str) else json.dumps(content)})
            continue
        if role == "assistant":
            for item in message.get("reasoning_details") or ():
                if isinstance(item, dict) and item.get("type") == "openai.reasoning" and item.get("item"):
                    items.append(item["item"])
        if content is not None and (content != "" or not message.get("tool_calls")):
            if isinstance(content, list):
                if role == "assistant":  # an input message of the assistant role takes text
                    content = "".join(str(p.get("text", "")) for p in content
                                      if p.get("type") in ("text", "output_text"))
                else:
                    content = [_part(part) for part in content]
            # "type": "message" is optional in the spec, but llama.cpp's server needs it.
            items.append({"type": "message", "role": role if role != "function" else "user", "content": content})
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {} if isinstance(call, dict) else {}
            items.append({"type": "function_call", "call_id": call.get("id") or "", "name": fn.get("name") or "",
                          "arguments": fn.get("arguments") or "{}"})
    return None, items


def _part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        out: dict[str, Any] = {"type": "input_image", "image_url": url}
        if isinstance(image, dict) and image.get("detail"):
            out["detail"] = image["detail"]
        else:
            out["detail"] = "auto"
        return out
    return part  # already a Responses part (input_text, input_image, input_file, ...)


def usage_from_response(usage: Any) -> Usage | None:
    """ResponseUsage: input_tokens (cached included), output_tokens (reasoning included)."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    result = Usage(prompt, completion)
    details = usage.get("input_tokens_details")
    if isinstance(details, dict):
        result.cached_tokens = int(details.get("cached_tokens") or 0)
        result.cache_write_tokens = int(details.get("cache_write_tokens") or 0)
    details = usage.get("output_tokens_details")
    if isinstance(details, dict):
        result.reasoning_tokens = int(details.get("reasoning_tokens") or 0)
    return result


def finish_reason_of(data: dict[str, Any], has_tool_calls: bool, max_tokens: int | None = None) -> str | None:
    status = data.get("status")
    if status == "incomplete":
        reason = (data.get("incomplete_details") or {}).get("reason")
        return _INCOMPLETE_REASONS.get(str(reason), str(reason) if reason else "length")
    if has_tool_calls:
        return "tool_calls"
    if status not in ("completed", None):
        return str(status)
    # llama.cpp's server answers "completed" even when max_output_tokens cut the answer: an
    # answer that used the whole budget was cut.
    usage = data.get("usage")
    if max_tokens and isinstance(usage, dict) and int(usage.get("output_tokens") or 0) >= max_tokens:
        return "length"
    return "stop"


def reasoning_item_text(item: dict[str, Any]) -> str:
    """A reasoning item's text: its reasoning_text content (vLLM, open models), else its summaries."""
    content = [str(c.get("text") or "") for c in item.get("content") or () if isinstance(c, dict)]
    if any(content):
        return "".join(content)
    return "\n\n".join(str(s.get("text") or "") for s in item.get("summary") or () if isinstance(s, dict))


def completion_from_response(data: dict[str, Any], raw: Any, max_tokens: int | None = None) -> Completion:
    texts: list[str] = []
    thinking: list[str] = []
    details: list[dict[str, Any]] = []
    tool_calls: list[ToolCall] = []
    logprobs: list[TokenLogprob] | None = None
    for item in data["output"]:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                    if part.get("logprobs"):
                        logprobs = (logprobs or []) + response_logprobs(part["logprobs"])
        elif kind == "reasoning":
            text = reasoning_item_text(item)
            if text:
                thinking.append(text)
            details.append({"type": "openai.reasoning", "item": _reasoning_input(item)})
        elif kind == "function_call":
            arguments = item.get("arguments")
            tool_calls.append(ToolCall(str(item.get("call_id") or item.get("id") or ""), str(item.get("name") or ""),
                                       arguments if type(arguments) is str else "{}", len(tool_calls)))
    reason = finish_reason_of(data, bool(tool_calls), max_tokens)
    return Completion(["".join(texts)], [reason], usage_from_response(data.get("usage")), data.get("model"),
                      raw, data.get("id"), [tool_calls] if tool_calls else None,
                      ["".join(thinking)] if thinking else None, [details] if details else None,
                      [logprobs] if logprobs is not None else None)


def _reasoning_input(item: dict[str, Any]) -> dict[str, Any]:
    """The reasoning output item as an input item (what the API takes back next turn)."""
    out: dict[str, Any] = {"type": "reasoning", "summary": item.get("summary") or []}
    for key in ("id", "encrypted_content", "content"):
        if item.get(key):
            out[key] = item[key]
    return out


def response_logprobs(items: Any) -> list[TokenLogprob]:
    out: list[TokenLogprob] = []
    for lp in items if isinstance(items, list) else ():
        if not isinstance(lp, dict):
            continue
        tops = lp.get("top_logprobs")
        raw_bytes = lp.get("bytes")
        out.append(TokenLogprob(str(lp.get("token", "")), logprob_value(lp.get("logprob")),
                                [(str(t.get("token", "")), logprob_value(t.get("logprob")))
                                 for t in (tops if isinstance(tops, list) else ()) if isinstance(t, dict)],
                                raw_bytes if isinstance(raw_bytes, list) else None))
    return out


def _index(obj: dict[str, Any]) -> int:
    index = obj.get("output_index")
    return index if type(index) is int else 0


class ResponsesStreamParser(StreamParser):
    """The Responses API's typed server-sent events."""

    def __init__(self, provider: str, max_tokens: int | None = None) -> None:
        super().__init__()
        self._provider = provider
        self._max_tokens = max_tokens
        self._sse = SSEDecoder()
        self._done = False
        self._argument_deltas: set[int] = set()  # output_index of calls whose arguments streamed
        self._reasoning_streamed: set[int] = set()  # output_index of reasoning items with text deltas

    def feed(self, chunk: bytes) -> list[str]:
        out: list[str] = []
        for name, data in self._sse.feed(chunk):
            self._event(name, data, out)
        if out:
            self.parts.extend(out)
        return out

    def _event(self, name: str | None, data: bytes, out: list[str]) -> None:
        if data == b"[DONE]":
            return
        try:
            obj = json.loads(data)
        except ValueError:
            raise StreamError(f"malformed stream event {name!r}: {data[:200]!r}", provider=self._provider) from None
        if not isinstance(obj, dict):
            raise StreamError(f"malformed stream event {name!r}: {data[:200]!r}", provider=self._provider)
        kind = obj.get("type") or name
        if kind == "response.output_text.delta":
            delta = obj.get("delta")
            if type(delta) is str and delta:
                out.append(delta)
                if self.want_events:
                    self.events.append(StreamEvent("text", text=delta))
            if obj.get("logprobs"):
                more = response_logprobs(obj["logprobs"])
                if self.logprobs is None:
                    self.logprobs = more
                else:
                    self.logprobs.extend(more)
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            delta = obj.get("delta")
            if type(delta) is str and delta:
                self.add_reasoning(delta)
                self._reasoning_streamed.add(_index(obj))
        elif kind == "response.output_item.added":
            item = obj.get("item")
            if not isinstance(item, dict):
                item = {}
            if item.get("type") == "function_call":
                self.tool_buffer().start(_index(obj), str(item.get("call_id") or item.get("id") or "") or None,
                                         str(item.get("name") or "") or None)
        elif kind == "response.function_call_arguments.delta":
            delta = obj.get("delta")
            if type(delta) is str and delta:
                self._argument_deltas.add(_index(obj))
                self.tool_buffer().add(_index(obj), delta)
        elif kind == "response.output_item.done":
            item = obj.get("item")
            if not isinstance(item, dict):
                item = {}
            index = _index(obj)
            if item.get("type") == "reasoning":
                if index not in self._reasoning_streamed:
                    text = reasoning_item_text(item)
                    if text:
                        self.add_reasoning(text)
                self.add_detail({"type": "openai.reasoning", "item": _reasoning_input(item)})
            elif item.get("type") == "function_call":
                buffer = self.tool_buffer()
                buffer.start(index, str(item.get("call_id") or item.get("id") or "") or None,
                             str(item.get("name") or "") or None)
                arguments = item.get("arguments")
                if index not in self._argument_deltas and type(arguments) is str:
                    buffer.add(index, arguments)  # a server that sent the call whole
        elif kind == "response.created" or kind == "response.in_progress":
            response = obj.get("response")
            if not isinstance(response, dict):
                response = {}
            self.id = response.get("id") or self.id
            self.model = response.get("model") or self.model
        elif kind in ("response.completed", "response.incomplete"):
            response = obj.get("response")
            if not isinstance(response, dict):
                response = {}
            self.id = response.get("id") or self.id
            self.model = response.get("model") or self.model
            self.usage = usage_from_response(response.get("usage"))
            self.finish_reason = finish_reason_of(response, self._tools is not None and len(self._tools) > 0,
                                                  self._max_tokens)
            self._done = True
        elif kind == "response.failed":
            err = (obj.get("response") or {}).get("error") or {}
            raise StreamError(f"the response failed mid-stream: {err.get('message') or err}", provider=self._provider,
                              error_type=err.get("code"))
        elif kind == "error":
            message = obj.get("message") or (obj.get("error") or {}).get("message") or str(obj)[:300]
            raise StreamError(f"the server reported an error mid-stream: {message}", provider=self._provider,
                              error_type=obj.get("code"))

    def close(self) -> list[str]:
        out: list[str] = []
        for name, data in self._sse.close():
            self._event(name, data, out)
        self.parts.extend(out)
        if not self._done:
            raise StreamTruncatedError(
                "the stream ended before response.completed; "
                f"{len(self.text)} characters arrived", provider=self._provider)
        return out


def _azure_responses_codec() -> type:
    """Azure OpenAI's Responses route: ``{resource}/openai/v1/responses`` (api_version="v1"), or
    ``{resource}/openai/responses?api-version=...`` on the classic route; the deployment name is
    sent as ``model``. Azure's credentials and errors, the Responses wire format."""
    from .azure import AzureCodec, _resource_root

    class AzureResponsesCodec(AzureCodec):
        extra_keywords = RESPONSES_KEYWORDS
        openai_response_body = False
        build_body = OpenAIResponsesCodec.build_body
        parse_response = OpenAIResponsesCodec.parse_response
        stream_parser = OpenAIResponsesCodec.stream_parser

        def __init__(self, api_key: str | None = None, endpoint: str | None = None,
                     model_name: str | None = None, **options: Any) -> None:
            super().__init__(api_key, endpoint, model_name, **options)
            import os
            from urllib.parse import quote

            root = _resource_root(endpoint or os.environ.get(self.env_endpoint) or "")
            url = (f"{root}/openai/v1/responses" if self.v1 else
                   f"{root}/openai/responses?api-version={quote(self.api_version, safe='')}")
            self._urls = {"chat": url, "completion": url}

        def fallback(self, call: Call, request: Request, error: GenAIError, state: ServerState) -> Changes | None:
            return self.adapt_reasoning_params(call, request, error, state)

    return AzureResponsesCodec


def __getattr__(name: str) -> Any:  # AzureResponsesCodec, built on first use (it imports azure.py)
    if name == "AzureResponsesCodec":
        cls = _azure_responses_codec()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
