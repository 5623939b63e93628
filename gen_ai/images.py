"""Vision inputs: image parts inside chat messages.

Contract for provider codecs: after ``prepare_messages`` every image part in a message is an
OpenAI-style part ``{"type": "image_url", "image_url": {"url": URL, "detail"?: ...}}`` where URL
is either ``data:<mime>;base64,<data>`` or an ``http(s)://`` URL. Codecs that need raw bytes
call ``split_data_url``.

What users may give as an image (to ``run_vision_request`` or inside a message part):

    local path          str or pathlib.Path ("~" is expanded), or a file:// URL
    http(s) URL         passed on as a URL; gen_ai never downloads it
    data: URL           base64 data URL; decoded to check it, media type corrected from its bytes
    raw bytes           bytes / bytearray / memoryview of a JPEG, PNG, GIF or WebP file

The media type always comes from the image's own first bytes (magic numbers), never from a file
name or a declared type. Every problem with every image is collected and reported in a single
``InvalidInputError`` before anything is sent.

Local files: ``run_vision_request``'s ``image_paths`` are read from the local disk (that is what
they are for). An image part *inside chat messages* is read from the disk only when the client
was created with ``allow_local_files=True``: messages often carry text from other people (a
service relaying its users' messages), and a path in them must not let those people read the
server's files. Error messages never quote a file's contents.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ConfigurationError, InvalidInputError

logger = logging.getLogger("gen_ai")

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DETAILS = ("auto", "low", "high")
# media type -> (display name, Pillow format name)
SUPPORTED = {
    "image/jpeg": ("JPEG", "JPEG"),
    "image/png": ("PNG", "PNG"),
    "image/gif": ("GIF", "GIF"),
    "image/webp": ("WebP", "WEBP"),
}
SUPPORTED_NAMES = "JPEG, PNG, GIF or WebP"
# Formats people often try; naming them makes the error actionable.
_KNOWN_OTHERS = (
    (b"%PDF", "a PDF document"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"PK\x03\x04", "a ZIP archive"),
)
_IMAGE_PART_TYPES = ("image_url", "image", "input_image")


class _Bad(Exception):
    """One image's problem; collected, then reported together."""


class _CheckedPart(dict):  # type: ignore[type-arg]
    """An image part gen_ai built and checked itself. ``prepare_messages`` passes it on without
    decoding it again (and without re-applying default limits the caller overrode) as long as
    its URL is still the one that was checked."""

    __slots__ = ("checked_url",)
    checked_url: str


def _checked_part(url: str, detail: str | None) -> dict[str, Any]:
    image_url: dict[str, Any] = {"url": url}
    if detail is not None:
        image_url["detail"] = detail
    part = _CheckedPart(type="image_url", image_url=image_url)
    part.checked_url = url
    return part


def _is_checked(part: Any) -> bool:
    if type(part) is not _CheckedPart:
        return False
    image_url = part.get("image_url")
    return isinstance(image_url, dict) and image_url.get("url") is part.checked_url


