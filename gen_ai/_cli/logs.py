"""The log of every prompt and answer: one SQLite file, safe under concurrent ``gen-ai`` processes.

``$XDG_DATA_HOME/gen-ai/logs.db`` (default ``~/.local/share/gen-ai/logs.db``), created owner-only
(mode 600, its folder 700). WAL journal mode lets readers and one writer work at once; writers
wait for each other (busy timeout) instead of failing, and every insert is one short transaction.

Secrets are never stored: every text field is scrubbed of the run's credentials (the ``--api-key``
value, keys-file keys, key/token environment variables), credential-looking options are replaced
by ``***`` and the endpoint is stored without user info or query string.

Turned off by ``--no-log``, ``GEN_AI_LOG=0`` or ``log = false`` in the config file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import UsageError
from .settings import data_dir

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    provider TEXT,
    model TEXT
);
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    endpoint TEXT,
    system TEXT,
    prompt TEXT NOT NULL,
    attachments TEXT,
    response TEXT,
    reasoning TEXT,
    tool_calls TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    usage TEXT,
    latency REAL,
    first_token_latency REAL,
    options TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS responses_by_conversation ON responses(conversation_id, id);
"""
_JSON_COLUMNS = ("attachments", "tool_calls", "usage", "options")


def db_path() -> Path:
    return data_dir() / "logs.db"


def connect(create: bool = True) -> sqlite3.Connection:
    path = db_path()
    if not path.exists():
        if not create:
            raise UsageError(f"no log database at {path} yet (it is created by the first logged prompt)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:  # owner-only from the start; SQLite gives the -wal and -shm files the same mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError:
            pass
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        conn.execute("PRAGMA journal_mode = WAL")  # persistent: set once, kept in the file
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return conn


def new_conversation_id() -> str:
    # Time-ordered (sorts by start) and unique across processes.
    return f"{time.time_ns():x}{uuid.uuid4().hex[:8]}"


def clean_endpoint(endpoint: str | None) -> str | None:
    if not endpoint:
        return endpoint
    parts = urlsplit(endpoint)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _scrub(value: Any, secrets: Iterable[str]) -> Any:
    if not isinstance(value, str):
        return value
    for secret in secrets:
        value = value.replace(secret, "***")
    return value


class Logger:
    """Records the turns of one conversation; errors writing the log warn once, never fail the run."""

    def __init__(self, enabled: bool, secrets: list[str], conversation_id: str | None = None) -> None:
        self.enabled = enabled
        self.secrets = secrets
        self.conversation_id = conversation_id
        self._started = conversation_id is not None
        self._warned = False

    def record(self, **row: Any) -> None:
        if not self.enabled:
            return
        try:
            conn = connect()
            try:
                self._insert(conn, row)
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            if not self._warned:
                self._warned = True
                sys.stderr.write(f"gen-ai: warning: the answer was not logged ({db_path()}: {exc}); "
                                 "--no-log or GEN_AI_LOG=0 turns logging off\n")

    def _insert(self, conn: sqlite3.Connection, row: dict[str, Any]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.conversation_id is None:
            self.conversation_id = new_conversation_id()
        values: dict[str, Any] = {"conversation_id": self.conversation_id, "created": now}
        for key, value in row.items():
            if key in _JSON_COLUMNS and value is not None:
                value = json.dumps(value, ensure_ascii=False, default=str)
            values[key] = _scrub(value, self.secrets)
        values["endpoint"] = clean_endpoint(values.get("endpoint"))
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._started:
                conn.execute("INSERT OR IGNORE INTO conversations (id, started, provider, model) VALUES (?, ?, ?, ?)",
                             (self.conversation_id, now, values.get("provider"), values.get("model")))
            conn.execute(f"INSERT INTO responses ({columns}) VALUES ({marks})", list(values.values()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._started = True


def last_conversation(conversation_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(id, messages) of the last conversation (or of ``conversation_id``) for ``chat -c``."""
    if not db_path().exists():
        raise UsageError(f"-c: there is no conversation to continue yet (no log at {db_path()}); "
                         "start one without -c")
    conn = connect()
    try:
        if conversation_id is None:
            row = conn.execute("SELECT conversation_id FROM responses WHERE kind = 'chat' "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            if row is None:
                raise UsageError("-c: there is no logged chat to continue; start one without -c")
            conversation_id = str(row[0])
        rows = conn.execute("SELECT system, prompt, response FROM responses WHERE conversation_id = ? "
                            "AND kind = 'chat' ORDER BY id", (conversation_id,)).fetchall()
    finally:
        conn.close()
    if not rows:
        raise UsageError(f"--cid {conversation_id}: no such conversation in the log (gen-ai logs shows the ids)")
    messages: list[dict[str, Any]] = []
    if rows[0]["system"]:
        messages.append({"role": "system", "content": rows[0]["system"]})
    for row in rows:
        messages.append({"role": "user", "content": row["prompt"]})
        if row["response"]:
            messages.append({"role": "assistant", "content": row["response"]})
        else:  # a failed or interrupted turn: keep roles alternating
            messages.pop()
    return conversation_id, messages


# ------------------------------------------------------------------------------------------------
# gen-ai logs
# ------------------------------------------------------------------------------------------------


def query(count: int, text: str | None, conversation: str | None, current: bool) -> list[dict[str, Any]]:
    conn = connect(create=False)
    try:
        where, params = [], []
        if current and conversation is None:
            row = conn.execute("SELECT conversation_id FROM responses ORDER BY id DESC LIMIT 1").fetchone()
            conversation = str(row[0]) if row else ""
        if conversation is not None:
            where.append("conversation_id = ?")
            params.append(conversation)
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(prompt LIKE ? ESCAPE '\\' OR response LIKE ? ESCAPE '\\' OR system LIKE ? ESCAPE '\\')")
            params += [like, like, like]
        sql = "SELECT * FROM responses"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if count > 0:
            sql += f" LIMIT {int(count)}"
        rows = [dict(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()
    rows.reverse()  # oldest first, as a conversation reads
    for row in rows:
        for key in _JSON_COLUMNS:
            if row.get(key):
                try:
                    row[key] = json.loads(row[key])
                except ValueError:
                    pass
    return rows


def format_row(row: dict[str, Any]) -> str:
    head = f"#{row['id']}  {row['created'].replace('T', ' ').rstrip('Z')}  {row['provider']}/{row['model']}"
    head += f"  conversation {row['conversation_id']}"
    if row.get("latency") is not None:
        head += f"  {row['latency']:.2f}s"
    if row.get("prompt_tokens") is not None:
        head += f"  {row['prompt_tokens']}+{row.get('completion_tokens') or 0} tokens"
    lines = [head]
    if row.get("system"):
        lines.append(f"system: {row['system']}")
    lines += ["> " + line for line in (row.get("prompt") or "").splitlines() or [""]]
    for item in row.get("attachments") or []:
        lines.append(f"  [attachment: {item}]")
    if row.get("reasoning"):
        lines.append(f"[reasoning] {row['reasoning']}")
    for call in row.get("tool_calls") or []:
        if isinstance(call, dict):
            lines.append(f"[tool call] {call.get('name')}({call.get('arguments')})")
    if row.get("error"):
        lines.append(f"[error] {row['error']}")
    elif row.get("response") is not None:
        lines.append(row["response"].rstrip("\n"))
    if row.get("finish_reason") == "interrupted":
        lines.append("[interrupted]")
    return "\n".join(lines)
