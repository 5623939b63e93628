"""The vision API: image inputs, their checks, and what reaches the wire.

Images are made here (Pillow, or bytes built by hand); nothing is downloaded. Wire checks use
the loopback FaultServer, which records every request; bad input must never reach it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import spec_validator
from fault_server import FaultServer, chat_body, chat_chunks
from PIL import Image

from gen_ai import APIStatusError, InvalidInputError, create_client
from gen_ai.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    prepare_messages,
    sniff_media_type,
    split_data_url,
)

ROOT = Path(__file__).resolve().parents[1]


# -- images made by the tests ------------------------------------------------------------------


def pillow_image(fmt: str, size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    img = Image.new("RGB", size, color)
    # A gradient so downscaling and compression have real pixels to work on.
    for x in range(size[0]):
        img.putpixel((x, 0), (x * 7 % 256, 10, 250))
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def hand_png(width: int = 2, height: int = 2) -> bytes:
    """A valid PNG built from the spec, without Pillow."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def hand_gif() -> bytes:
    """The classic 1x1 GIF89a, byte by byte."""
    return (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
            b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


FORMATS = {  # name -> (bytes, media type, Pillow format)
    "png": (pillow_image("PNG"), "image/png", "PNG"),
    "jpeg": (pillow_image("JPEG"), "image/jpeg", "JPEG"),
    "gif": (pillow_image("GIF"), "image/gif", "GIF"),
    "webp": (pillow_image("WEBP"), "image/webp", "WEBP"),
    "hand-png": (hand_png(), "image/png", "PNG"),
    "hand-gif": (hand_gif(), "image/gif", "GIF"),
}


def image_parts_of(body: dict) -> list[dict]:
    return [p for m in body["messages"] if isinstance(m.get("content"), list)
            for p in m["content"] if p.get("type") == "image_url"]


def decoded(part: dict) -> tuple[str, bytes]:
    mime, data = split_data_url(part["image_url"]["url"])
    return mime, base64.b64decode(data, validate=True)


@pytest.fixture(scope="module")
def _shared_server():
    server = FaultServer()
    yield server
    server.close()


@pytest.fixture
def fault_server(_shared_server):
    """One loopback server for the module (closing one costs 0.5 s), emptied for every test."""
    _shared_server.script.clear()
    _shared_server.requests.clear()
    yield _shared_server
    leftover = list(_shared_server.script)
    _shared_server.script.clear()
    assert not leftover, "a scripted answer was never requested"


@pytest.fixture
def loop_client(fault_server):
    c = create_client(provider="openai", endpoint=fault_server.url, model_name="m", max_retries=0,
                      dialect="json_schema")
    yield c
    c.close()


@pytest.fixture
def local_files_client(fault_server):
    """A client that lets image parts inside messages name local files (allow_local_files=True)."""
    c = create_client(provider="openai", endpoint=fault_server.url, model_name="m", max_retries=0,
                      dialect="json_schema", allow_local_files=True)
    yield c
    c.close()


# -- media types --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_media_type_comes_from_magic_bytes(name):
    data, mime, _ = FORMATS[name]
    assert sniff_media_type(data) == mime


def test_unsupported_formats_are_not_sniffed():
    bmp = io.BytesIO()
    Image.new("RGB", (2, 2)).save(bmp, format="BMP")
    for data in (bmp.getvalue(), b"%PDF-1.7", b"RIFF\x00\x00\x00\x00WAVE", b"GIF88a", b""):
        assert sniff_media_type(data) is None


# -- round trip through a real HTTP server -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("kind", ["str-path", "pathlib", "bytes", "data-url", "file-url"])
def test_image_bytes_and_type_round_trip_exactly(name, kind, tmp_path, fault_server, loop_client, openai_spec):
    data, mime, _ = FORMATS[name]
    # The file name lies about the type: the media type must come from the bytes.
    path = tmp_path / "picture.jpg.txt"
    path.write_bytes(data)
    source = {"str-path": str(path), "pathlib": path, "bytes": data,
              "data-url": f"data:{mime};base64," + base64.b64encode(data).decode(),
              "file-url": path.as_uri()}[kind]
    fault_server.add(200, chat_body("a picture"))
    answer = loop_client.run_vision_request("What is in this image?", [source])
    assert answer == "a picture"
    [request] = fault_server.requests
    body = request.json()
    spec_validator(openai_spec, "CreateChatCompletionRequest").validate(body)
    [part] = image_parts_of(body)
    spec_validator(openai_spec, "ChatCompletionRequestMessageContentPartImage").validate(part)
    assert decoded(part) == (mime, data)
    assert body["messages"][0]["content"][0] == {"type": "text", "text": "What is in this image?"}


def test_declared_data_url_type_is_corrected_from_the_bytes(fault_server, loop_client):
    png = FORMATS["png"][0]
    fault_server.add(200, chat_body("ok"))
    loop_client.run_vision_request("x", ["data:image/jpeg;base64," + base64.b64encode(png).decode()])
    [part] = image_parts_of(fault_server.requests[0].json())
    assert decoded(part) == ("image/png", png)


def test_several_images_keep_their_order_and_detail(tmp_path, fault_server, loop_client, openai_spec):
    sources = [FORMATS[n][0] for n in ("jpeg", "png", "gif", "webp")]
    fault_server.add(200, chat_body("four"))
    loop_client.run_vision_request("Compare.", sources, detail="low")
    parts = image_parts_of(fault_server.requests[0].json())
    assert [decoded(p) for p in parts] == [(FORMATS[n][1], FORMATS[n][0]) for n in ("jpeg", "png", "gif", "webp")]
    assert [p["image_url"]["detail"] for p in parts] == ["low"] * 4
    validator = spec_validator(openai_spec, "ChatCompletionRequestMessageContentPartImage")
    for p in parts:
        validator.validate(p)


def test_http_url_is_passed_on_not_downloaded(fault_server, loop_client):
    # The image URL points at the same server: a download would show up as a second request.
    url = f"http://127.0.0.1:{fault_server.port}/cat.png?size=large"
    fault_server.add(200, chat_body("a cat"))
    loop_client.run_vision_request("What animal?", [url, "https://example.com/dog.jpg"], detail="high")
    assert len(fault_server.requests) == 1
    parts = image_parts_of(fault_server.requests[0].json())
    assert parts == [{"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                     {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg", "detail": "high"}}]


