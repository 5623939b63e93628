"""The ``gen-ai`` command's newer parts, run as real subprocesses (and in a real pseudo-terminal):
bare prompts, attachments, the interactive chat, ``models``, the SQLite log, configuration.

Every test gets its own XDG_CONFIG_HOME / XDG_DATA_HOME / XDG_CACHE_HOME / HOME under tmp_path,
so nothing reads or writes the real home. The model is the real SmolLM2 (provider local) or the
real llama-cpp-python server (``llama_server``); the loopback FaultServer stands in only for what
neither can show (a vision request's wire shape, Anthropic's and Gemini's model lists).
"""

from __future__ import annotations

import base64
import json
import os
import select
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, smollm2_path
from fault_server import FaultServer, Step, chat_chunks, sse

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-cli-feature-secret-7d2c41"
KEYFILE_SECRET = "sk-from-the-keys-file-93ab10"
HEADER_SECRET = "hdr-secret-value-55aa01"
_CLEARED = ("GEN_AI_PROVIDER", "GEN_AI_MODEL", "GEN_AI_ENDPOINT", "GEN_AI_LOG", "GEN_AI_GGUF_PATH", "OPENAI_BASE_URL",
            "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY",
            "GOOGLE_GEMINI_BASE_URL", "LLAMA_CACHE", "HF_HOME")


