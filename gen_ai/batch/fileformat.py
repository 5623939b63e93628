"""The OpenAI Batch API file format: validating input lines, turning a line's body into a
``Call``, and writing OpenAI batch output lines."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections import deque
from collections.abc import Generator
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from .._speedups import json_codec
from ..errors import InvalidInputError
from ..types import Call, ChatResult, ChatResults, EmbeddingCall

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
EMBEDDINGS_URL = "/v1/embeddings"
_URL_KINDS = {CHAT_URL: "chat", COMPLETIONS_URL: "completion", EMBEDDINGS_URL: "embedding"}


class BatchInputError(InvalidInputError):
    """The input file has problems; nothing was sent. ``problems`` is a list of
    ``(line_number, message)``, every problem of the file (line numbers start at 1)."""

    default_suggestion = ("Fix the lines listed; each line must be a JSON object "
                          '{"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}. '
                          "Nothing was sent to the server.")

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        shown = "; ".join(f"line {line}: {msg}" for line, msg in problems[:20])
        more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}: {shown}{more}",
                         field="input")
        self.problems = problems


def _check_line(line_no: int, raw: bytes, seen: dict[str, int], problems: list[tuple[int, str]],
                loads: Any = json.loads) -> None:
    try:
        obj = loads(raw)
    except ValueError as exc:
        problems.append((line_no, f"invalid JSON ({exc})"))
        return
    if not isinstance(obj, dict):
        problems.append((line_no, f"expected a JSON object, got {type(obj).__name__}"))
        return
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        problems.append((line_no, "missing custom_id" if custom_id is None
                         else f"custom_id must be a non-empty string, got {custom_id!r}"))
    elif custom_id in seen:
        problems.append((line_no, f"duplicate custom_id {custom_id!r} (first on line {seen[custom_id]})"))
    else:
        seen[custom_id] = line_no
    method = obj.get("method", "POST")
    if method != "POST":
        problems.append((line_no, f"method must be POST, got {method!r}"))
    url = obj.get("url")
    kind = _URL_KINDS.get(url) if isinstance(url, str) else None
    if kind is None:
        problems.append((line_no, f"unknown url {url!r} (use {CHAT_URL!r}, {COMPLETIONS_URL!r} or "
                                  f"{EMBEDDINGS_URL!r})"))
    body = obj.get("body")
    if not isinstance(body, dict):
        problems.append((line_no, "missing body" if body is None else "body must be a JSON object"))
        return
    if body.get("stream"):
        problems.append((line_no, "body.stream is not supported in a batch"))
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            problems.append((line_no, "body.messages must be a non-empty list"))
        elif not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            problems.append((line_no, "every item of body.messages must be an object with a role"))
    elif kind == "embedding":
        texts = body.get("input")
        if isinstance(texts, str):
            if not texts:
                problems.append((line_no, "body.input is an empty string"))
        elif not isinstance(texts, list) or not texts:
            problems.append((line_no, "body.input must be a non-empty string or a non-empty list of strings"))
        else:
            for i, text in enumerate(texts):
                if not isinstance(text, str) or not text:
                    what = "an empty string" if text == "" else f"a {type(text).__name__}"
                    hint = " (token arrays are not supported; send the text)" if isinstance(text, (int, list)) else ""
                    problems.append((line_no, f"body.input[{i}] is {what}, not a non-empty string{hint}"))
                    break
        fmt = body.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            problems.append((line_no, f"body.encoding_format must be 'float' or 'base64', got {fmt!r}"))
    elif kind == "completion":
        if not isinstance(body.get("prompt"), str) or not body.get("prompt"):
            problems.append((line_no, "body.prompt must be a non-empty string"))


def validate_input_file(path: str | os.PathLike[str]) -> int:
    """Check every line of an input file; raise ``BatchInputError`` listing all problems.
    Returns the number of requests. Blank lines are ignored."""
    return len(_validate(path))


def _validate(path: str | os.PathLike[str]) -> dict[str, int]:
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    loads = json_codec()[0]
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if raw.strip():
                _check_line(line_no, raw, seen, problems, loads)
    if problems:
        raise BatchInputError(os.fspath(path), problems)
    return seen




def _call_from_body(client: Any, kind: str, body: dict[str, Any], timeout: float, default_max_tokens: int,
                    use_body_model: bool) -> Call | EmbeddingCall:
    body = dict(body)
    if kind == "embedding":
        texts = body.pop("input")
        model = body.pop("model", None)
        dimensions = body.pop("dimensions", None)
        body.pop("encoding_format", None)  # the client picks the wire encoding; the output keeps the asked one
        embedding: EmbeddingCall = client.embedding_call([texts] if isinstance(texts, str) else texts, dimensions,
                                                         timeout, False, None, 4, body)
        if use_body_model and model:
            embedding.extra["model"] = model  # OpenAI-compatible bodies: sent as the body's model
        return embedding
    source = body.pop("messages" if kind == "chat" else "prompt", None)
    model = body.pop("model", None)
    body.pop("stream", None)
    body.pop("stream_options", None)
    max_tokens = body.pop("max_tokens", None)
    completion_tokens = body.pop("max_completion_tokens", None)
    if max_tokens is None:
        max_tokens = completion_tokens if completion_tokens is not None else default_max_tokens
    temperature = body.pop("temperature", None)
    top_p = body.pop("top_p", None)
    n = body.pop("n", None)
    if use_body_model and model:
        body["model"] = model
    call: Call = client.build_call(kind, source, max_tokens, 0 if temperature is None else temperature,
                              1.0 if top_p is None else top_p, 1 if n is None else n, timeout, None, None,
                              False, body)
    return call


def _embeddings_body(result: Any, request_body: dict[str, Any], model: str | None) -> dict[str, Any]:
    """A CreateEmbeddingResponse: base64 vectors when the line asked for them, else floats."""
    as_base64 = request_body.get("encoding_format") == "base64"
    data = []
    for i, vector in enumerate(result):
        values = vector.tolist() if hasattr(vector, "tolist") else vector
        if as_base64:
            import array
            import base64

            floats = array.array("f", values)
            if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
                floats.byteswap()
            values = base64.b64encode(floats.tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": values})
    usage = result.usage
    tokens = usage.prompt_tokens if usage is not None else 0
    return {"object": "list", "data": data, "model": result.model or model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _response_body(result: Any, kind: str, model: str | None) -> dict[str, Any]:
    """The OpenAI-shaped response body of a result: the server's own JSON when it is already an
    OpenAI response with every choice, otherwise one built from the result."""
    answers = list(result) if isinstance(result, ChatResults) else [result]
    raw = getattr(result, "raw", None)
    if isinstance(raw, dict) and isinstance(raw.get("choices"), list) and len(raw["choices"]) >= len(answers):
        return raw
    first: ChatResult = answers[0]
    usage = result.usage
    choices = []
    for i, answer in enumerate(answers):
        if kind == "chat":
            choices.append({"index": i, "message": {"role": "assistant", "content": str(answer)},
                            "finish_reason": answer.finish_reason, "logprobs": None})
        else:
            choices.append({"index": i, "text": str(answer), "finish_reason": answer.finish_reason,
                            "logprobs": None})
    return {"id": first.id or f"gen_ai-{os.urandom(8).hex()}",
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": result.model or model, "choices": choices,
            "usage": usage.to_dict() if usage is not None else None}


def _verbatim_body(result: Any) -> bytes | None:
    """The server's own response bytes for a one-answer result, ready to sit inside a JSONL line;
    None when they must be rebuilt (several answers, a parsed or non-JSON-object body)."""
    if type(result) is not ChatResult:
        return None
    raw = result.__dict__.get("_raw")
    if type(raw) is not bytes:
        return None
    raw = raw.strip()
    if raw[:1] != b"{" or raw[-1:] != b"}":
        return None
    # The codec parsed these bytes as strict JSON, so a CR or LF can only be whitespace between
    # tokens (inside strings they are escaped): a space keeps the value and the one-line format.
    if b"\n" in raw or b"\r" in raw:
        raw = raw.replace(b"\r", b" ").replace(b"\n", b" ")
    return raw


class _LineIds:
    """The ``batch_req_`` and ``req_`` ids of output lines: a random prefix per process and a
    counter, so ids are unique across runs without a system call per line (``os.urandom`` cost
    about 17 us a line inside a busy batch here, more than building the line)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def next(self) -> tuple[str, str]:
        n = f"{self._prefix}{next(self._count):08x}"
        return n, n[::-1]