# -- where the images go -------------------------------------------------------------------------


def test_images_attach_to_the_last_user_message_without_changing_the_callers(fault_server, loop_client):
    messages = [
        {"role": "system", "content": "You describe images."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, send me a picture."},
        {"role": "user", "content": [{"type": "text", "text": "Here it is; what color is it?"}]},
    ]
    before = copy.deepcopy(messages)
    png = FORMATS["png"][0]
    fault_server.add(200, chat_body("red"))
    assert loop_client.run_vision_request(messages, [png]) == "red"
    assert messages == before
    sent = fault_server.requests[0].json()["messages"]
    assert sent[:3] == before[:3]
    assert sent[3]["content"][0] == {"type": "text", "text": "Here it is; what color is it?"}
    assert decoded(sent[3]["content"][1]) == ("image/png", png)


def test_string_content_of_last_user_message_becomes_a_text_part(fault_server, loop_client):
    messages = [{"role": "user", "content": "First"}, {"role": "assistant", "content": "ok"}]
    fault_server.add(200, chat_body("ok"))
    loop_client.run_vision_request(messages, [FORMATS["gif"][0]])
    sent = fault_server.requests[0].json()["messages"]
    assert sent[0]["content"][0] == {"type": "text", "text": "First"}
    assert decoded(sent[0]["content"][1])[0] == "image/gif"
    assert sent[1] == {"role": "assistant", "content": "ok"}


def test_a_user_message_is_created_when_there_is_none(fault_server, loop_client):
    fault_server.add(200, chat_body("ok"))
    loop_client.run_vision_request([{"role": "system", "content": "Describe."}], [FORMATS["webp"][0]])
    sent = fault_server.requests[0].json()["messages"]
    assert sent[0] == {"role": "system", "content": "Describe."}
    assert sent[1]["role"] == "user"
    assert [decoded(p)[0] for p in sent[1]["content"]] == ["image/webp"]


def test_image_parts_inside_chat_messages_are_prepared(tmp_path, fault_server, local_files_client, openai_spec):
    loop_client = local_files_client
    jpeg, png, gif = FORMATS["jpeg"][0], FORMATS["png"][0], FORMATS["gif"][0]
    (tmp_path / "a").write_bytes(jpeg)
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": str(tmp_path / "a"), "detail": "low"}},
        {"type": "image_url", "image_url": {"url": png}},
        {"type": "input_image", "image_url": (tmp_path / "a").as_uri()},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(gif).decode()}},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.webp"}},
    ]}]
    before = copy.deepcopy(messages)
    fault_server.add(200, chat_body("done"))
    assert loop_client.run_chat_completions(messages) == "done"
    assert messages == before
    body = fault_server.requests[0].json()
    spec_validator(openai_spec, "CreateChatCompletionRequest").validate(body)
    parts = image_parts_of(body)
    assert [decoded(p) for p in parts[:4]] == [("image/jpeg", jpeg), ("image/png", png), ("image/jpeg", jpeg),
                                               ("image/gif", gif)]
    assert parts[0]["image_url"]["detail"] == "low"
    assert parts[4] == {"type": "image_url", "image_url": {"url": "https://example.com/x.webp"}}


