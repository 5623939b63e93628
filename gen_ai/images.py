"""Vision inputs: image parts inside chat messages. (Placeholder until the vision issue lands:
image_url parts pass through unchanged.)"""

from __future__ import annotations

from typing import Any


def prepare_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return messages