_ids = _LineIds()


def _output_line(custom_id: str, kind: str, result: Any, error: dict[str, Any] | None,
                 model: str | None, request_body: dict[str, Any] | None = None, verbatim: bool = False,
                 dumps: Any = None) -> bytes:
    """One OpenAI batch output line. With ``verbatim`` (the codec's ``openai_response_body``), a
    one-answer chat or completion result's body is the server's response bytes as they came:
    the same JSON the slower path would decode and re-encode."""
    line_id, request_id = _ids.next()
    if verbatim and error is None and kind != "embedding":
        body = _verbatim_body(result)
        if body is not None:
            return b"".join((b'{"id":"batch_req_', line_id.encode(), b'","custom_id":',
                             encode_basestring(custom_id).encode(),
                             b',"response":{"status_code":200,"request_id":"req_', request_id.encode(),
                             b'","body":', body, b'},"error":null}\n'))
    request_id = f"req_{request_id}"
    record: dict[str, Any] = {"id": f"batch_req_{line_id}", "custom_id": custom_id}
    if error is None:
        record["response"] = {"status_code": 200, "request_id": request_id,
                              "body": (_embeddings_body(result, request_body or {}, model) if kind == "embedding"
                                       else _response_body(result, kind, model))}
        record["error"] = None
    else:
        status = error.get("status_code")
        record["response"] = None if status is None else {
            "status_code": status, "request_id": request_id,
            "body": {"error": {"message": error.get("message"), "type": error.get("error_type"),
                               "param": error.get("field"), "code": None}}}
        record["error"] = {"code": error.get("type"), "message": error.get("message")}
    if dumps is not None:
        out: bytes = dumps(record)
        return out + b"\n"
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _pending(path: str, done: set[str]) -> Generator[tuple[str, tuple[str, dict[str, Any]]], None, None]:
    """The input lines still without a result, read lazily (the file was validated already)."""
    loads = json_codec()[0]
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            obj = loads(raw)
            custom_id = obj["custom_id"]
            if custom_id not in done:
                yield custom_id, (_URL_KINDS[obj["url"]], obj["body"])