def test_image_parts_inside_messages_work_when_streaming(fault_server, loop_client):
    fault_server.add(200, chunks=chat_chunks(["a ", "dot"]))
    stream = loop_client.run_chat_completions_stream(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": FORMATS["png"][0]}}]}])
    assert "".join(stream) == "a dot"
    assert decoded(image_parts_of(fault_server.requests[0].json())[0]) == ("image/png", FORMATS["png"][0])


def test_prepare_messages_returns_new_dicts_and_passes_prepared_parts_unchanged():
    png = FORMATS["png"][0]
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png}}]}]
    out = prepare_messages(messages)
    assert out[0] is not messages[0] and messages[0]["content"][0]["image_url"]["url"] is png
    again = prepare_messages(out)
    assert again == out
    url = out[0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")


# -- bad input: one error naming every bad image, nothing sent ---------------------------------------


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("just some text, not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "doc.png").write_bytes(b"%PDF-1.4\n...")
    (tmp_path / "dir.png").mkdir()
    big = tmp_path / "big.png"
    with open(big, "wb") as f:  # sparse: 21 MB on paper, a few bytes on disk
        f.write(FORMATS["png"][0])
        f.truncate(DEFAULT_MAX_IMAGE_BYTES + 1024 * 1024)
    # root may read any chmod-000 file; reading /proc/self/mem at offset 0 always fails (EIO).
    return [
        (str(tmp_path / "missing.png"), "file not found"),
        (str(tmp_path / "dir.png"), "is a directory"),
        ("/proc/self/mem", "cannot be read"),
        (str(tmp_path / "notes.txt"), "is not a supported image"),
        (str(tmp_path / "doc.png"), "looks like a PDF document"),
        (str(tmp_path / "empty.png"), "is empty"),
        (str(big), "over the 20.0 MB limit"),
        (b"", "is empty"),
        (b"BM\x00\x00not really", "looks like a BMP image"),
        ("data:image/png;base64,@@not base64@@", "base64 data is invalid"),
        ("ftp://example.com/a.png", "unsupported URL scheme"),
        (42, "is of type int"),
    ]


def test_every_bad_image_is_listed_in_one_error_and_nothing_is_sent(bad_inputs, fault_server, loop_client):
    good = FORMATS["png"][0]
    sources = [good] + [source for source, _ in bad_inputs]
    with pytest.raises(InvalidInputError) as info:
        loop_client.run_vision_request("Describe.", sources)
    err = info.value
    assert err.field == "image_paths"
    lines = err.message.splitlines()
    assert lines[0] == f"image_paths: {len(bad_inputs)} of {len(sources)} images cannot be used:"
    assert len(lines) == 1 + len(bad_inputs)
    for i, (line, (source, reason)) in enumerate(zip(lines[1:], bad_inputs), start=1):
        assert line.startswith(f"  image_paths[{i}] "), line
        assert reason in line, (reason, line)
    assert "JPEG, PNG, GIF or WebP" in str(err)
    assert fault_server.requests == []


def test_each_bad_image_alone_raises_before_the_network(bad_inputs, fault_server, loop_client):
    for source, reason in bad_inputs:
        with pytest.raises(InvalidInputError, match=reason.replace(".", r"\.")):
            loop_client.run_vision_request("Describe.", [source])
        result, error = loop_client.run_vision_request("Describe.", [source], return_error=True)
        assert result is None and error["type"] == "InvalidInputError" and reason in error["message"]
    assert fault_server.requests == []


def test_return_error_lists_every_bad_path(bad_inputs, fault_server, loop_client):
    result, error = loop_client.run_vision_request("Describe.", [s for s, _ in bad_inputs], return_error=True)
    assert result is None
    assert error["type"] == "InvalidInputError" and error["field"] == "image_paths"
    for source, reason in bad_inputs:
        assert reason in error["message"]
    assert str(bad_inputs[0][0]) in error["message"] and "/proc/self/mem" in error["message"]
    assert fault_server.requests == []


@pytest.mark.parametrize("image_paths, words", [
    ([], "is empty"),
    ("photo.png", "Wrap it in a list: image_paths=['photo.png']"),
    (Path("photo.png"), "Wrap it in a list"),
    (FORMATS["png"][0], "must be a list"),
    (None, "must be a list"),
])
def test_image_paths_must_be_a_non_empty_list(image_paths, words, fault_server, loop_client):
    with pytest.raises(InvalidInputError) as info:
        loop_client.run_vision_request("Describe.", image_paths)
    assert words in str(info.value) and info.value.field == "image_paths"
    _, error = loop_client.run_vision_request("Describe.", image_paths, return_error=True)
    assert words in error["message"] + error["suggestion"]
    stream = loop_client.run_vision_request("Describe.", image_paths, stream=True, return_error=True)
    assert list(stream) == [] and stream.error["type"] == "InvalidInputError"
    assert fault_server.requests == []


@pytest.mark.parametrize("options, field", [
    ({"detail": "medium"}, "detail"),
    ({"max_image_side": 0}, "max_image_side"),
    ({"max_image_bytes": 0}, "max_image_bytes"),
])
def test_bad_vision_options(options, field, fault_server, loop_client):
    with pytest.raises(InvalidInputError) as info:
        loop_client.run_vision_request("x", [FORMATS["png"][0]], **options)
    assert info.value.field == field
    assert fault_server.requests == []


def test_bad_images_inside_chat_messages_are_all_listed(tmp_path, fault_server, local_files_client):
    loop_client = local_files_client
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": str(tmp_path / "nope.jpg")}},
        {"type": "image_url", "image_url": {"url": FORMATS["png"][0], "detail": "ultra"}},
        {"type": "text", "text": "and"},
        {"type": "image_url", "image_url": {"url": b"plain text"}},
        {"type": "image_url", "image_url": {}},
    ]}]
    for call in (lambda: loop_client.run_chat_completions(messages),
                 lambda: list(loop_client.run_chat_completions_stream(messages))):
        with pytest.raises(InvalidInputError) as info:
            call()
        lines = info.value.message.splitlines()
        assert lines[0] == "messages: 4 of 4 images cannot be used:"
        assert "messages[0].content[0]" in lines[1] and "file not found" in lines[1]
        assert "messages[0].content[1]" in lines[2] and "'ultra'" in lines[2]
        assert "messages[0].content[3]" in lines[3] and "not a supported image" in lines[3]
        assert "messages[0].content[4]" in lines[4] and "no 'url'" in lines[4]
    assert fault_server.requests == []


