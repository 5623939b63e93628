"""Vision inputs: image parts inside chat messages.

Contract for provider codecs: after ``prepare_messages`` every image part in a message is an
OpenAI-style part ``{"type": "image_url", "image_url": {"url": URL, "detail"?: ...}}`` where URL
is either ``data:<mime>;base64,<data>`` or an ``http(s)://`` URL. Codecs that need raw bytes
call ``split_data_url``.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidInputError


def prepare_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return messages


def split_data_url(url: str) -> tuple[str, str]:
    """``data:image/png;base64,AAAA`` -> ("image/png", "AAAA"). Raises InvalidInputError."""
    if not url.startswith("data:") or ";base64," not in url[:100]:
        raise InvalidInputError(
            f"image URL {url[:60]!r} is not a base64 data URL",
            suggestion="Pass the image as a local path or bytes so gen_ai can embed it.",
            field="image_url",
        )
    header, data = url[5:].split(",", 1)
    return header.split(";", 1)[0], data
