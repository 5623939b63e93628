"""The sync transport's http.client classes (gen_ai._http._connection_classes) against
http.client's own: the same parsed headers, the same response state, the same request bytes,
on real loopback sockets. They exist to skip the email package's header parser, a third of a
small call's cost (benchmarks/instructions.py)."""

from __future__ import annotations

import http.client
import io
import random
import socket
import threading
from typing import Any

import pytest

from gen_ai._http import _connection_classes

CONNECTION, TLS_CONNECTION = _connection_classes()
PARSE = CONNECTION.response_class.parse_headers

LINES = [b"Server: nginx", b"Content-Type: application/json", b"content-length: 12", b"X-A:  v  ", b"X-B:\tq\t",
         b"X-Empty:", b"X-Colon: a:b:c", b" folded", b"\tfolded2", b"From me", b"From x: y", b": novalue",
         b"Bad Name: x", b"X-Latin: \xe9\xff", b"X-Ff: a\x0cb", b"X-Nel: a\x85b", b"X-Cr: a\rb", b"X-Nul: a\x00b",
         b"Content-Type: multipart/mixed; boundary=x", b"Content-Type: message/rfc822", b"Set-Cookie: a=1",
         b"Set-Cookie: b=2", b"NoColon", b"X-Tab:\t\t", b"X-Del: \x7f", b"X-Utf8: \xc3\xa9", b"Connection: close"]


def _same_message(ref: Any, got: Any) -> None:
    assert vars(ref).keys() == vars(got).keys()
    for key, want in vars(ref).items():
        have = vars(got)[key]
        if key == "defects":
            assert [type(d) for d in want] == [type(d) for d in have]
        elif key == "_payload" and isinstance(want, list):
            assert isinstance(have, list) and len(want) == len(have)
        else:
            assert want == have, key


def test_header_blocks_parse_as_http_client_parses_them():
    rng = random.Random(7)
    for _ in range(3000):
        lines = [rng.choice(LINES) + rng.choice([b"\r\n", b"\n"]) for _ in range(rng.randint(0, 6))]
        block = b"".join(lines) + rng.choice([b"\r\n", b"\n"])
        ref = http.client.parse_headers(io.BytesIO(block + b"body"))
        got, first = PARSE(io.BytesIO(block + b"body"))
        _same_message(ref, got)
        for name in ("content-type", "connection", "content-length", "set-cookie", "x-a", "x-latin", "keep-alive"):
            assert first.get(name) == ref.get(name), (block, name)


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: Keep-Alive\r\n\r\nhello",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\nhello",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nProxy-Connection: keep-alive\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nhello",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\nX: y\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc",
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\nno",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200    OK  \r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
]


def _exchange(cls: Any, answers: list[bytes],
              requests: list[tuple[str, dict[str, str]]]) -> tuple[list[Any], list[bytes]]:
    """Send the requests on one connection of ``cls`` to a loopback socket that answers each with
    the next of ``answers``; -> (what the client saw, the request bytes the server received)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        peer, _ = server.accept()
        with peer:
            for answer in answers:
                data = b""
                while b"\r\n\r\n" not in data:
                    more = peer.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), b"0"))
                while len(rest) < length:
                    rest += peer.recv(65536)
                received.append((head + b"\r\n\r\n" + rest).replace(str(port).encode(), b"PORT"))
                peer.sendall(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    conn = cls("127.0.0.1", port, timeout=5)
    seen: list[Any] = []
    try:
        for method, headers in requests:
            try:
                conn.request(method, "/v1/chat/completions?x=1", body=b'{"a":1}', headers=headers)
                resp = conn.getresponse()
                seen.append((resp.status, resp.reason, resp.version, resp.chunked, resp.will_close, resp.length,
                             resp.headers.items(), resp.getheader("content-length"), resp.read()))
            except Exception as exc:  # the same error either way
                seen.append(repr(exc))
                break
    finally:
        conn.close()
        thread.join(10)
        server.close()
    return seen, received


HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "Authorization": "Bearer sk-\xe9"}


@pytest.mark.parametrize("answer", RESPONSES)
@pytest.mark.parametrize("method", ["POST", "HEAD"])
def test_responses_read_as_http_client_reads_them(answer, method):
    assert _exchange(CONNECTION, [answer], [(method, HEADERS)]) == \
        _exchange(http.client.HTTPConnection, [answer], [(method, HEADERS)])


def test_a_keep_alive_connection_sends_the_same_bytes_each_time():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    requests = [("POST", HEADERS), ("POST", {**HEADERS, "X-Other": "1"}), ("POST", HEADERS)]
    ours = _exchange(CONNECTION, [ok] * 3, requests)
    assert ours == _exchange(http.client.HTTPConnection, [ok] * 3, requests)
    assert len(ours[1]) == 3 and ours[1][0].startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: ")


@pytest.mark.parametrize("cls", [CONNECTION, TLS_CONNECTION])
def test_a_bad_header_is_refused_every_time(cls):
    for _ in range(2):
        for name, value, error in (("X-Bad", "a\nb", ValueError), ("X-Euro", "\u20ac", UnicodeEncodeError)):
            conn = cls("127.0.0.1", 9)
            conn.putrequest("POST", "/")
            with pytest.raises(error):
                conn.putheader(name, value)
    conn = cls("127.0.0.1", 9)
    with pytest.raises(http.client.CannotSendHeader):  # no request started
        conn.putheader("Content-Type", "application/json")