def test_bad_images_in_prompt_messages_and_image_paths_share_one_error(tmp_path, fault_server, loop_client):
    prompt = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(tmp_path / "a.png")}}]}]
    with pytest.raises(InvalidInputError) as info:
        loop_client.run_vision_request(prompt, [str(tmp_path / "b.png")])
    message = info.value.message
    assert "2 of 2 images" in message and "a.png" in message and "b.png" in message
    assert fault_server.requests == []


def test_size_limit_is_configurable(fault_server, loop_client):
    data = FORMATS["png"][0]
    with pytest.raises(InvalidInputError, match="over the .* limit"):
        loop_client.run_vision_request("x", [data], max_image_bytes=len(data) - 1)
    assert fault_server.requests == []
    fault_server.add(200, chat_body("ok"))
    assert loop_client.run_vision_request("x", [data], max_image_bytes=len(data)) == "ok"


def test_large_image_allowed_by_a_raised_limit_is_not_rechecked_against_the_default(tmp_path, fault_server,
                                                                                    loop_client):
    data = FORMATS["png"][0] + b"\x00" * (DEFAULT_MAX_IMAGE_BYTES + 10)
    fault_server.add(200, chat_body("big"))
    assert loop_client.run_vision_request("x", [data], max_image_bytes=DEFAULT_MAX_IMAGE_BYTES * 2) == "big"
    assert decoded(image_parts_of(fault_server.requests[0].json())[0]) == ("image/png", data)


