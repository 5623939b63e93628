"""Where every setting of a ``gen-ai`` run comes from.

Precedence, highest first: command-line flag > environment variable > alias (``-m NAME`` naming an
alias of the config file) > the config file's top level > the built-in default.

Files (XDG base directories; a relative or empty ``$XDG_*`` is ignored, as the spec says):

    $XDG_CONFIG_HOME/gen-ai/config.toml   (default ~/.config/gen-ai/config.toml)
    $XDG_CONFIG_HOME/gen-ai/keys.toml     API keys, ``provider = "key"``; must be mode 600
    $XDG_DATA_HOME/gen-ai/logs.db         the log (default ~/.local/share/gen-ai/logs.db)

A config file::

    provider = "openai"
    endpoint = "http://localhost:8000/v1"
    model = "smollm2"
    temperature = 0.2

    [aliases.fast]
    model = "smollm2"
    max_tokens = 64
    system = "Answer in one sentence."
    options = { max_retries = 0 }

Keys are never read from the config file, never printed (``config show`` masks them) and never
logged: they come from ``--api-key``, the provider's environment variable, or the keys file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from . import UsageError

# Settings an alias or the top level may hold, with their types.
_VALUE_KEYS: dict[str, tuple[type, ...]] = {
    "provider": (str,), "endpoint": (str, list), "model": (str,), "system": (str,),
    "max_tokens": (int,), "temperature": (int, float), "top_p": (int, float), "timeout": (int, float),
    "max_retries": (int,), "options": (dict,), "key": (str,), "log": (bool,),
}
_TOP_ONLY = {"aliases": (dict,), "gguf_dirs": (list,)}
GENERATION = ("system", "max_tokens", "temperature", "top_p", "timeout", "max_retries")
DEFAULTS: dict[str, Any] = {"max_tokens": 256, "temperature": 0.0, "top_p": 1.0, "timeout": 120.0,
                            "max_retries": None, "system": None}
# Providers whose keys-file entry is not their ``api_key`` option.
_KEY_OPTION = {"bedrock": "bearer_token"}
_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    base = Path(value) if value and os.path.isabs(value) else Path.home() / fallback
    return base / "gen-ai"


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config")


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share")


def config_path() -> Path:
    return config_dir() / "config.toml"


def keys_path() -> Path:
    return config_dir() / "keys.toml"


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ImportError:
            raise UsageError(f"reading {what} {path} needs Python 3.11 or the tomli package: pip install tomli")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc} (fix its permissions or move it away)")
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid TOML: {exc} (fix it, or see gen-ai config --help)")


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"


def _check_table(table: dict[str, Any], where: str, top: bool) -> None:
    allowed = dict(_VALUE_KEYS, **(_TOP_ONLY if top else {}))
    if not top:
        allowed.pop("log", None)
    for key, value in table.items():
        if key not in allowed:
            raise UsageError(f"config file {config_path()}: unknown key {key!r} in {where} "
                             f"({_did_you_mean(key, list(allowed))})")
        types = allowed[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            want = " or ".join("a number" if t is float else {int: "a whole number", str: "a string",
                                                                dict: "a table", list: "a list",
                                                                bool: "true or false"}[t]
                               for t in types if not (t is int and float in types))
            raise UsageError(f"config file {config_path()}: {where}.{key} must be {want}, got {value!r}")


def load_config() -> dict[str, Any]:
    config = _read_toml(config_path(), "config file")
    _check_table(config, "the top level", top=True)
    for name, alias in (config.get("aliases") or {}).items():
        if not isinstance(alias, dict):
            raise UsageError(f"config file {config_path()}: aliases.{name} must be a table ([aliases.{name}])")
        _check_table(alias, f"aliases.{name}", top=False)
    return config


def load_keys() -> dict[str, Any]:
    """The keys file, refused when others can read it (it holds credentials)."""
    path = keys_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError:
        return {}
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"keys file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                         f"make it private: chmod 600 {path}")
    keys = _read_toml(path, "keys file")
    for name, value in keys.items():
        if not isinstance(value, str):
            raise UsageError(f"keys file {path}: {name} must be a string (name = \"key\")")
    return keys


def save_key(name: str, value: str) -> Path:
    """Add or replace ``name`` in the keys file, created owner-only (mode 600)."""
    path = keys_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = load_keys() if path.exists() else {}
    keys[name] = value
    lines = ["# gen-ai API keys: never share this file (mode 600)"]
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(keys.items())]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise UsageError(f"${name}={os.environ[name]!r} is not understood (use 0 or 1)")


class Settings:
    """The effective settings of one run, each with where it came from (``sources``)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.alias: str | None = None
        self.options: dict[str, Any] = {}
        self.option_sources: dict[str, str] = {}
        self.api_key: str | None = None
        self.config: dict[str, Any] = {}

    def set(self, name: str, value: Any, source: str) -> None:
        self.values[name] = value
        self.sources[name] = source

    def get(self, name: str) -> Any:
        return self.values.get(name)

    @property
    def log(self) -> bool:
        return bool(self.values.get("log", True))