class _PendingReader:
    """``_pending`` read off the event loop: an async iterator, safe to share between workers,
    that reads and parses ``CHUNK`` lines at a time in a thread and starts the next read when
    half of the current chunk is taken (so workers rarely wait and memory stays bounded)."""

    CHUNK = 512

    def __init__(self, path: str, done: set[str]) -> None:
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._lines = _pending(path, done)
        self._ready: deque[tuple[str, tuple[str, dict[str, Any]]]] = deque()
        self._fetch: Any = None
        self._eof = False
        self._error: BaseException | None = None

    def _read(self) -> list[tuple[str, tuple[str, dict[str, Any]]]]:  # in a thread
        return list(itertools.islice(self._lines, self.CHUNK))

    def _start(self) -> None:
        self._fetch = fetch = self._loop.run_in_executor(None, self._read)
        fetch.add_done_callback(self._arrived)  # runs before the tasks awaiting it wake up

    def _arrived(self, fetch: Any) -> None:
        self._fetch = None
        if fetch.cancelled():
            self._error = self._error or RuntimeError("reading the batch input was cancelled")
            return
        error = fetch.exception()
        if error is not None:
            self._error = error
            return
        chunk = fetch.result()
        if len(chunk) < self.CHUNK:
            self._eof = True
        self._ready.extend(chunk)

    def __aiter__(self) -> _PendingReader:
        return self

    async def __anext__(self) -> tuple[str, tuple[str, dict[str, Any]]]:
        ready = self._ready
        while not ready:
            if self._error is not None:
                raise self._error
            if self._eof:
                raise StopAsyncIteration
            if self._fetch is None:
                self._start()
            await _wait_for(self._fetch)
        item = ready.popleft()
        if len(ready) < self.CHUNK // 2 and not self._eof and self._fetch is None and self._error is None:
            self._start()
        return item

    def close(self) -> None:
        """Close the input file (after a read in flight, if any, has finished)."""
        self._eof = True
        if self._fetch is None:
            self._lines.close()
        else:
            self._fetch.add_done_callback(lambda _: self._lines.close())


async def _wait_for(future: Any) -> None:
    """Wait for ``future`` without taking its result or exception (``_arrived`` handles those)."""
    import asyncio

    await asyncio.wait((future,))
