"""providers._base.loads and dumps, the per-call JSON paths (json's C scanner and encoder called
directly), against json.loads and the JSONEncoder they stand for: the same values, the same
errors."""

from __future__ import annotations

import json
import random

from gen_ai.providers._base import _encode, dumps, loads

BODIES = [b'{}', b'{"a":1}', b'{"a":1}\n', b'{"a":1} \r\n\t', b'{"a":1}x', b'{"a":1} {}', b'{', b'{"a":',
          b'{\x00"\x00}\x00', b'{"\xff"}', b'{"a":"\xed\xa0\x80"}', b'{"a":NaN}', b'{"a":1e400}',
          b'{"k":[1,2,{"x":null}]}', b' {"a":1}', b'[1]', b'"x"', b'', b'{"a":"\\ud800"}', b'{"a":1}\x00',
          b'\xef\xbb\xbf{"a":1}', '{"a":1}'.encode("utf-16-le"), bytearray(b'{"a":1}')]


def _outcome(fn, data):
    try:
        return "ok", fn(data)
    except Exception as exc:  # the same error type and message either way
        return type(exc).__name__, str(exc)


def test_loads_is_json_loads():
    for body in BODIES:
        assert repr(_outcome(loads, body)) == repr(_outcome(json.loads, body)), body
    rng = random.Random(3)
    for _ in range(5000):
        body = b"{" + bytes(rng.choice(b'"a:1,{}[] \n\\u0e9x') for _ in range(rng.randint(0, 12)))
        assert repr(_outcome(loads, body)) == repr(_outcome(json.loads, body)), body


def test_dumps_is_the_shared_encoder():
    circular: list = []
    circular.append(circular)
    for value in ({"a": 1.5, "b": [1, None, True, "é\n"], "c": float("nan")}, "x", [1, 2], {"k": {"x": 1e300}},
                  {"messages": [{"role": "user", "content": "hi \u2028 \U0001f600"}]}):
        assert dumps(value) == _encode(value).encode("utf-8")
    for bad in ({"a": object()}, circular, {"a": {1, 2}}):
        assert _outcome(dumps, bad) == _outcome(lambda v: _encode(v).encode("utf-8"), bad)
