"""Resume and checkpoints: recovering an output file an earlier (killed) run wrote, the
exclusive lock on it, and the append-only writer."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time

from .._speedups import json_codec
from ..errors import InvalidInputError

logger = logging.getLogger("gen_ai")


def _recover_output(path: str, retry_failed: bool) -> tuple[set[str], int]:
    """Read what an earlier run wrote; repair a half-written last line; drop failed results that
    will be retried. Returns (custom_ids that need no request, number of lines dropped).

    The file is streamed line by line (never held whole: a big output costs no memory, and no
    single step holds the GIL long while a batch's event loop waits in another thread)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return set(), 0
    done: set[str] = set()
    drop: set[int] = set()  # failed (to retry) or unreadable lines
    loads = json_codec()[0]
    offset = 0
    tail: str | None = None  # "newline": add the missing newline; "cut": remove the half line
    with f:
        for i, raw in enumerate(f):
            if not raw.endswith(b"\n"):  # the last line, cut short by a crash?
                try:
                    loads(raw)
                    tail = "newline"  # the record is complete, only its newline is missing
                except ValueError:
                    tail = "cut"
                    logger.warning("gen_ai: %s ends with a half-written line (%d bytes); removed it",
                                   path, len(raw))
                    break
            offset += len(raw)
            if not raw.strip():
                continue
            try:
                obj = loads(raw)
                custom_id = obj["custom_id"]
                ok = obj.get("error") is None
            except (ValueError, KeyError, TypeError, AttributeError):
                drop.add(i)
                continue
            if ok or not retry_failed:
                done.add(custom_id)
            else:
                drop.add(i)
    if tail == "newline":
        with open(path, "ab") as fixed:
            fixed.write(b"\n")
    elif tail == "cut":
        with open(path, "r+b") as cut:
            cut.truncate(offset)
    # Failed lines go (their ids are retried; an id that succeeded since keeps its success line).
    if drop:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            for i, raw in enumerate(src):
                if i not in drop:
                    dst.write(raw)
            dst.flush()
            os.fsync(dst.fileno())
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




class _WriterThread:
    """The output file written by one thread, so the event loop never waits on ``write`` or
    ``fsync``. ``submit`` queues a line and returns a future that resolves once the line is in
    the file; a worker awaits it before taking its next item, so at most ``max_concurrent`` items
    (in flight or being written) are ever without a line when the process dies. The thread takes
    every line queued meanwhile and writes them with one ``os.write``."""

    def __init__(self, writer: _Writer, loop: asyncio.AbstractEventLoop) -> None:
        self.writer = writer
        self.loop = loop
        self.queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="gen_ai-batch-writer", daemon=True)
        self.thread.start()

    def submit(self, data: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self.queue.put((data, future))
        return future

    def _run(self) -> None:
        q = self.queue
        stop = False
        while not stop:
            item = q.get()
            batch: list[tuple[bytes, asyncio.Future[None]]] = []
            while True:
                if item is None:
                    stop = True
                else:
                    batch.append(item)
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            error: BaseException | None = None
            try:
                self.writer.write(b"".join(data for data, _ in batch))
            except BaseException as exc:  # reported to the workers waiting for these lines
                error = exc
            try:
                self.loop.call_soon_threadsafe(_settle, [future for _, future in batch], error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def close(self) -> None:
        """Write what is queued, stop the thread, fsync (with ``fsync=True``) and close. Blocking:
        call it in a thread from async code."""
        self.queue.put(None)
        self.thread.join()
        self.writer.close()


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