def _codec_class(provider: str) -> Any:
    from ..factory import PROVIDERS

    target = PROVIDERS.get(provider.lower())
    if target is None:
        return None
    import importlib

    module_name, class_name = target.split(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except ImportError:
        return None


def resolve(args: Any, need_key: bool = True) -> Settings:
    """Every setting from flags (``args``), the environment, the alias, the config file, defaults."""
    s = Settings()
    config = s.config = load_config()
    aliases: dict[str, Any] = config.get("aliases") or {}

    # The model selector may name an alias: -m fast, $GEN_AI_MODEL=fast, model = "fast".
    selector, selector_from = None, ""
    for value, source in ((getattr(args, "model", None), "-m/--model"),
                          (os.environ.get("GEN_AI_MODEL"), "$GEN_AI_MODEL"),
                          (config.get("model"), "config file")):
        if value:
            selector, selector_from = value, source
            break
    alias: dict[str, Any] = {}
    if selector in aliases:
        s.alias = selector
        alias = aliases[selector]
    alias_from = f"alias {s.alias}"

    def pick(name: str, flag: Any, env: str | None) -> None:
        if flag is not None:
            s.set(name, flag, "--" + name.replace("_", "-"))
        elif env and os.environ.get(env):
            s.set(name, os.environ[env], "$" + env)
        elif name in alias:
            s.set(name, alias[name], alias_from)
        elif name in config and name != "model":
            s.set(name, config[name], "config file")

    pick("provider", getattr(args, "provider", None), "GEN_AI_PROVIDER")
    # The model: the selector itself unless it names an alias, then the alias's model.
    if s.alias is None and selector:
        s.set("model", selector, selector_from)
    elif "model" in alias:
        s.set("model", alias["model"], alias_from)
    else:
        s.set("model", None, "default")
    pick("endpoint", getattr(args, "endpoint", None), "GEN_AI_ENDPOINT")
    if s.get("provider") is None:
        env_url = os.environ.get("OPENAI_BASE_URL")
        if s.get("endpoint") or env_url:
            s.set("provider", "openai", "inferred: an endpoint is set" if s.get("endpoint") else "$OPENAI_BASE_URL")
        else:
            s.set("provider", "local", "default")
    provider = str(s.get("provider")).lower()
    codec_cls = _codec_class(provider)
    # The provider's own endpoint variable (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, ...) beats the
    # alias and config file: the codec reads it when no endpoint is passed.
    env_endpoint = getattr(codec_cls, "env_endpoint", None)
    if env_endpoint and os.environ.get(env_endpoint) and s.sources.get("endpoint") in (alias_from, "config file"):
        s.set("endpoint", None, "$" + env_endpoint)
    for name in GENERATION:
        flag = getattr(args, name, None)
        pick(name, flag, None)
        if name not in s.values:
            s.set(name, DEFAULTS[name], "default")
    # Logging: --no-log/--log > $GEN_AI_LOG > alias/config `log`.
    env_log = _env_flag("GEN_AI_LOG")
    flag_log = getattr(args, "log", None)
    if flag_log is not None:
        s.set("log", bool(flag_log), "--log" if flag_log else "--no-log")
    elif env_log is not None:
        s.set("log", env_log, "$GEN_AI_LOG")
    elif "log" in config:
        s.set("log", bool(config["log"]), "config file")
    else:
        s.set("log", True, "default")
    # Client options: config file < alias < -o flags.
    for table, source in ((config.get("options") or {}, "config file"), (alias.get("options") or {}, alias_from)):
        for key, value in table.items():
            s.options[key] = value
            s.option_sources[key] = source
    for key, value in _parse_options(getattr(args, "option", None) or []).items():
        s.options[key] = value
        s.option_sources[key] = "-o"
    if need_key:
        _resolve_key(s, args, provider, codec_cls, alias)
    return s


def _resolve_key(s: Settings, args: Any, provider: str, codec_cls: Any, alias: dict[str, Any]) -> None:
    flag = getattr(args, "api_key", None)
    if flag:
        s.api_key = flag
        s.set("api_key", "***", "--api-key")
        return
    env_names = list(getattr(codec_cls, "env_api_keys", ()) or ())
    if getattr(codec_cls, "env_api_key", None):
        env_names.insert(0, codec_cls.env_api_key)
    if provider == "bedrock":
        env_names += ["AWS_BEARER_TOKEN_BEDROCK", "AWS_ACCESS_KEY_ID"]
    for name in env_names:
        if os.environ.get(name):
            s.set("api_key", "***", "$" + name)
            return
    name = alias.get("key") or provider
    if provider == "local":
        return
    keys = load_keys()
    if name in keys:
        option = _KEY_OPTION.get(provider)
        if option:
            s.options.setdefault(option, keys[name])
            s.option_sources.setdefault(option, f"keys file ({name})")
        else:
            s.api_key = keys[name]
        s.set("api_key", "***", f"keys file ({name})")
    elif alias.get("key"):
        raise UsageError(f"alias {s.alias}: key {name!r} is not in the keys file {keys_path()} "
                         f"(add it: gen-ai config set-key {name})")


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


_SECRET_OPTION_WORDS = ("key", "token", "secret", "password", "authorization", "headers", "credential")


def secret_values(options: Any, secret_key: bool = False) -> list[str]:
    """String values under credential-looking keys, at any depth (``headers={"X-Api-Token": ...}``)."""
    found: list[str] = []
    if isinstance(options, dict):
        for key, value in options.items():
            found += secret_values(value, any(w in str(key).lower() for w in _SECRET_OPTION_WORDS
                                              if w != "headers"))
    elif isinstance(options, (list, tuple)):
        for value in options:
            found += secret_values(value, secret_key)
    elif isinstance(options, str) and secret_key and len(options) >= 4:
        found.append(options.split(" ", 1)[1] if options.lower().startswith(("bearer ", "basic ")) else options)
    return found


def masked_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options safe to print or store: credential-looking ones replaced by ``***``."""
    return {k: ("***" if any(w in k.lower() for w in _SECRET_OPTION_WORDS) else v) for k, v in options.items()}


def show(s: Settings) -> dict[str, Any]:
    """What ``gen-ai config show`` prints: every setting, its source, the files; no secret."""
    settings = {k: v for k, v in s.values.items()}
    sources = dict(s.sources)
    if "api_key" not in settings:
        settings["api_key"], sources["api_key"] = None, "not set"
    options = masked_options(s.options)
    from .logs import db_path

    return {
        "settings": settings,
        "sources": sources,
        "alias": s.alias,
        "options": options,
        "option_sources": dict(s.option_sources),
        "aliases": sorted(s.config.get("aliases") or {}),
        "paths": {"config": str(config_path()), "keys": str(keys_path()), "logs": str(db_path())},
        "files": {"config": config_path().exists(), "keys": keys_path().exists()},
    }