def sniff_media_type(data: bytes | bytearray | memoryview) -> str | None:
    """The media type of an image from its magic bytes, or None if it is not JPEG/PNG/GIF/WebP."""
    head = bytes(data[:12])
    if head[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _unsupported_reason(data: bytes) -> str:
    head = data[:64]
    what = None
    for magic, name in _KNOWN_OTHERS:
        if head.startswith(magic):
            what = name
            break
    if what is None and head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        what = "a HEIC/AVIF image"
    if what is None and head.lstrip().lower().startswith((b"<svg", b"<?xml")):
        what = "an SVG/XML file"
    # Never quote the bytes themselves: they may be a private file's first line.
    shown = f"looks like {what}" if what else "its first bytes match none of these formats"
    return f"is not a supported image ({shown}); supported formats: {SUPPORTED_NAMES}"


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def to_data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


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


# --------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------


def _label(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, str) and source.startswith("data:"):
        return repr(source[:40] + ("..." if len(source) > 40 else ""))
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return f"<{type(source).__name__}>"


def _read_file(path: Path, max_image_bytes: int, resizing: bool) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _Bad("file not found") from None
    except NotADirectoryError:
        raise _Bad("file not found (a parent in the path is not a directory)") from None
    except PermissionError:
        raise _Bad("cannot be read: permission denied") from None
    except OSError as exc:
        raise _Bad(f"cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise _Bad("is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise _Bad("is not a regular file")
    # Refuse early without reading a huge file, unless downscaling may bring it under the limit.
    if not resizing and st.st_size > max_image_bytes:
        raise _Bad(f"is {_size(st.st_size)}, over the {_size(max_image_bytes)} limit (max_image_bytes)")
    try:
        with open(path, "rb") as f:
            return f.read()
    except PermissionError:
        raise _Bad("cannot be read: permission denied") from None
    except OSError as exc:
        raise _Bad(f"cannot be read: {exc.strerror or exc}") from None


def _decode_data_url(url: str) -> bytes:
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise _Bad("is a data URL but not base64-encoded (expected data:<type>;base64,<data>)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("is a data URL whose base64 data is invalid") from None


def _file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _Bad(f"is a file:// URL on another host ({parts.netloc!r}); only local files can be read")
    return Path(unquote(parts.path))


_LOCAL_REFUSED = ("is a local file, and image parts inside messages are not read from the local disk "
                  "unless the client allows it: create_client(..., allow_local_files=True), or pass the "
                  "file in run_vision_request's image_paths, or embed its bytes")


def _load(source: Any, max_image_bytes: int, resizing: bool,
          allow_local: bool = True) -> tuple[bytes | None, str]:
    """-> (image bytes, "") for embedded images, (None, url) for http(s) URLs. Raises _Bad."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), ""
    if isinstance(source, os.PathLike):
        if not allow_local:
            raise _Bad(_LOCAL_REFUSED)
        source = os.fspath(source)
        if isinstance(source, bytes):
            source = os.fsdecode(source)
    if not isinstance(source, str):
        raise _Bad(f"is of type {type(source).__name__}; pass a path, URL, data URL or bytes")
    text = source.strip()
    if not text:
        raise _Bad("is an empty string")
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://")):
        if not urlsplit(text).netloc:
            raise _Bad("is an http(s) URL without a host")
        return None, text
    if lowered.startswith("data:"):
        return _decode_data_url(text), ""
    if lowered.startswith("file://"):
        if not allow_local:
            raise _Bad(_LOCAL_REFUSED)
        return _read_file(_file_url_path(text), max_image_bytes, resizing), ""
    scheme, sep, _ = text.partition("://")
    if sep and scheme.isascii() and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum() \
            and (not allow_local or not os.path.exists(text)):
        raise _Bad(f"has an unsupported URL scheme {scheme + '://'!r}; use http(s)://, data:, "
                   "file:// or a local path")
    if not allow_local:  # checked before touching the disk: not even whether the file exists
        raise _Bad(_LOCAL_REFUSED)
    return _read_file(Path(os.path.expanduser(source)), max_image_bytes, resizing), ""


def _downscale(data: bytes, media_type: str, max_side: int) -> bytes:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigurationError(
            "max_image_side needs Pillow, which is not installed",
            suggestion="pip install 'gen_ai[images]' (or Pillow), or leave max_image_side unset.",
            field="max_image_side",
        ) from None
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            if max(img.size) <= max_side:
                return data
            fmt = SUPPORTED[media_type][1]
            original = img.size
            # thumbnail() on the unloaded image lets JPEG decode at a reduced scale (draft mode):
            # a 5000x4000 photo to 512 px took 300 ms through a full-size copy, 40 ms this way.
            frame: Any = img
            frame.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            if fmt == "JPEG" and frame.mode not in ("RGB", "L", "CMYK"):
                frame = frame.convert("RGB")
            out = io.BytesIO()
            options: dict[str, Any] = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
            frame.save(out, format=fmt, **options)
            logger.debug("gen_ai: image downscaled from %s to %s", original, frame.size)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's ways of saying "corrupt image"
        raise _Bad(f"could not be decoded to downscale it: {exc}") from None


def _to_url(source: Any, max_image_bytes: int, max_image_side: int | None, allow_local: bool = True) -> str:
    """One image source -> a data URL or an http(s) URL. Raises _Bad."""
    data, url = _load(source, max_image_bytes, max_image_side is not None, allow_local)
    if data is None:
        return url
    if not data:
        raise _Bad("is empty (0 bytes)")
    media_type = sniff_media_type(data)
    if media_type is None:
        raise _Bad(_unsupported_reason(data))
    if max_image_side is not None:
        data = _downscale(data, media_type, max_image_side)
    if len(data) > max_image_bytes:
        raise _Bad(f"is {_size(len(data))}, over the {_size(max_image_bytes)} limit (max_image_bytes)")
    if isinstance(source, str) and max_image_side is None:
        text = source.strip()
        if text.startswith(f"data:{media_type};base64,"):
            return text  # already in contract form: avoid re-encoding a large image
        if text[:5].lower() == "data:":
            logger.debug("gen_ai: data URL declared %r but holds %s; corrected", text[5:40], media_type)
    return to_data_url(data, media_type)


def _check_options(max_image_bytes: Any, max_image_side: Any, detail: Any) -> None:
    if not isinstance(max_image_bytes, int) or isinstance(max_image_bytes, bool) or max_image_bytes < 1:
        raise InvalidInputError(f"max_image_bytes: must be a whole number of bytes >= 1, got {max_image_bytes!r}",
                                suggestion="Pass e.g. max_image_bytes=20 * 1024 * 1024.", field="max_image_bytes")
    if max_image_side is not None and (not isinstance(max_image_side, int) or isinstance(max_image_side, bool)
                                       or max_image_side < 1):
        raise InvalidInputError(f"max_image_side: must be a whole number of pixels >= 1, got {max_image_side!r}",
                                suggestion="Pass e.g. max_image_side=1024, or None to send images as they are.",
                                field="max_image_side")
    if detail is not None and detail not in DETAILS:
        raise InvalidInputError(f"detail: must be one of {', '.join(DETAILS)}, got {detail!r}",
                                suggestion="Use detail='low' for cheap, coarse views, 'high' for fine text.",
                                field="detail")


def _report(field: str, problems: list[tuple[str, str]], total: int) -> InvalidInputError:
    lines = "\n".join(f"  {where}: {reason}" for where, reason in problems)
    noun = "image" if total == 1 else "images"
    err = InvalidInputError(
        f"{field}: {len(problems)} of {total} {noun} cannot be used:\n{lines}",
        suggestion=f"Fix or remove the images listed; supported formats: {SUPPORTED_NAMES}. "
                   "Nothing was sent to the server.",
        field=field,
    )
    err.problems = problems  # type: ignore[attr-defined]
    return err


def image_part(source: Any, *, detail: str | None = None, max_image_side: int | None = None,
               max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> dict[str, Any]:
    """One image (path, URL, data URL or bytes) -> an OpenAI image part. Raises InvalidInputError."""
    return image_parts([source], detail=detail, max_image_side=max_image_side,
                       max_image_bytes=max_image_bytes)[0]


def _check_image_paths(image_paths: Any) -> None:
    if not isinstance(image_paths, (list, tuple)):
        kind = type(image_paths).__name__
        raise InvalidInputError(
            f"image_paths: must be a list of images, got a {kind}",
            suggestion=f"Wrap it in a list: image_paths=[{image_paths!r:.80}]." if isinstance(
                image_paths, (str, os.PathLike)) else "Pass a list of paths, URLs, data URLs or bytes.",
            field="image_paths",
        )
    if not image_paths:
        raise InvalidInputError("image_paths: is empty", field="image_paths",
                                suggestion="Pass at least one image, or use run_chat_completions for text only.")


def _parts(image_paths: Sequence[Any], detail: str | None, max_image_side: int | None,
           max_image_bytes: int, problems: list[tuple[str, str]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for i, source in enumerate(image_paths):
        try:
            parts.append(_checked_part(_to_url(source, max_image_bytes, max_image_side), detail))
        except _Bad as bad:
            problems.append((f"image_paths[{i}] {_label(source)}", str(bad)))
    return parts


def image_parts(image_paths: Any, *, detail: str | None = None, max_image_side: int | None = None,
                max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> list[dict[str, Any]]:
    """A list of images -> OpenAI image parts. One InvalidInputError lists every bad image."""
    _check_options(max_image_bytes, max_image_side, detail)
    _check_image_paths(image_paths)
    problems: list[tuple[str, str]] = []
    parts = _parts(image_paths, detail, max_image_side, max_image_bytes, problems)
    if problems:
        raise _report("image_paths", problems, len(image_paths))
    return parts


def vision_messages(prompt: Any, image_paths: Any, *, detail: str | None = None,
                    max_image_side: int | None = None,
                    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
                    allow_local_files: bool = True) -> list[dict[str, Any]]:
    """``prompt`` (text or chat messages) + images -> chat messages, the images attached to the
    last user message (a new user message when there is none). Images already inside the
    prompt's messages are prepared with the same limits. The caller's objects are not changed;
    one InvalidInputError lists every bad image. ``image_paths`` may always be local files;
    image parts inside ``prompt``'s messages only when ``allow_local_files``."""
    _check_options(max_image_bytes, max_image_side, detail)
    if not isinstance(prompt, (str, list, tuple)):
        raise InvalidInputError(f"prompt: must be a string or a list of chat messages, got "
                                f"{type(prompt).__name__}", field="prompt",
                                suggestion='Pass "Describe this image." or [{"role": "user", "content": "..."}].')
    _check_image_paths(image_paths)
    problems: list[tuple[str, str]] = []
    total = len(image_paths)
    messages: list[Any] = []
    if not isinstance(prompt, str):
        messages, in_messages = _prepare(prompt, max_image_bytes, max_image_side, problems, allow_local_files)
        total += in_messages
    parts = _parts(image_paths, detail, max_image_side, max_image_bytes, problems)
    if problems:
        raise _report("image_paths", problems, total)
    if isinstance(prompt, str):
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}] if prompt else []
        return [{"role": "user", "content": content + parts}]
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            old = message.get("content")
            if isinstance(old, str):
                old_parts: list[Any] = [{"type": "text", "text": old}] if old else []
            elif isinstance(old, list):
                old_parts = list(old)
            else:  # None or a wrong type: validate_messages names the problem
                return messages
            messages[i] = {**message, "content": old_parts + parts}
            return messages
    messages.append({"role": "user", "content": parts})
    return messages


# --------------------------------------------------------------------------------------------
# Image parts already inside messages
# --------------------------------------------------------------------------------------------


def _part_source(part: dict[str, Any]) -> tuple[Any, Any]:
    """The image source and detail of any accepted image part shape. Raises _Bad."""
    kind = part.get("type")
    if kind == "image_url" or kind == "input_image":
        value = part.get("image_url")
        if isinstance(value, dict):
            if "url" not in value:
                raise _Bad("image_url has no 'url'")
            return value["url"], value.get("detail", part.get("detail"))
        if value is None:
            raise _Bad("has no 'image_url'; use {\"type\": \"image_url\", \"image_url\": {\"url\": ...}}")
        return value, part.get("detail")
    # {"type": "image", ...}: a bare source, or Anthropic's {"source": {"type": "base64", ...}}
    source = part.get("source")
    if isinstance(source, dict):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return f"data:{source.get('media_type', 'image/png')};base64,{source['data']}", part.get("detail")
        if source.get("type") == "url" and "url" in source:
            return source["url"], part.get("detail")
        raise _Bad("has a 'source' gen_ai does not understand (expected base64 data or a url)")
    for key in ("image", "url", "path", "data"):
        if key in part:
            return part[key], part.get("detail")
    raise _Bad("has no image; use {\"type\": \"image_url\", \"image_url\": {\"url\": ...}}")


def _prepare(messages: Sequence[Any], max_image_bytes: int, max_image_side: int | None,
             problems: list[tuple[str, str]], allow_local: bool) -> tuple[list[Any], int]:
    out: list[Any] = []
    total = 0
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not any(
                isinstance(p, dict) and p.get("type") in _IMAGE_PART_TYPES for p in content):
            out.append(message)
            continue
        new_content: list[Any] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in _IMAGE_PART_TYPES or _is_checked(part):
                new_content.append(part)
                continue
            total += 1
            where = f"messages[{i}].content[{j}]"
            source: Any = None
            try:
                source, detail = _part_source(part)
                if detail is not None and detail not in DETAILS:
                    raise _Bad(f"detail {detail!r} is not one of {', '.join(DETAILS)}")
                new_content.append(_checked_part(_to_url(source, max_image_bytes, max_image_side, allow_local),
                                                 detail))
            except _Bad as bad:
                label = "" if source is None else " " + _label(source)
                problems.append((where + label, str(bad)))
        out.append({**message, "content": new_content})
    return out, total


def prepare_messages(messages: Sequence[dict[str, Any]], *, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
                     max_image_side: int | None = None, allow_local_files: bool = False) -> list[dict[str, Any]]:
    """Turn every image part into the contract form (see the module docstring).

    Bytes become data URLs; data URLs are decoded and checked; http(s) URLs pass unchanged; local
    paths and file:// URLs are read only with ``allow_local_files=True`` (otherwise they are
    reported as bad images, without touching the disk). Returns new message dicts (the caller's
    are not changed); every bad image in every message is listed in one InvalidInputError.
    """
    _check_options(max_image_bytes, max_image_side, None)
    problems: list[tuple[str, str]] = []
    out, total = _prepare(messages, max_image_bytes, max_image_side, problems, allow_local_files)
    if problems:
        raise _report("messages", problems, total)
    return out