# -- downscaling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["png", "jpeg", "gif", "webp"])
def test_downscaling_keeps_format_and_aspect(name, fault_server, loop_client):
    fmt = FORMATS[name][2]
    big = pillow_image(fmt, size=(400, 200))
    small = pillow_image(fmt, size=(40, 20))
    fault_server.add(200, chat_body("ok"))
    loop_client.run_vision_request("x", [big, small], max_image_side=100)
    parts = image_parts_of(fault_server.requests[0].json())
    mime, data = decoded(parts[0])
    assert mime == FORMATS[name][1]
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == fmt and img.size == (100, 50)
    assert decoded(parts[1]) == (mime, small)  # already small enough: sent byte for byte


def test_downscaling_can_bring_a_big_file_under_the_limit(tmp_path, fault_server, loop_client):
    path = tmp_path / "big.png"
    path.write_bytes(pillow_image("PNG", size=(300, 300)))
    limit = path.stat().st_size - 1
    with pytest.raises(InvalidInputError, match="limit"):
        loop_client.run_vision_request("x", [path], max_image_bytes=limit)
    fault_server.add(200, chat_body("ok"))
    assert loop_client.run_vision_request("x", [path], max_image_bytes=limit, max_image_side=50) == "ok"


def test_pillow_is_only_needed_for_downscaling():
    # A fresh interpreter where `import PIL` fails: plain images work, max_image_side explains.
    code = f"""
import sys
sys.modules["PIL"] = None
from gen_ai.images import image_parts
from gen_ai.errors import ConfigurationError
png = {FORMATS["png"][0]!r}
assert image_parts([png])[0]["image_url"]["url"].startswith("data:image/png;base64,")
try:
    image_parts([png], max_image_side=4)
except ConfigurationError as exc:
    print("ERR", exc.field, exc)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERR max_image_side") and "Pillow" in out.stdout and "gen_ai[images]" in out.stdout


def test_vision_does_not_import_pillow_unless_downscaling():
    code = """
