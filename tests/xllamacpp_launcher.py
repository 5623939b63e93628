"""Run llama.cpp's own HTTP server (the ``xllamacpp`` wheel) until SIGTERM.

    python tests/xllamacpp_launcher.py '{"model": PATH, "port": N, ...}'

The JSON config: ``model``, ``port``, ``host`` (default 127.0.0.1), ``alias``, ``n_ctx``,
``slots`` (``n_parallel``), ``threads``, ``embeddings`` (bool), ``pooling`` (a
``llama_pooling_type`` member name, e.g. ``"LLAMA_POOLING_TYPE_MEAN"``) and ``extra``: a dict
of dotted ``CommonParams`` attribute names to values, e.g. ``{"use_jinja": true,
"sampling.temp": 0.0}``. It prints ``LISTENING <address>`` once the server answers.
Run in its own process so a crash in native code cannot take the test run down.
"""

from __future__ import annotations

import json
import signal
import sys
import threading


def main() -> None:
    cfg = json.loads(sys.argv[1])
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = cfg["model"]
    p.hostnames = [cfg.get("host", "127.0.0.1")]
    p.port = int(cfg["port"])
    p.n_ctx = int(cfg.get("n_ctx", 4096))
    p.n_parallel = int(cfg.get("slots", 2))
    p.cpuparams.n_threads = int(cfg.get("threads", 1))
    p.cpuparams_batch.n_threads = int(cfg.get("threads", 1))
    if cfg.get("alias"):
        p.model_alias = {cfg["alias"]}
    if cfg.get("embeddings"):
        p.embedding = True
        p.pooling_type = getattr(xlc.llama_pooling_type, cfg.get("pooling", "LLAMA_POOLING_TYPE_MEAN"))
    for dotted, value in (cfg.get("extra") or {}).items():
        target = p
        *path, last = dotted.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)

    server = xlc.Server(p)
    print("LISTENING", server.listening_address, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    del server


if __name__ == "__main__":
    main()
