"""The ``gen-ai`` command, run as a real subprocess (``python -m gen_ai`` and the installed script)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-cli-test-secret-4f1e9a"
# Never the real home: the log database, config and keys files live under a throw-away folder.
_HOME = tempfile.mkdtemp(prefix="gen-ai-cli-test-")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEN_AI_PROVIDER", "GEN_AI_MODEL", "GEN_AI_ENDPOINT", "GEN_AI_LOG", "OPENAI_BASE_URL",
                        "OPENAI_API_KEY")}
    env.update(XDG_CONFIG_HOME=os.path.join(_HOME, "config"), XDG_DATA_HOME=os.path.join(_HOME, "data"),
               XDG_CACHE_HOME=os.path.join(_HOME, "cache"), HOME=_HOME)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def gen_ai(*args: str, input: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gen_ai", *args], input=input, capture_output=True, text=True,
                          cwd=ROOT, env=env or _env(), timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def test_chat_streams_the_local_model_answer():
    proc = subprocess.Popen([sys.executable, "-m", "gen_ai", "chat", "What is the capital of France?",
                             "--max-tokens", "12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=ROOT, env=_env())
    assert proc.stdout is not None
    first = proc.stdout.read1(1)  # arrives while the rest is still being generated
    rest = proc.stdout.read()
    assert proc.wait(120) == 0, proc.stderr.read() if proc.stderr else ""
    text = (first + rest).decode()
    assert text.strip() and text.endswith("\n")
    # same answer as the library gives for the same call
    from gen_ai import create_client

    client = create_client(provider="local")
    expected = client.run_chat_completions([{"role": "user", "content": "What is the capital of France?"}],
                                           max_tokens=12)
    assert text.rstrip("\n") == expected.text.rstrip("\n")


def test_prompt_from_stdin_and_json_output():
    proc = gen_ai("chat", "--max-tokens", "6", "--json", input="Say hello\n")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["provider"] == "local"
    assert data["text"] and data["finish_reason"] in ("stop", "length")
    assert data["usage"]["completion_tokens"] <= 6 and data["usage"]["prompt_tokens"] > 0
    assert data["latency"] > 0
    # stdin and an argument combine: the piped text comes first
    alone = gen_ai("chat", "--max-tokens", "6", "--json", "-s", "Be brief.", "Summarize.")
    both = gen_ai("chat", "--max-tokens", "6", "--json", "-s", "Be brief.", "Summarize.",
                  input="The sky is blue and the grass is green.")
    assert alone.returncode == 0 and both.returncode == 0, alone.stderr + both.stderr
    grown = json.loads(both.stdout)["usage"]["prompt_tokens"] - json.loads(alone.stdout)["usage"]["prompt_tokens"]
    assert grown >= 8  # the piped sentence went in too


def test_complete_and_no_stream():
    proc = gen_ai("complete", "The capital of France is", "--max-tokens", "5", "--no-stream")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_schema_file_and_inline(tmp_path):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    for value in (str(path), json.dumps(schema)):
        proc = gen_ai("chat", "What is 2+2? Answer in JSON.", "--schema", value, "--max-tokens", "20")
        assert proc.returncode == 0, proc.stderr
        assert isinstance(json.loads(proc.stdout)["answer"], int)


def test_n2_prints_two_answers():
    proc = gen_ai("chat", "Hi", "-n", "2", "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.rstrip("\n").split("\n---\n")
    assert first == second  # temperature 0: identical


def test_bad_endpoint_exits_1_with_one_line_and_no_secret():
    port = free_port()  # nothing listens there: connection refused
    proc = gen_ai("chat", "Hi", "--provider", "openai", "--endpoint", f"http://127.0.0.1:{port}/v1",
                  "--model", "m", "--api-key", SECRET, "--max-retries", "0")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gen-ai: error:") and str(port) in lines[0]
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_secret_from_the_environment_is_never_printed():
    # the key the server does not need, echoed nowhere even with --verbose tracebacks
    port = free_port()
    env = _env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
    proc = gen_ai("chat", "Hi", "--model", "m", "--max-retries", "0", "--verbose", env=env)
    assert proc.returncode == 1
    assert SECRET not in proc.stderr + proc.stdout


def test_usage_errors_exit_2():
    missing = gen_ai("chat", "Hi", "--provider", "openai", "--endpoint", "http://127.0.0.1:9/v1")
    assert missing.returncode == 2 and "--model" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad_model = gen_ai("chat", "Hi", "--model", "/no/such/model.gguf")
    assert bad_model.returncode == 2 and "/no/such/model.gguf" in bad_model.stderr
    bad_schema = gen_ai("chat", "Hi", "--schema", "/no/such/schema.json")
    assert bad_schema.returncode == 2 and "/no/such/schema.json" in bad_schema.stderr
    unknown = gen_ai("chat", "Hi", "--provider", "nosuch")
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr
    no_prompt = gen_ai("chat")
    assert no_prompt.returncode == 2 and "no prompt" in no_prompt.stderr
    too_long = gen_ai("chat", "word " * 300, "-o", "n_ctx=64")
    assert too_long.returncode == 2 and "n_ctx=64" in too_long.stderr
    for proc in (missing, bad_model, bad_schema, unknown, no_prompt, too_long):
        assert "Traceback" not in proc.stderr


def test_verbose_shows_the_traceback():
    proc = gen_ai("chat", "Hi", "--model", "/no/such/model.gguf", "--verbose")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "gen-ai: error:" in proc.stderr


def test_help_texts():
    top = gen_ai("--help")
    assert top.returncode == 0
    for word in ("chat", "complete", "GEN_AI_PROVIDER", "exit codes"):
        assert word in top.stdout
    chat = gen_ai("chat", "--help")
    assert chat.returncode == 0
    for flag in ("--provider", "--endpoint", "--model", "--api-key", "--system", "--max-tokens", "--temperature",
                 "--top-p", "--schema", "--no-stream", "--json", "--verbose", "examples:"):
        assert flag in chat.stdout
    bare = gen_ai()
    assert bare.returncode == 2 and "usage:" in bare.stderr


def test_cli_import_is_light():
    proc = subprocess.run([sys.executable, "-c", "import sys, gen_ai.cli; "
                           "print(sorted(m for m in ('llama_cpp', 'aiohttp', 'jsonschema', 'pydantic') "
                           "if m in sys.modules))"], capture_output=True, text=True, cwd=ROOT, env=_env())
    assert proc.stdout.strip() == "[]", proc.stderr


def test_against_the_real_llama_server(llama_server):
    proc = gen_ai("chat", "What is the capital of France?", "--provider", "openai", "--endpoint", llama_server,
                  "--model", "smollm2", "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    as_json = gen_ai("chat", "Hi", "--endpoint", llama_server, "--model", "smollm2", "--max-tokens", "4", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["provider"] == "openai" and data["usage"]["completion_tokens"] <= 4
    # OPENAI_BASE_URL alone selects the openai provider
    env = _env(OPENAI_BASE_URL=llama_server, GEN_AI_MODEL="smollm2")
    via_env = gen_ai("complete", "Hello", "--max-tokens", "3", "--json", env=env)
    assert via_env.returncode == 0, via_env.stderr
    assert json.loads(via_env.stdout)["provider"] == "openai"


def test_installed_script_if_present():
    script = shutil.which("gen-ai")
    if script is None:  # not installed in this environment: python -m gen_ai covers the same code
        proc = gen_ai("--version")
    else:
        proc = subprocess.run([script, "--version"], capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("gen-ai ")
