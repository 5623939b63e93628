"""A scripted HTTP server on loopback for what a real server cannot do on demand: 429 with
Retry-After, 5xx, dropped connections, stalled or malformed streams, HTML error pages.

    server = FaultServer()                       # starts on 127.0.0.1, a free port
    server.add(429, {"error": {...}}, headers={"Retry-After": "0.1"})
    server.add(200, chat_body("hi"))
    client = create_client(endpoint=server.url, model_name="m")
    ...
    server.requests                              # every request received: method, path, headers, body

Steps are served in order; when the script is empty, ``default`` (a step or a callable taking
the recorded request and returning a step) answers. It is a real HTTP/1.1 server, not a mock.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 resets connections when many clients connect at once


class Step:
    def __init__(self, status: int = 200, body: Any = b"", headers: dict[str, str] | None = None, *,
                 delay: float = 0.0, chunks: list[bytes] | None = None, chunk_delay: float = 0.0,
                 stall_after: int | None = None, stall: float = 0.0, drop: bool = False,
                 content_type: str | None = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.delay = delay          # seconds before the status line
        self.chunks = chunks        # streamed body pieces (sent with Connection: close)
        self.chunk_delay = chunk_delay
        self.stall_after = stall_after  # stop sending after this many chunks ...
        self.stall = stall              # ... for this long, then close
        self.drop = drop            # close the socket without answering
        self.content_type = content_type or ("text/event-stream" if chunks is not None else "application/json")


class Recorded:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class FaultServer:
    def __init__(self, default: Step | Callable[[Recorded], Step] | None = None) -> None:
        self.script: deque[Step] = deque()
        self.requests: list[Recorded] = []
        self.default = default
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests being answered at the same moment
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.requests.append(rec)
                    step = server.script.popleft() if server.script else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                if step is None:
                    default = server.default
                    step = default(rec) if callable(default) else default
                if step is None:
                    step = Step(500, {"error": {"message": "fault server: script is empty"}})
                try:
                    server._serve(self, step)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add(self, *args: Any, **kwargs: Any) -> "FaultServer":
        self.script.append(args[0] if args and isinstance(args[0], Step) else Step(*args, **kwargs))
        return self

    def _serve(self, handler: BaseHTTPRequestHandler, step: Step) -> None:
        if step.delay:
            time.sleep(step.delay)
        if step.drop:
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        handler.send_response(step.status)
        for key, value in step.headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", step.content_type)
        if step.chunks is None:
            handler.send_header("Content-Length", str(len(step.body)))
            handler.end_headers()
            try:
                handler.wfile.write(step.body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                handler.close_connection = True
            return
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            for i, chunk in enumerate(step.chunks):
                if step.stall_after is not None and i == step.stall_after:
                    handler.wfile.flush()
                    time.sleep(step.stall)
                    return
                handler.wfile.write(chunk)
                handler.wfile.flush()
                if step.chunk_delay:
                    time.sleep(step.chunk_delay)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# -- bodies shaped like OpenAI's ---------------------------------------------------------------


def chat_body(text: str = "hello", *, n: int = 1, finish_reason: str = "stop", model: str = "m") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason, "logprobs": None} for i in range(n)],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def completion_body(text: str = "hello") -> dict[str, Any]:
    return {
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def chat_chunks(deltas: list[str], *, done: bool = True, finish: bool = True) -> list[bytes]:
    out = [sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": d}, "finish_reason": None}]})
           for d in deltas]
    if finish:
        out.append(sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        out.append(sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                        "usage": {"prompt_tokens": 5, "completion_tokens": len(deltas),
                                  "total_tokens": 5 + len(deltas)}}))
    if done:
        out.append(b"data: [DONE]\n\n")
    return out
