"""Answers on the terminal: one streamed answer (``gen-ai "question"``) and the conversation loop
(``gen-ai chat -i``, or ``gen-ai chat`` with no prompt on a terminal).

In the loop: history is kept and sent each turn, answers stream, ``readline`` gives line editing
and history (kept in ``$XDG_DATA_HOME/gen-ai/chat_history``), ``!multi`` ... ``!end`` sends several
lines, ``/exit`` or Ctrl-D leaves, Ctrl-C stops the answer being written and keeps the session.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

DIM, RESET = "\033[2m", "\033[0m"

HELP = """commands:
  /exit, /quit, exit, quit   leave (or Ctrl-D)
  !multi ... !end            several lines as one message (!multi X ... !end X if a line is !end)
  /reset                     forget the conversation so far (the system message stays)
  /help                      this text
  Ctrl-C                     stop the answer being written; the session goes on
"""


class Answer:
    """What one streamed turn produced."""

    def __init__(self) -> None:
        self.text = ""
        self.reasoning: str | None = None
        self.tool_calls: list[dict[str, Any]] = []
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.model: str | None = None
        self.latency: float | None = None
        self.first_token_latency: float | None = None
        self.interrupted = False


def _event_text(event: Any) -> str:
    for name in ("text", "delta", "content"):
        value = getattr(event, name, None)
        if isinstance(value, str):
            return value
    return ""


def stream_answer(client: Any, messages: list[dict[str, Any]], images: list[Any], params: dict[str, Any],
                  out: TextIO, err: TextIO, show_reasoning: bool = True) -> Answer:
    """Stream one chat answer to ``out`` (reasoning dimmed to ``err``, tool calls as they form).
    Ctrl-C stops it: the partial answer is returned with ``interrupted`` set."""
    answer = Answer()
    start = time.perf_counter()
    if images:
        stream = client.run_vision_request(messages, images, stream=True, **params)
    else:
        stream = client.run_chat_completions_stream(messages, **params)
    events = getattr(stream, "events", None)
    color = _is_tty(err)
    wrote_newline = True
    reasoning_open = False
    call_open = False
    iterator: Any = iter(events()) if callable(events) else iter(stream)
    try:
        for item in iterator:
            kind = getattr(item, "type", None) if not isinstance(item, str) else "text"
            if kind == "text":
                delta = item if isinstance(item, str) else _event_text(item)
                if reasoning_open:
                    err.write((RESET if color else "") + "\n")
                    err.flush()
                    reasoning_open = False
                if delta:
                    out.write(delta)
                    out.flush()
                    wrote_newline = delta.endswith("\n")
            elif kind == "reasoning" and show_reasoning:
                delta = _event_text(item)
                if delta:
                    if not reasoning_open and color:
                        err.write(DIM)
                    reasoning_open = True
                    err.write(delta)
                    err.flush()
            elif kind == "tool_call_start":
                err.write(f"{')' if call_open else ''}\n[tool call] {getattr(item, 'name', None) or '?'}(")
                err.flush()
                call_open = True
            elif kind == "tool_call_delta":
                err.write(getattr(item, "arguments", None) or "")
                err.flush()
            elif kind == "done" and call_open:
                err.write(")\n")
                err.flush()
                call_open = False
    except KeyboardInterrupt:
        answer.interrupted = True
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        if reasoning_open:
            err.write((RESET if color else "") + "\n")
            err.flush()
        if call_open:
            err.write(")\n")
            err.flush()
        if not wrote_newline or answer.interrupted:
            out.write("\n")
            out.flush()
    answer.text = stream.text
    answer.reasoning = getattr(stream, "reasoning", None) or None
    answer.tool_calls = [_tool_dict(c) for c in (getattr(stream, "tool_calls", None) or [])]
    answer.finish_reason = "interrupted" if answer.interrupted else stream.finish_reason
    answer.usage = stream.usage
    answer.model = stream.model
    answer.latency = stream.latency or (time.perf_counter() - start)
    answer.first_token_latency = stream.first_token_latency
    return answer


def _tool_dict(call: Any) -> dict[str, Any]:
    to_dict = getattr(call, "to_dict", None)
    if callable(to_dict):
        value = to_dict()
        if isinstance(value, dict):
            function = value.get("function") or {}
            return {"id": value.get("id"), "name": function.get("name", getattr(call, "name", None)),
                    "arguments": function.get("arguments", getattr(call, "arguments", None))}
    return {"id": getattr(call, "id", None), "name": getattr(call, "name", None),
            "arguments": getattr(call, "arguments", None)}


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _setup_readline(history_file: Any) -> Any:
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input() still works
        return None
    try:
        readline.read_history_file(str(history_file))
    except OSError:
        pass
    readline.set_history_length(1000)
    return readline


def _save_history(readline: Any, history_file: Any) -> None:
    if readline is None:
        return
    try:
        history_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        readline.write_history_file(str(history_file))
    except OSError:
        pass


def interactive(client: Any, messages: list[dict[str, Any]], images: list[Any], params: dict[str, Any],
                record: Any, label: str, show_reasoning: bool = True) -> int:
    """The conversation loop. ``messages`` is the history so far (system message, continued turns);
    ``record(prompt, answer, images)`` logs one turn. Returns the exit code (0)."""
    from .settings import data_dir

    out, err = sys.stdout, sys.stderr
    history_file = data_dir() / "chat_history"
    tty = _is_tty(sys.stdin)
    readline = _setup_readline(history_file) if tty else None
    turns = sum(1 for m in messages if m.get("role") == "user")
    err.write(f"Chatting with {label}{f' (continuing: {turns} earlier turns)' if turns else ''}\n"
              "Type /exit or Ctrl-D to leave, !multi for several lines (then !end), /help for more.\n")
    err.flush()
    system = [m for m in messages if m.get("role") == "system"]
    multi: list[str] | None = None
    end_token = "!end"
    try:
        while True:
            try:
                line = input("> " if multi is None and tty else "")
            except EOFError:
                out.write("\n")
                break
            except KeyboardInterrupt:  # at the prompt: drop the line, stay
                out.write("\n")
                multi = None
                continue
            stripped = line.strip()
            if multi is not None:
                if stripped == end_token:
                    text, multi = "\n".join(multi), None
                    if not text.strip():
                        continue
                else:
                    multi.append(line)
                    continue
            else:
                if not stripped:
                    continue
                if stripped in ("/exit", "/quit", "exit", "quit"):
                    break
                if stripped.split()[0] == "!multi":
                    rest = stripped[len("!multi"):].strip()
                    end_token = f"!end {rest}" if rest else "!end"
                    multi = []
                    continue
                if stripped == "/help":
                    err.write(HELP)
                    continue
                if stripped == "/reset":
                    messages = list(system)
                    err.write("(conversation cleared)\n")
                    continue
                text = line
            messages.append({"role": "user", "content": text})
            turn_images, images = images, []  # attachments go with the first message only
            try:
                _turn(client, messages, turn_images, params, out, err, show_reasoning, record, text)
            except KeyboardInterrupt:  # Ctrl-C outside the answer loop (opening, closing, logging)
                if messages and messages[-1].get("role") == "user":
                    messages.pop()
                out.write("\n[interrupted]\n")
                out.flush()
    finally:
        _save_history(readline, history_file)
    return 0


def _turn(client: Any, messages: list[dict[str, Any]], images: list[Any], params: dict[str, Any], out: TextIO,
          err: TextIO, show_reasoning: bool, record: Any, text: str) -> None:
    """One question and its streamed answer; the history and the log updated."""
    from ..errors import GenAIError

    try:
        answer = stream_answer(client, messages, images, params, out, err, show_reasoning)
    except GenAIError as exc:
        messages.pop()
        err.write(f"gen-ai: error: {' '.join(str(exc).split())}\n")
        err.flush()
        record(text, None, images, error=str(exc))
        return
    if answer.interrupted:
        err.write("[interrupted]\n")
        err.flush()
    if answer.text:
        messages.append({"role": "assistant", "content": answer.text})
    else:
        messages.pop()
    record(text, answer, images)