def hand_png(width: int = 2, height: int = 2) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               XDG_CACHE_HOME=str(home / "cache"), HOME=str(home))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run(home: Path, *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    binary = isinstance(input, bytes)
    proc = subprocess.run([sys.executable, "-m", "gen_ai", *args], input=input, capture_output=True,
                          text=not binary, cwd=ROOT, env=env or env_for(home), timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if binary:  # decode for the assertions
        return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    return proc


def write_config(home: Path, text: str) -> Path:
    path = home / "config" / "gen-ai" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_keys(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / "config" / "gen-ai" / "keys.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def db(home: Path) -> Path:
    return home / "data" / "gen-ai" / "logs.db"


def rows(home: Path) -> list[dict]:
    conn = sqlite3.connect(db(home))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM responses ORDER BY id")]
    finally:
        conn.close()


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gen-ai: error:") and "Traceback" not in proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------------
# 1. bare prompts
# ------------------------------------------------------------------------------------------------


def test_bare_prompt_is_chat(home):
    bare = run(home, "What is the capital of France?", "--max-tokens", "8", "--no-log")
    chat = run(home, "chat", "What is the capital of France?", "--max-tokens", "8", "--no-log")
    assert bare.returncode == 0 and chat.returncode == 0, bare.stderr + chat.stderr
    assert bare.stdout == chat.stdout and bare.stdout.strip()
    # options before the prompt, and the top-level -v before everything
    with_opts = run(home, "-v", "--max-tokens", "8", "--no-log", "What is the capital of France?")
    assert with_opts.returncode == 0, with_opts.stderr
    assert with_opts.stdout == chat.stdout
    piped = run(home, "--max-tokens", "8", "--no-log", input="What is the capital of France?\n")
    assert piped.returncode == 0 and piped.stdout == chat.stdout, piped.stderr
    nothing = subprocess.run([sys.executable, "-m", "gen_ai"], input="What is the capital of France?",
                             capture_output=True, text=True, cwd=ROOT, env=env_for(home), timeout=120)
    assert nothing.returncode == 0 and nothing.stdout.strip(), nothing.stderr  # `echo text | gen-ai`
    bare_tty_less = run(home)  # no argument, stdin /dev/null: the help, exit 2
    assert bare_tty_less.returncode == 2 and "usage:" in bare_tty_less.stderr
    # the subcommands still win over a prompt of the same word
    assert run(home, "logs", "--path").stdout.strip().endswith("logs.db")


# ------------------------------------------------------------------------------------------------
# 2. attachments
# ------------------------------------------------------------------------------------------------


def _vision_server() -> FaultServer:
    return FaultServer(default=lambda rec: Step(200, chunks=chat_chunks(["a red ", "square"])))


def _image_urls(body: dict) -> list[str]:
    return [p["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list)
            for p in m["content"] if p.get("type") == "image_url"]


def test_attachments_reach_the_wire_as_data_urls(home, tmp_path):
    png = hand_png()
    path = tmp_path / "red.png"
    path.write_bytes(png)
    server = _vision_server()
    try:
        base = ["--endpoint", server.url, "-m", "vision-model"]
        proc = run(home, "What is in this image?", "-a", str(path), *base)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "a red square\n"
        body = server.requests[-1].json()
        assert body["stream"] is True
        [url] = _image_urls(body)
        assert url == "data:image/png;base64," + base64.b64encode(png).decode()
        assert body["messages"][-1]["content"][0] == {"type": "text", "text": "What is in this image?"}
        # '-' reads the attachment from stdin; repeatable; URLs pass through untouched
        proc = run(home, "Compare them", "-a", "-", "-a", "https://example.com/b.png", *base, input=png)
        assert proc.returncode == 0, proc.stderr
        urls = _image_urls(server.requests[-1].json())
        assert urls == ["data:image/png;base64," + base64.b64encode(png).decode(), "https://example.com/b.png"]
        # the log names the attachments, never their bytes
        logged = [json.loads(r["attachments"]) for r in rows(home)]
        assert logged[0] == [str(path)] and logged[1] == [f"<stdin: {len(png)} bytes>", "https://example.com/b.png"]
        # --json (no stream) goes the same way
        server.default = lambda rec: Step(200, {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                                                "choices": [{"index": 0, "message": {"role": "assistant",
                                                             "content": "red"}, "finish_reason": "stop"}],
                                                "usage": {"prompt_tokens": 9, "completion_tokens": 1,
                                                          "total_tokens": 10}})
        proc = run(home, "Color?", "-a", str(path), "--json", *base)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["text"] == "red"
        assert len(_image_urls(server.requests[-1].json())) == 1
    finally:
        server.close()


def test_bad_attachments_fail_before_any_request(home, tmp_path):
    server = _vision_server()
    try:
        base = ["--endpoint", server.url, "-m", "vision-model", "--no-log"]
        missing = run(home, "Describe", "-a", "/no/such/image.png", *base)
        assert missing.returncode == 2 and "/no/such/image.png" in one_line_error(missing)
        text_file = tmp_path / "notes.txt"
        text_file.write_text("not an image")
        not_image = run(home, "Describe", "-a", str(text_file), *base)
        assert not_image.returncode == 2 and "notes.txt" in one_line_error(not_image)
        stdin_twice = run(home, "-a", "-", *base, input="hello")
        assert stdin_twice.returncode == 2 and "argument" in one_line_error(stdin_twice)
        empty = run(home, "Describe", "-a", "-", *base, input=b"")
        assert empty.returncode == 2 and "empty" in one_line_error(empty)
        assert server.requests == []  # nothing was sent for any of them
    finally:
        server.close()


def test_the_local_text_model_refuses_images_with_a_clear_error(home, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(hand_png())
    proc = run(home, "Describe", "-a", str(path), "--no-log")
    assert proc.returncode == 2
    assert "text-only" in one_line_error(proc)


# ------------------------------------------------------------------------------------------------
# 3. the interactive chat, in a real pseudo-terminal
# ------------------------------------------------------------------------------------------------


class Terminal:
    """``gen-ai`` on a real pseudo-terminal (pty.fork): type keys, read what the screen shows."""

    def __init__(self, home: Path, *args: str) -> None:
        import pty

        env = env_for(home, TERM="xterm", COLUMNS="200")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command with the pty as its terminal
            os.chdir(ROOT)
            os.execvpe(sys.executable, [sys.executable, "-m", "gen_ai", *args], env)
        self.screen = b""

    def read(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    return
                if not data:
                    return
                self.screen += data

    def wait_for(self, text: str, timeout: float = 90, after: int = 0) -> int:
        end = time.time() + timeout
        needle = text.encode()
        while self.screen.find(needle, after) < 0:
            if time.time() > end:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen.decode(errors='replace')}")
            self.read(0.1)
        return self.screen.find(needle, after) + len(needle)

    def wait_growth(self, after: int, size: int, timeout: float = 90) -> None:
        """Until ``size`` more bytes arrived after offset ``after`` (an answer being written)."""
        end = time.time() + timeout
        while len(self.screen) < after + size:
            if time.time() > end:
                raise AssertionError(f"the answer never came; the screen:\n{self.text()}")
            self.read(0.05)

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait_prompt(self, count: int, timeout: float = 120) -> None:
        end = time.time() + timeout
        while sum(line.startswith("> ") for line in self.text().split("\n")) < count:  # the prompts
            if time.time() > end:
                raise AssertionError(f"prompt {count} never came; the screen:\n{self.text()}")
            self.read(0.1)

    def text(self) -> str:
        return self.screen.decode(errors="replace").replace("\r\n", "\n")

    def exit_code(self, timeout: float = 30) -> int:
        end = time.time() + timeout
        while time.time() < end:
            self.read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"gen-ai did not exit; the screen:\n{self.text()}")


def _lines_starting(text: str, prefix: str) -> list[str]:
    return [line for line in text.split("\n") if line.startswith(prefix)]


def test_interactive_chat_in_a_pty(home):
    term = Terminal(home, "chat", "--max-tokens", "300")  # no prompt, on a terminal: a conversation
    term.wait_for("Chatting with local")
    term.wait_prompt(1)
    term.type(b"My name is Ada.\r")
    term.wait_prompt(2)
    term.type(b"What is my name?\r")
    term.wait_prompt(3)
    # readline: the up arrow recalls the last line
    term.type(b"\x1b[A\r")
    term.wait_prompt(4)
    # Ctrl-C while the answer is being written stops it and keeps the session
    term.type(b"Write a very long story about a dragon who learns to paint.\r")
    start = term.wait_for("dragon who learns to paint.")
    term.wait_growth(start, 80)  # part of the answer arrived
    term.type(b"\x03")
    term.wait_for("[interrupted]", timeout=30, after=start)
    term.wait_prompt(5)
    # !multi ... !end sends the lines as one message
    term.type(b"!multi\r")
    term.read(0.3)
    term.type(b"Say yes\r")
    term.type(b"in one word.\r")
    term.type(b"!end\r")
    term.wait_prompt(6)
    term.type(b"/exit\r")
    assert term.exit_code() == 0
    logged = rows(home)
    prompts = [r["prompt"] for r in logged]
    assert prompts == ["My name is Ada.", "What is my name?", "What is my name?",
                       "Write a very long story about a dragon who learns to paint.", "Say yes\nin one word."]
    assert len({r["conversation_id"] for r in logged}) == 1
    # history is sent: the second question's prompt holds the first turn too
    alone = run(home, "What is my name?", "--json", "--no-log")
    assert logged[1]["prompt_tokens"] > json.loads(alone.stdout)["usage"]["prompt_tokens"] + 5
    interrupted = logged[3]
    assert interrupted["finish_reason"] == "interrupted"
    assert interrupted["response"] and len(interrupted["response"]) < 1200
    # the turn after Ctrl-C was answered normally, and the history file was saved
    assert logged[4]["finish_reason"] in ("stop", "length") and logged[4]["response"]
    assert (home / "data" / "gen-ai" / "chat_history").exists()


def test_interactive_ctrl_d_leaves_and_chat_c_continues(home):
    term = Terminal(home, "chat", "-i", "--max-tokens", "20", "-s", "You are terse.")
    term.wait_prompt(1)
    # Ctrl-C at once, while the model still loads: the model is freed, the next turn works
    term.type(b"Tell me about the moon.\r")
    term.wait_for("the moon.")
    term.type(b"\x03")
    term.wait_prompt(2)
    term.type(b"Remember the word banana.\r")
    term.wait_prompt(3, timeout=90)
    term.type(b"\x03")  # Ctrl-C at the prompt: a fresh prompt, still running
    term.wait_prompt(4)
    term.type(b"\x04")  # Ctrl-D leaves
    assert term.exit_code() == 0
    logged = rows(home)
    summary = [(r["prompt"], r["response"], r["error"], r["finish_reason"]) for r in logged]
    assert logged[-1]["prompt"] == "Remember the word banana." and logged[-1]["response"], summary
    first = logged[-1]
    assert first["system"] == "You are terse."
    # -c continues it, one shot: the same conversation, the earlier turn sent first
    cont = run(home, "chat", "-c", "Which word?", "--max-tokens", "10", "--json")
    assert cont.returncode == 0, cont.stderr
    fresh = run(home, "chat", "-s", "You are terse.", "Which word?", "--max-tokens", "10", "--json", "--no-log")
    assert json.loads(cont.stdout)["usage"]["prompt_tokens"] > json.loads(fresh.stdout)["usage"]["prompt_tokens"] + 5
    second = rows(home)[-1]
    assert second["conversation_id"] == first["conversation_id"]
    assert second["system"] == "You are terse."  # kept from the conversation
    # and interactively
    term = Terminal(home, "chat", "-c", "--max-tokens", "5")
    term.wait_for("continuing: ")
    turns = 2 + (logged[0]["prompt"] == "Tell me about the moon." and bool(logged[0]["response"]))
    term.wait_for(f"continuing: {turns} earlier turns")  # banana, the -c turn, and moon if it got text
    term.wait_prompt(1)
    term.type(b"/quit\r")
    assert term.exit_code() == 0


def test_interactive_against_the_real_server(home, llama_server):
    term = Terminal(home, "chat", "-i", "--endpoint", llama_server, "-m", "smollm2", "--max-tokens", "400")
    term.wait_prompt(1)
    term.type(b"Write a very long story about a lighthouse.\r")
    start = term.wait_for("lighthouse.")
    term.wait_growth(start, 80)
    term.type(b"\x03")
    term.wait_for("[interrupted]", timeout=30, after=start)
    term.wait_prompt(2)
    term.type(b"Say hello.\r")
    term.wait_prompt(3, timeout=180)
    term.type(b"\x04")
    assert term.exit_code() == 0
    first, second = rows(home)
    assert first["provider"] == "openai" and first["finish_reason"] == "interrupted"
    assert second["response"] and second["finish_reason"] in ("stop", "length")


def test_interactive_usage_errors(home):
    both = run(home, "chat", "-i", "Hi")
    assert both.returncode == 2 and "-i" in one_line_error(both)
    no_log_continue = run(home, "chat", "-c", "Hi", "--no-log")
    assert no_log_continue.returncode == 2 and "log" in one_line_error(no_log_continue)
    nothing = run(home, "chat", "-c", "Hi")
    assert nothing.returncode == 2 and "no conversation" in one_line_error(nothing)


# ------------------------------------------------------------------------------------------------
# 4. models
# ------------------------------------------------------------------------------------------------


def test_models_lists_the_server_and_local_gguf_files(home, llama_server, tmp_path):
    models_dir = tmp_path / "models" / "nested"
    models_dir.mkdir(parents=True)
    (models_dir / "tiny.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(24))  # GGUF magic: listed
    (models_dir / "same.gguf").symlink_to(smollm2_path())  # the default model again: listed once
    (models_dir / "fake.gguf").write_bytes(b"not a gguf file")
    env = env_for(home, GEN_AI_GGUF_PATH=str(tmp_path / "models"))
    proc = run(home, "models", "--endpoint", llama_server, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    served = [i for i in items if i["provider"] == "openai"]
    assert [i["id"] for i in served] == ["smollm2"] and served[0]["endpoint"] == llama_server
    files = {i["id"]: i for i in items if i["provider"] == "local"}
    assert "tiny" in files and "fake" not in files and "same" not in files
    assert files["tiny"]["path"] == str(models_dir / "tiny.gguf")
    assert files["SmolLM2-135M-Instruct.Q4_1"]["size_bytes"] == os.path.getsize(smollm2_path())
    text = run(home, "models", "--endpoint", llama_server, env=env)
    assert text.returncode == 0 and "  smollm2" in text.stdout and "tiny" in text.stdout
    # nothing configured: the local files only, no endpoint asked
    local = run(home, "models", env=env)
    assert local.returncode == 0 and "GGUF files" in local.stdout and "http" not in local.stdout
    # a configured endpoint that is down: exit 1, one line
    down = run(home, "models", "--endpoint", f"http://127.0.0.1:{free_port()}/v1", "--max-retries", "0")
    assert down.returncode == 1 and "127.0.0.1" in one_line_error(down)


def test_models_uses_each_providers_listing_call(home):
    anthropic = FaultServer(default=Step(200, {"data": [{"type": "model", "id": "claude-x", "display_name": "Claude X",
                                                         "created_at": "2025-01-01T00:00:00Z"}],
                                               "has_more": False, "first_id": "claude-x", "last_id": "claude-x"}))
    gemini = FaultServer(default=Step(200, {"models": [{"name": "models/gemini-y", "displayName": "Gemini Y",
                                                        "supportedGenerationMethods": ["generateContent"]}]}))
    try:
        env = env_for(home, ANTHROPIC_API_KEY=SECRET)
        proc = run(home, "models", "--provider", "anthropic", "--endpoint", f"http://127.0.0.1:{anthropic.port}",
                   "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert [m["id"] for m in json.loads(proc.stdout) if m["provider"] == "anthropic"] == ["claude-x"]
        rec = anthropic.requests[0]
        assert (rec.method, rec.path) == ("GET", "/v1/models?limit=1000")
        assert rec.headers["x-api-key"] == SECRET and rec.headers["anthropic-version"]
        assert SECRET not in proc.stdout + proc.stderr
        proc = run(home, "models", "--provider", "gemini", "--endpoint", f"http://127.0.0.1:{gemini.port}",
                   "--api-key", SECRET)
        assert proc.returncode == 0, proc.stderr
        assert "  gemini-y  (Gemini Y)" in proc.stdout
        rec = gemini.requests[0]
        assert (rec.method, rec.path) == ("GET", "/v1beta/models?pageSize=1000")
        assert rec.headers["x-goog-api-key"] == SECRET
    finally:
        anthropic.close()
        gemini.close()


# ------------------------------------------------------------------------------------------------
# 5. logs
# ------------------------------------------------------------------------------------------------


def test_logs_show_search_and_json(home):
    assert run(home, "What is the capital of France?", "--max-tokens", "8").returncode == 0
    assert run(home, "complete", "The sky is", "--max-tokens", "4").returncode == 0
    assert run(home, "chat", "Name a fruit.", "--max-tokens", "6", "--no-stream").returncode == 0
    listed = run(home, "logs", "--json", "-n", "0")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [e["prompt"] for e in entries] == ["What is the capital of France?", "The sky is", "Name a fruit."]
    assert [e["kind"] for e in entries] == ["chat", "completion", "chat"]
    for e in entries:
        assert e["provider"] == "local" and e["response"] and e["latency"] > 0
        assert e["prompt_tokens"] > 0 and e["usage"]["completion_tokens"] == e["completion_tokens"]
        assert e["options"]["max_tokens"] in (4, 6, 8)
    assert entries[0]["first_token_latency"] is not None
    assert [e["prompt"] for e in json.loads(run(home, "logs", "--json", "-n", "1").stdout)] == ["Name a fruit."]
    found = json.loads(run(home, "logs", "capital", "--json").stdout)
    assert [e["prompt"] for e in found] == ["What is the capital of France?"]
    assert json.loads(run(home, "logs", "-q", "FRUIT", "--json").stdout)[0]["prompt"] == "Name a fruit."
    assert json.loads(run(home, "logs", "no-such-words", "--json").stdout) == []
    text = run(home, "logs", "-n", "2")
    assert text.returncode == 0 and "> The sky is" in text.stdout and "> Name a fruit." in text.stdout
    assert "capital" not in text.stdout
    assert run(home, "logs", "-n", "-1").returncode == 2


def test_logging_can_be_turned_off_three_ways(home):
    assert run(home, "Hi", "--max-tokens", "2").returncode == 0
    assert len(rows(home)) == 1
    assert run(home, "Hi", "--max-tokens", "2", "--no-log").returncode == 0
    assert run(home, "Hi", "--max-tokens", "2", env=env_for(home, GEN_AI_LOG="0")).returncode == 0
    write_config(home, "log = false\n")
    assert run(home, "Hi", "--max-tokens", "2").returncode == 0
    assert len(rows(home)) == 1
    # and on again, by the environment and by the flag, over the config file
    assert run(home, "Hi", "--max-tokens", "2", env=env_for(home, GEN_AI_LOG="1")).returncode == 0
    assert run(home, "Hi", "--max-tokens", "2", "--log").returncode == 0
    assert len(rows(home)) == 3
    bad = run(home, "Hi", env=env_for(home, GEN_AI_LOG="maybe"))
    assert bad.returncode == 2 and "GEN_AI_LOG" in one_line_error(bad)


def test_secrets_are_never_stored(home, llama_server):
    write_keys(home, f'openai = "{KEYFILE_SECRET}"\n')
    headers = json.dumps({"X-Gateway-Token": HEADER_SECRET})
    runs = [
        (SECRET, ("--api-key", SECRET)),                  # flag
        (KEYFILE_SECRET, ()),                             # the keys file
        (HEADER_SECRET, ("-o", f"headers={headers}")),    # a credential header option
    ]
    for secret, extra in runs:  # each run's credential typed into its prompt too
        proc = run(home, f"Repeat: {secret}", "--endpoint", llama_server, "-m", "smollm2", "--max-tokens", "3",
                   *extra)
        assert proc.returncode == 0, proc.stderr
    env = env_for(home, OPENAI_API_KEY=SECRET)
    proc = run(home, f"Hi {SECRET}", "--endpoint", llama_server, "-m", "smollm2", "--max-tokens", "3", env=env)
    assert proc.returncode == 0, proc.stderr
    # a failed call is logged with its error, scrubbed too
    down = run(home, "Hi", "--endpoint", f"http://127.0.0.1:{free_port()}/v1?key={SECRET}", "-m", "m",
               "--api-key", SECRET, "--max-retries", "0")
    assert down.returncode == 1
    conn = sqlite3.connect(db(home))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    stored = b"".join(p.read_bytes() for p in db(home).parent.iterdir() if p.name.startswith("logs.db"))
    for secret in (SECRET, KEYFILE_SECRET, HEADER_SECRET):
        assert secret.encode() not in stored
    logged = rows(home)
    assert len(logged) == 5
    assert [r["prompt"] for r in logged[:4]] == ["Repeat: ***"] * 3 + ["Hi ***"]  # typed keys are scrubbed too
    assert json.loads(logged[2]["options"])["headers"] == "***"
    assert logged[4]["error"] and "?" not in (logged[4]["endpoint"] or "")
    assert stat.S_IMODE(db(home).stat().st_mode) == 0o600


def test_concurrent_processes_share_the_log(home, llama_server):
    # --no-stream: llama-cpp-python's server ends a running *stream* when another request waits
    # (interrupt_requests, on by default); whole answers are queued instead.
    count = 6
    procs = [subprocess.Popen([sys.executable, "-m", "gen_ai", f"Say the number {i}.", "--endpoint", llama_server,
                               "-m", "smollm2", "--max-tokens", "2", "--no-stream"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, cwd=ROOT, env=env_for(home))
             for i in range(count)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert b"warning" not in err
    conn = sqlite3.connect(db(home))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        prompts = sorted(r[0] for r in conn.execute("SELECT prompt FROM responses"))
        conversations = conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
    finally:
        conn.close()
    assert prompts == sorted(f"Say the number {i}." for i in range(count))
    assert conversations == count
    # readers while writers run: `gen-ai logs` in parallel with more writers
    writers = [subprocess.Popen([sys.executable, "-m", "gen_ai", "Hi", "--endpoint", llama_server, "-m", "smollm2",
                                 "--max-tokens", "2", "--no-stream"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, cwd=ROOT, env=env_for(home)) for _ in range(3)]
    readers = [run(home, "logs", "--json", "-n", "0") for _ in range(3)]
    for proc in writers:
        assert proc.wait(300) == 0
    for reader in readers:
        assert reader.returncode == 0 and len(json.loads(reader.stdout)) >= count
    assert len(rows(home)) == count + 3


# ------------------------------------------------------------------------------------------------
# 6. configuration
# ------------------------------------------------------------------------------------------------


def show(home: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    proc = run(home, "config", "show", "--json", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_config_path_and_show(home):
    path = run(home, "config", "path")
    assert path.returncode == 0 and path.stdout.strip() == str(home / "config" / "gen-ai" / "config.toml")
    data = show(home)
    assert data["settings"]["provider"] == "local" and data["sources"]["provider"] == "default"
    assert data["paths"]["logs"] == str(db(home))
    text = run(home, "config", "show")
    assert text.returncode == 0 and "provider" in text.stdout and "(default)" in text.stdout


def test_precedence_flag_env_alias_config_default(home):
    write_config(home, """
provider = "openai"
endpoint = "http://config.example/v1"
model = "config-model"
temperature = 0.1
max_tokens = 100
options = { dialect = "json_object", max_retries = 5 }

[aliases.fast]
model = "alias-model"
endpoint = "http://alias.example/v1"
temperature = 0.7
options = { max_retries = 1 }
""")
    # config file over the default
    data = show(home)
    assert data["settings"]["model"] == "config-model" and data["sources"]["model"] == "config file"
    assert data["settings"]["temperature"] == 0.1 and data["settings"]["top_p"] == 1.0
    assert data["sources"]["top_p"] == "default"
    # the alias over the config file (and what the alias leaves out comes from the config file)
    data = show(home, "-m", "fast")
    assert data["alias"] == "fast"
    assert (data["settings"]["model"], data["sources"]["model"]) == ("alias-model", "alias fast")
    assert (data["settings"]["endpoint"], data["sources"]["endpoint"]) == ("http://alias.example/v1", "alias fast")
    assert data["settings"]["temperature"] == 0.7 and data["settings"]["max_tokens"] == 100
    assert data["options"] == {"dialect": "json_object", "max_retries": 1}
    assert data["settings"]["provider"] == "openai" and data["sources"]["provider"] == "config file"
    # the environment over the alias
    env = env_for(home, GEN_AI_ENDPOINT="http://env.example/v1", GEN_AI_PROVIDER="azure")
    data = show(home, "-m", "fast", env=env)
    assert (data["settings"]["endpoint"], data["sources"]["endpoint"]) == ("http://env.example/v1",
                                                                          "$GEN_AI_ENDPOINT")
    assert data["settings"]["provider"] == "azure"
    # the provider's own variable beats the alias and config file too
    data = show(home, "-m", "fast", env=env_for(home, OPENAI_BASE_URL="http://openai-env.example/v1"))
    assert data["sources"]["endpoint"] == "$OPENAI_BASE_URL" and data["settings"]["endpoint"] is None
    # GEN_AI_MODEL over the config file's model, and it may name an alias
    data = show(home, env=env_for(home, GEN_AI_MODEL="env-model"))
    assert (data["settings"]["model"], data["sources"]["model"]) == ("env-model", "$GEN_AI_MODEL")
    assert show(home, env=env_for(home, GEN_AI_MODEL="fast"))["settings"]["model"] == "alias-model"
    # flags over everything
    data = show(home, "-m", "fast", "--endpoint", "http://flag.example/v1", "--temperature", "0.9",
                "-o", "max_retries=3", "--provider", "openai", env=env)
    assert (data["settings"]["endpoint"], data["sources"]["endpoint"]) == ("http://flag.example/v1", "--endpoint")
    assert data["settings"]["temperature"] == 0.9 and data["sources"]["temperature"] == "--temperature"
    assert data["settings"]["provider"] == "openai" and data["sources"]["provider"] == "--provider"
    assert data["options"]["max_retries"] == 3 and data["option_sources"]["max_retries"] == "-o"
    assert show(home, "-m", "plain-model")["settings"]["model"] == "plain-model"


def test_an_alias_runs_against_the_real_server(home, llama_server):
    write_config(home, f"""
[aliases.srv]
provider = "openai"
endpoint = "{llama_server}"
model = "smollm2"
max_tokens = 3
system = "You are terse."
""")
    proc = run(home, "-m", "srv", "Hi", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["provider"] == "openai" and data["usage"]["completion_tokens"] <= 3
    [row] = rows(home)
    assert row["system"] == "You are terse." and row["model"] == "smollm2"
    # a flag still beats the alias
    proc = run(home, "-m", "srv", "Hi", "--json", "--max-tokens", "1")
    assert json.loads(proc.stdout)["usage"]["completion_tokens"] <= 1


def test_keys_file_env_and_flag_are_never_echoed(home, llama_server):
    keys = write_keys(home, f'openai = "{KEYFILE_SECRET}"\nwork = "{SECRET}"\n')
    write_config(home, f'[aliases.work]\nendpoint = "{llama_server}"\nmodel = "smollm2"\nkey = "work"\n')
    data = run(home, "config", "show", "--endpoint", llama_server, "-m", "smollm2")
    assert data.returncode == 0 and KEYFILE_SECRET not in data.stdout
    assert "keys file (openai)" in data.stdout
    as_json = show(home, "-m", "work")
    assert as_json["settings"]["api_key"] == "***" and as_json["sources"]["api_key"] == "keys file (work)"
    env_wins = show(home, "-m", "work", env=env_for(home, OPENAI_API_KEY="sk-env-key-123456"))
    assert env_wins["sources"]["api_key"] == "$OPENAI_API_KEY"
    assert show(home, "-m", "work", "--api-key", "sk-flag-1234567")["sources"]["api_key"] == "--api-key"
    # the key is really sent: a failing endpoint's error never shows it
    down = run(home, "Hi", "--endpoint", f"http://127.0.0.1:{free_port()}/v1", "-m", "m", "--max-retries", "0",
               "--verbose")
    assert down.returncode == 1 and KEYFILE_SECRET not in down.stderr + down.stdout
    # looser permissions are refused, with the fix in the message
    keys.chmod(0o644)
    loose = run(home, "config", "show", "--endpoint", llama_server, "-m", "smollm2")
    assert loose.returncode == 2 and "chmod 600" in one_line_error(loose)
    assert KEYFILE_SECRET not in loose.stderr
    keys.chmod(0o600)
    missing = show(home, "-m", "work")
    assert missing["sources"]["api_key"] == "keys file (work)"


def test_set_key_writes_an_owner_only_file(home):
    proc = run(home, "config", "set-key", "anthropic", input=SECRET + "\n")
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    path = home / "config" / "gen-ai" / "keys.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f'"anthropic" = "{SECRET}"' in path.read_text()
    data = show(home, "--provider", "anthropic", "-m", "claude-x")
    assert data["sources"]["api_key"] == "keys file (anthropic)"


def test_config_errors_are_one_line(home):
    write_config(home, "provider = \n")
    bad = run(home, "config", "show")
    assert bad.returncode == 2 and "not valid TOML" in one_line_error(bad)
    write_config(home, "temprature = 0.5\n")
    typo = run(home, "Hi")
    assert typo.returncode == 2 and "did you mean 'temperature'" in one_line_error(typo)
    write_config(home, "[aliases.x]\nmax_tokens = 'many'\n")
    wrong = run(home, "-m", "x", "Hi")
    assert wrong.returncode == 2 and "aliases.x.max_tokens" in one_line_error(wrong)
    write_config(home, '[aliases.x]\nkey = "nokey"\n')
    nokey = run(home, "-m", "x", "--provider", "openai", "--endpoint", "http://127.0.0.1:9/v1", "Hi")
    assert nokey.returncode == 2 and "set-key nokey" in one_line_error(nokey)


# ------------------------------------------------------------------------------------------------
# help, start-up
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["chat"], ["complete"], ["models"], ["logs"], ["config"],
                                     ["config", "show"], ["config", "path"], ["config", "set-key"], ["embed"],
                                     ["batch"]])
def test_every_command_has_an_example(home, command):
    proc = run(home, *command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout.lower() and "gen-ai " in proc.stdout.split("example", 1)[1]


def test_start_up_imports_stay_light(home):
    code = ("import sys, gen_ai.cli; gen_ai.cli.build_parser(); "
            "print(sorted(m for m in ('sqlite3', 'tomllib', 'readline', 'importlib.metadata', 'llama_cpp', "
            "'aiohttp', 'jsonschema') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env_for(home))
    assert proc.stdout.strip() == "[]", proc.stderr


# ------------------------------------------------------------------------------------------------
# 7. reasoning and tool calls on the terminal (a loopback server: SmolLM2 does neither)
# ------------------------------------------------------------------------------------------------


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


THINKING_STREAM = [_chunk({"role": "assistant", "reasoning_content": "Two and two "}),
                   _chunk({"reasoning_content": "make four."}),
                   _chunk({"content": "4"}), _chunk({}, "stop"), b"data: [DONE]\n\n"]
TOOL_STREAM = [_chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                             "function": {"name": "get_weather", "arguments": ""}}]}),
               _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
               _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
               _chunk({}, "tool_calls"), b"data: [DONE]\n\n"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_reasoning_dimmed_on_stderr_and_logged(home):
    server = FaultServer(default=lambda rec: Step(200, chunks=THINKING_STREAM))
    try:
        base = ["--endpoint", server.url, "-m", "thinker"]
        proc = run(home, "What is 2+2?", "--reasoning-effort", "low", *base)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "4\n"  # the answer alone on stdout
        assert "Two and two make four." in proc.stderr
        assert server.requests[-1].json()["reasoning_effort"] == "low"
        hidden = run(home, "What is 2+2?", "--no-reasoning", *base)
        assert hidden.stdout == "4\n" and "Two and two" not in hidden.stderr
        logged = rows(home)
        assert [r["reasoning"] for r in logged] == ["Two and two make four."] * 2
        # on a terminal the reasoning is dimmed (ANSI faint), and the answer is not
        term = Terminal(home, "What is 2+2?", *base)
        assert term.exit_code() == 0
        assert "\x1b[2mTwo and two make four." in term.text() and "\x1b[0m" in term.text()
    finally:
        server.close()


def test_tool_calls_printed_as_they_form_and_in_json(home, tmp_path):
    server = FaultServer(default=lambda rec: Step(200, chunks=TOOL_STREAM))
    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps(TOOLS))
    try:
        base = ["--endpoint", server.url, "-m", "tooler", "--tools", str(tools_file)]
        proc = run(home, "Weather in Paris?", "--tool-choice", "get_weather", *base)
        assert proc.returncode == 0, proc.stderr
        assert '[tool call] get_weather({"city": "Paris"})' in proc.stderr
        body = server.requests[-1].json()
        assert body["tools"] == TOOLS
        assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        [row] = rows(home)
        assert json.loads(row["tool_calls"]) == [{"id": "call_1", "name": "get_weather",
                                                  "arguments": '{"city": "Paris"}'}]
        server.default = lambda rec: Step(200, {
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "reasoning_content": "Need the weather.",
                "tool_calls": [{"id": "call_2", "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}})
        as_json = run(home, "Weather in Rome?", "--json", "--tools", json.dumps(TOOLS), "--endpoint", server.url,
                      "-m", "tooler")
        assert as_json.returncode == 0, as_json.stderr
        data = json.loads(as_json.stdout)
        assert data["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Rome"}'}
        assert data["reasoning"] == "Need the weather."
        bad = run(home, "Hi", "--tools", "[not json", "--endpoint", server.url, "-m", "tooler")
        assert bad.returncode == 2 and "--tools" in one_line_error(bad)
    finally:
        server.close()


# ------------------------------------------------------------------------------------------------
# 8. embed
# ------------------------------------------------------------------------------------------------


def test_embed_arguments_and_stdin_one_array_per_line(home):
    proc = run(home, "embed", "first text", "second text")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    vectors = [json.loads(line) for line in lines]
    assert len(vectors[0]) == len(vectors[1]) > 100 and vectors[0] != vectors[1]
    from gen_ai import create_client

    client = create_client(provider="local")
    expected = client.run_embeddings(["first text", "second text"])
    assert all(abs(a - b) < 1e-5 for a, b in zip(vectors[0], expected[0], strict=True))
    piped = run(home, "embed", input="first text\n\nsecond text\n")
    assert piped.returncode == 0 and [json.loads(x) for x in piped.stdout.splitlines()] == vectors
    as_json = json.loads(run(home, "embed", "first text", "--json").stdout)
    assert as_json["embeddings"] == vectors[:1] and as_json["provider"] == "local"
    nothing = run(home, "embed")
    assert nothing.returncode == 2 and "no text" in one_line_error(nothing)
    shorter = run(home, "embed", "x", "--dimensions", "4")
    assert shorter.returncode == 2 and shorter.stderr.strip().splitlines()[-1].startswith("gen-ai: error: dimensions")


# ------------------------------------------------------------------------------------------------
# Client.list_models and the codecs' models_request
# ------------------------------------------------------------------------------------------------


def test_list_models_against_the_real_server(llama_server):
    from gen_ai import create_client

    with create_client(provider="openai", endpoint=llama_server, model_name="smollm2") as client:
        models = client.list_models()
    assert [m["id"] for m in models] == ["smollm2"] and models[0]["owned_by"] == "me"
    local = create_client(provider="local")
    assert local.list_models() == []  # nothing to ask: the CLI lists GGUF files instead


def test_models_requests_of_azure_and_bedrock():
    from gen_ai.factory import create_client
    from gen_ai.providers._base import model_entries

    v1 = create_client(provider="azure", endpoint="https://res.openai.azure.com", api_version="v1",
                       model_name="dep", api_key=SECRET).codec.models_request()
    assert (v1.method, v1.url) == ("GET", "https://res.openai.azure.com/openai/v1/models")
    assert v1.headers["api-key"] == SECRET
    dated = create_client(provider="azure", endpoint="https://res.openai.azure.com", deployment="dep",
                          api_version="2024-10-21", api_key=SECRET).codec.models_request()
    assert dated.url == "https://res.openai.azure.com/openai/models?api-version=2024-10-21"
    bedrock = create_client(provider="bedrock", model_name="m", region="eu-west-1", api_key="AKIAEXAMPLE",
                            secret_key="secret-example").codec.models_request()
    assert bedrock.url == "https://bedrock.eu-west-1.amazonaws.com/foundation-models"
    assert bedrock.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/")
    assert "/eu-west-1/bedrock/aws4_request" in bedrock.headers["Authorization"]
    # the list shapes of each provider
    assert model_entries({"modelSummaries": [{"modelId": "amazon.nova", "providerName": "Amazon"}]}) == [
        {"id": "amazon.nova", "providerName": "Amazon"}]
    assert model_entries({"models": [{"name": "models/gemini-y"}]}) == [{"id": "gemini-y", "name": "models/gemini-y"}]
    assert model_entries({"data": [{"id": "a"}, {"nope": 1}, "x"]}) == [{"id": "a"}]