import sys
import gen_ai.images as images
images.image_parts([b"GIF89a" + bytes(20)])
print("PIL" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.stdout.strip() == "False", out.stderr


# -- the documented examples, on loopback ----------------------------------------------------------


def test_example_basic_description(tmp_path, fault_server, loop_client):
    path = tmp_path / "screenshot.png"
    path.write_bytes(FORMATS["png"][0])
    fault_server.add(200, chat_body("A small red rectangle."))
    description = loop_client.run_vision_request("Describe this image in one sentence.", [path], max_tokens=64)
    assert description == "A small red rectangle."
    assert description.usage.total_tokens == 7
    assert fault_server.requests[0].json()["max_tokens"] == 64


def test_example_structured_image_analysis(tmp_path, fault_server, loop_client, openai_spec):
    from pydantic import BaseModel, Field

    class ImageAnalysis(BaseModel):
        description: str = Field(..., description="What the image shows")
        objects: list[str]
        dominant_color: str

    answer = '{"description": "a red square", "objects": ["square"], "dominant_color": "red"}'
    fault_server.add(200, chat_body(answer))
    result = loop_client.run_vision_request("Analyse this image.", [FORMATS["jpeg"][0]],
                                            guided_json=ImageAnalysis, max_tokens=200)
    assert isinstance(result.parsed, ImageAnalysis)
    assert result.parsed.dominant_color == "red" and result.parsed.objects == ["square"]
    body = fault_server.requests[0].json()
    spec_validator(openai_spec, "CreateChatCompletionRequest").validate(body)
    assert body["response_format"]["type"] == "json_schema"
    assert decoded(image_parts_of(body)[0])[0] == "image/jpeg"


def test_example_chat_with_images(fault_server, loop_client):
    before, after = FORMATS["jpeg"][0], FORMATS["webp"][0]
    messages = [{"role": "system", "content": "You compare photos."},
                {"role": "user", "content": "I will send two photos of my garden."},
                {"role": "assistant", "content": "Please send them."},
                {"role": "user", "content": "Before and after: what changed?"}]
    fault_server.add(200, chat_body("The flowers bloomed."))
    reply = loop_client.run_vision_request(messages, [before, after], detail="auto")
    messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": "Which one is brighter?"})
    fault_server.add(200, chat_body("The second."))
    assert loop_client.run_chat_completions(messages) == "The second."
    first, second = (r.json()["messages"] for r in fault_server.requests)
    assert [decoded(p) for p in image_parts_of({"messages": first})] == [("image/jpeg", before),
                                                                        ("image/webp", after)]
    assert image_parts_of({"messages": second}) == []  # images were only in the first turn's copy
    assert second[-2:] == [{"role": "assistant", "content": "The flowers bloomed."},
                           {"role": "user", "content": "Which one is brighter?"}]


def test_example_streaming(fault_server, loop_client, openai_spec):
    fault_server.add(200, chunks=chat_chunks(["A ", "red ", "square."]))
    stream = loop_client.run_vision_request("Describe this image.", [FORMATS["png"][0]], stream=True)
    assert list(stream) == ["A ", "red ", "square."]
    assert stream.text == "A red square." and stream.finish_reason == "stop"
    body = fault_server.requests[0].json()
    assert body["stream"] is True
    spec_validator(openai_spec, "CreateChatCompletionRequest").validate(body)
    assert decoded(image_parts_of(body)[0]) == ("image/png", FORMATS["png"][0])


def test_async_twin(fault_server, loop_client):
    png, gif = FORMATS["png"][0], FORMATS["gif"][0]

    async def main():
        answer = await loop_client.arun_vision_request("Describe.", [png])
        stream = await loop_client.arun_vision_request("Describe.", [gif], stream=True, detail="low")
        deltas = [d async for d in stream]
        with pytest.raises(InvalidInputError):
            await loop_client.arun_vision_request("Describe.", ["/no/such/file.png"])
        _, error = await loop_client.arun_vision_request("Describe.", [b"nope"], return_error=True)
        bad_stream = await loop_client.arun_vision_request("Describe.", [], stream=True, return_error=True)
        bad_deltas = [d async for d in bad_stream]
        await loop_client.aclose()
        return answer, deltas, error, bad_deltas, bad_stream.error

    fault_server.add(200, chat_body("async answer"))
    fault_server.add(200, chunks=chat_chunks(["x", "y"]))
    answer, deltas, error, bad_deltas, bad_error = asyncio.run(main())
    assert answer == "async answer" and deltas == ["x", "y"]
    assert "not a supported image" in error["message"]
    assert bad_deltas == [] and "is empty" in bad_error["message"]
    assert len(fault_server.requests) == 2
    assert decoded(image_parts_of(fault_server.requests[0].json())[0]) == ("image/png", png)
    part = image_parts_of(fault_server.requests[1].json())[0]
    assert decoded(part) == ("image/gif", gif) and part["image_url"]["detail"] == "low"


def test_server_rejection_of_images_is_reported(fault_server, loop_client):
    # What OpenAI answers a text-only model that gets an image.
    fault_server.add(400, {"error": {"message": "Invalid content type. image_url is only supported by certain "
                                                "models.", "type": "invalid_request_error", "param": "messages"}})
    result, error = loop_client.run_vision_request("x", [FORMATS["png"][0]], return_error=True)
    assert result is None and error["type"] == "BadRequestError" and "image_url" in error["message"]


# -- the real llama-cpp-python server ---------------------------------------------------------------


def test_real_text_only_server_rejects_images_honestly(llama_server, tmp_path):
    """SmolLM2 on llama-cpp-python has no vision handler: its chat template cannot take a list of
    content parts and the server answers 500. gen_ai must send a well-formed request and report
    the server's answer, not invent a description."""
    path = tmp_path / "shot.png"
    path.write_bytes(pillow_image("PNG", size=(16, 16)))
    with create_client(provider="openai", endpoint=llama_server, model_name="smollm2", max_retries=0) as c:
        result, error = c.run_vision_request("Describe this image.", [path], max_tokens=8, return_error=True)
        assert result is None
        assert error["status_code"] == 500 and error["type"] == "ServerError"
        assert "list" in error["message"]  # the template's "can only concatenate str (not "list")"
        with pytest.raises(APIStatusError):
            c.run_vision_request("Describe this image.", ["https://example.com/a.png"], max_tokens=8)
        stream = c.run_vision_request("Describe this image.", [path], max_tokens=8, stream=True, return_error=True)
        assert list(stream) == [] and stream.error is not None
        # The same server still answers text: the failure is about the image, not the call.
        assert isinstance(c.run_chat_completions([{"role": "user", "content": "Hi"}], max_tokens=4), str)


def test_real_server_is_never_reached_on_bad_input(llama_server, tmp_path):
    with create_client(provider="openai", endpoint=llama_server, model_name="smollm2", max_retries=0) as c:
        with pytest.raises(InvalidInputError) as info:
            c.run_vision_request("Describe.", [tmp_path / "none.png", tmp_path])
        assert "file not found" in info.value.message and "is a directory" in info.value.message



def test_errors_stay_short_and_never_echo_image_data(fault_server):
    huge_data_url = "data:image/png;base64," + base64.b64encode(b"not an image " * 50_000).decode()
    with create_client(provider="openai", endpoint=fault_server.url, model_name="m",
                       api_key="sk-vision-secret-123456") as c:
        result, error = c.run_vision_request("x", [huge_data_url, b"\x00" * 100_000], return_error=True)
    assert result is None
    assert len(error["message"]) < 600 and "sk-vision-secret" not in str(error)
    assert "data:image/png;base64,bm90IGFu" in error["message"]  # a short, recognisable prefix
    assert fault_server.requests == []
