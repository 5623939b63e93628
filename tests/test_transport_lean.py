"""The lean HTTP/1.1 client of the private batch pools (gen_ai/_http_lean.py), against a real
loopback server that writes exact bytes: framings a library server picks for us (chunked,
gzip, read-until-close, interim 100, Connection: close), keep-alive reuse counted from the
server side, a server that closes idle connections, stalls, garbage, and bad header input.
The batch suites (test_batch*.py, test_replicas.py, test_telemetry.py) run the same client
against the fault server and the real llama.cpp servers."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time

import pytest

from gen_ai import create_client
from gen_ai._http import AsyncTransport
from gen_ai._http_lean import LeanAsyncTransport
from gen_ai.errors import APIConnectionError, APITimeoutError, InvalidInputError
from gen_ai.types import Request


def chat(text: str) -> bytes:
    return json.dumps({"id": "c", "object": "chat.completion", "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


class RawServer:
    """A loopback HTTP/1.1 server: ``answer(request_bytes, n)`` returns the bytes to write for the
    n-th request on a connection (or None to close it). Counts connections and requests."""

    def __init__(self, answer, idle_close: float | None = None) -> None:
        self.answer = answer
        self.idle_close = idle_close
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket, buf: bytearray) -> bytes | None:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        end = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:end]).decode("latin-1")
        length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                       if line.lower().startswith("content-length:")), 0)
        while len(buf) < end + length:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        request = bytes(buf[:end + length])
        del buf[:end + length]
        return request

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        n = 0
        with conn:
            while True:
                if self.idle_close is not None and n:
                    conn.settimeout(self.idle_close)
                try:
                    request = self._read_request(conn, buf)
                except (TimeoutError, OSError):
                    return  # idle too long: close, as uvicorn does after its keep-alive timeout
                if request is None:
                    return
                conn.settimeout(None)
                with self.lock:
                    self.requests.append(request)
                n += 1
                out = self.answer(request, n)
                if out is None:
                    return
                for piece in out if isinstance(out, list) else [out]:
                    if isinstance(piece, (int, float)):
                        time.sleep(piece)
                    else:
                        conn.sendall(piece)
                if b"Connection: close" in (out[0] if isinstance(out, list) else out):
                    return

    def close(self) -> None:
        self.sock.close()


def response(body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{headers}\r\n").encode() + body


def batch(server: RawServer, count: int = 6, **kwargs):
    client = create_client(endpoint=server.url, model_name="m", max_retries=kwargs.pop("max_retries", 0),
                           telemetry=False)
    try:
        return client.run_chat_completions_batch([[{"role": "user", "content": f"q{i}"}] for i in range(count)],
                                                 max_tokens=4, progress=False, return_error=True, **kwargs)
    finally:
        client.close()


def test_private_batch_pools_are_lean_and_keep_connections_alive():
    server = RawServer(lambda req, n: response(chat(f"a{n}")))
    try:
        client = create_client(endpoint=server.url, model_name="m", telemetry=False)
        assert type(client.new_async_transport(4)) is LeanAsyncTransport
        results, errors = batch(server, 40, max_concurrent=4)
    finally:
        server.close()
    assert errors == [None] * 40 and all(str(r).startswith("a") for r in results)
    assert len(server.requests) == 40 and server.connections <= 4  # reused, at most one per worker
    first = server.requests[0].decode("latin-1")
    assert first.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: {server.url.split('/')[2]}\r\n" in first and "Content-Length: " in first
    assert "accept-encoding" not in first.lower()  # aiohttp would add Accept-Encoding: this is the lean client


def test_chunked_gzip_and_read_until_close_bodies():
    body = chat("chunky")
    packed = gzip.compress(chat("zipped"))

    def answer(req, n):
        text = req.decode("latin-1")
        if "q0" in text:  # chunked, in odd pieces, with a chunk extension and a trailer
            pieces = [body[:7], body[7:30], body[30:]]
            chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nX-Trailer: t\r\n\r\n"
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            return [head, chunks[:5], 0.01, chunks[5:]]
        if "q1" in text:  # gzip
            return response(packed, headers="Content-Encoding: gzip\r\n")
        if "q2" in text:  # no length: the body ends with the connection
            return [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + chat("eof")]
        if "q3" in text:  # an interim 100 before the answer
            return b"HTTP/1.1 100 Continue\r\n\r\n" + response(chat("after-100"))
        return response(chat("plain"), headers="Connection: close\r\n")

    server = RawServer(answer)
    try:
        results, errors = batch(server, 5, max_concurrent=1)
    finally:
        server.close()
    assert errors == [None] * 5
    assert [str(r) for r in results] == ["chunky", "zipped", "eof", "after-100", "plain"]


def test_a_server_closing_idle_connections_costs_a_retry_not_a_result():
    """uvicorn closes a keep-alive connection idle for 5 s; here after 0.2 s. A request sent on a
    connection the server has just closed fails as a retryable connection error; the flow retries."""
    server = RawServer(lambda req, n: response(chat("ok")), idle_close=0.2)
    client = create_client(endpoint=server.url, model_name="m", max_retries=2, telemetry=False)
    try:
        async def run() -> list:
            transport = client.new_async_transport(2)
            out = []
            for _ in range(3):
                out.append(await transport.send(Request("POST", server.url + "/chat/completions",
                                                        {"Content-Type": "application/json"}, b"{}"), 5))
                await asyncio.sleep(0.5)  # longer than the server's idle limit
            await transport.close()
            return out

        responses = asyncio.run(run())
        assert [r.status for r in responses] == [200, 200, 200]  # the closed ones were noticed and dropped
        assert server.connections == 3
        results, errors = batch(server, 4, max_concurrent=2, max_retries=2)
        assert errors == [None] * 4
    finally:
        client.close()
        server.close()


def test_stall_times_out_and_garbage_is_a_connection_error():
    def answer(req, n):
        text = req.decode("latin-1")
        if "q0" in text:
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", 3.0]  # then nothing
        if "q1" in text:
            return b"SSH-2.0-OpenSSH_9.0\r\n\r\n"
        return None  # q2: closed without an answer

    server = RawServer(answer)
    try:
        start = time.monotonic()
        results, errors = batch(server, 3, max_concurrent=3, timeout=0.5)
        took = time.monotonic() - start
    finally:
        server.close()
    assert results == [None, None, None]
    assert errors[0]["type"] == "APITimeoutError" and took < 3.0
    assert errors[1]["type"] == "APIConnectionError" and "not an HTTP response" in errors[1]["message"]
    assert errors[2]["type"] == "APIConnectionError" and "before answering" in errors[2]["message"]


def test_error_status_headers_are_case_insensitive_and_retry_after_is_honoured():
    def answer(req, n):
        if len(server.requests) == 1:
            return response(b'{"error": {"message": "slow down", "type": "rate_limit"}}', "429 Too Many Requests",
                            "RETRY-AFTER: 0.2\r\n")
        return response(chat("after"))

    server = RawServer(answer)
    try:
        start = time.monotonic()
        results, errors = batch(server, 1, max_retries=2)
        took = time.monotonic() - start
    finally:
        server.close()
    assert str(results[0]) == "after" and took >= 0.2  # Retry-After read through the lower-cased headers


def test_redirects_are_refused_and_header_injection_is_refused():
    server = RawServer(lambda req, n: response(b"", "307 Temporary Redirect", "Location: http://evil.example/\r\n"))
    try:
        results, errors = batch(server, 1)
        assert errors[0]["type"] == "RedirectError"
    finally:
        server.close()
    transport = LeanAsyncTransport(max_connections=1)

    async def bad() -> None:
        await transport.send(Request("POST", "http://127.0.0.1:9/v1/x", {"X-Bad": "a\r\nInjected: 1"}, b""), 1)

    with pytest.raises(InvalidInputError, match="headers"):
        asyncio.run(bad())


def test_refused_connection_is_an_api_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def run() -> None:
        transport = LeanAsyncTransport(max_connections=1)
        try:
            await transport.send(Request("POST", f"http://127.0.0.1:{port}/v1/x", {}, b"{}"), 2)
        finally:
            await transport.close()

    with pytest.raises(APIConnectionError) as info:
        asyncio.run(run())
    assert not isinstance(info.value, APITimeoutError)


def test_switch_off_and_proxies_keep_aiohttp(monkeypatch):
    monkeypatch.setenv("GEN_AI_LEAN_HTTP", "0")
    client = create_client(endpoint="http://127.0.0.1:9/v1", model_name="m", telemetry=False)
    assert type(client.new_async_transport(2)) is AsyncTransport
    monkeypatch.delenv("GEN_AI_LEAN_HTTP")
    proxied = create_client(endpoint="http://127.0.0.1:9/v1", model_name="m", proxy="http://127.0.0.1:3128",
                            telemetry=False)
    assert type(proxied.new_async_transport(2)) is AsyncTransport
