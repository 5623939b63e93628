"""Server-sent events, decoded from raw bytes. Pure: feed it chunks, read events."""

from __future__ import annotations


class SSEDecoder:
    """Splits a byte stream into ``(event_name, data)`` pairs; ``data`` stays bytes for json.loads."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # Keep a trailing \r: its \n may be the first byte of the next chunk.
            tail = b"\r" if buf.endswith(b"\r") else b""
            if tail:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        if b"\n\n" not in buf:
            self._buf = buf
            return []
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        events: list[tuple[str | None, bytes]] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:  # the common case, inline: one data line
                events.append((None, block[6:]))
            else:
                event = _parse_block(block)
                if event is not None:
                    events.append(event)
        return events

    def close(self) -> list[tuple[str | None, bytes]]:
        """Events left in the buffer when the connection ended without a final blank line."""
        rest, self._buf = self._buf.rstrip(b"\r\n"), b""
        if not rest:
            return []
        event = _parse_block(rest)
        return [event] if event is not None else []


def _parse_block(block: bytes) -> tuple[str | None, bytes] | None:
    if block.startswith(b"data: ") and b"\n" not in block:  # the common case: one data line
        return None, block[6:]
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    if not data and name is None:
        return None
    return name, b"\n".join(data)
