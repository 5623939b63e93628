"""Resume and checkpoints: recovering an output file an earlier (killed) run wrote, the
exclusive lock on it, and the append-only writer."""

from __future__ import annotations

import json
import logging
import os
import time

from ..errors import InvalidInputError

logger = logging.getLogger("gen_ai")


def _recover_output(path: str, retry_failed: bool) -> tuple[set[str], int]:
    """Read what an earlier run wrote; repair a half-written last line; drop failed results that
    will be retried. Returns (custom_ids that need no request, number of lines dropped)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return set(), 0
    keep_end = len(data)
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            json.loads(tail)
            whole = True
        except ValueError:
            whole = False
        if whole:  # the record is complete, only its newline is missing
            with open(path, "ab") as f:
                f.write(b"\n")
            data += b"\n"
            keep_end = len(data)
        else:
            logger.warning("gen_ai: %s ends with a half-written line (%d bytes); removed it", path, len(tail))
            with open(path, "r+b") as f:
                f.truncate(cut)
            keep_end = cut
    done: set[str] = set()
    failed_lines: list[int] = []
    bad_lines: list[int] = []
    lines = data[:keep_end].splitlines(keepends=True)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            custom_id = obj["custom_id"]
            ok = obj.get("error") is None
        except (ValueError, KeyError, TypeError, AttributeError):
            bad_lines.append(i)
            continue
        if ok:
            done.add(custom_id)
        elif retry_failed:
            failed_lines.append(i)
        else:
            done.add(custom_id)
    # Failed lines go (their ids are retried; an id that succeeded since keeps its success line).
    drop = set(bad_lines).union(failed_lines)
    if drop:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            for i, raw in enumerate(lines):
                if i not in drop:
                    f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        logger.info("gen_ai: %s: removed %d failed or unreadable result line(s) to retry them", path, len(drop))
    return done, len(drop)


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise InvalidInputError(f"{path} is being written by another running batch",
                                suggestion="Wait for it to finish or pick another output file.",
                                field="output") from None




class _Writer:
    """Appends one result line per ``os.write`` (no user-space buffer to lose on kill -9)."""

    def __init__(self, path: str, fsync: bool) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _lock(self.fd, path)
        self.fsync = fsync
        self._next_sync = 0.0

    def reopen(self) -> None:
        """After recovery replaced the file: write to (and lock) the new one."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self.fd)
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        if self.fsync:
            now = time.monotonic()
            if now >= self._next_sync:  # batched: at most once a second
                os.fsync(self.fd)
                self._next_sync = now + 1.0

    def close(self) -> None:
        try:
            if self.fsync:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)


