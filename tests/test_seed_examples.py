"""Every code example of the seed document runs verbatim against the real server; only the
endpoint and model values are changed."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "chat-completions.md"


def seed_blocks() -> list[str]:
    text = SEED.read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_seed_has_examples():
    assert len(seed_blocks()) >= 5


def test_every_seed_example_runs_verbatim(llama_server):
    namespace: dict = {}
    out = io.StringIO()
    for block in seed_blocks():
        code = block.replace('"https://api.example.com/v1"', repr(llama_server))
        code = code.replace('"gpt-3.5-turbo"', '"smollm2"')
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(SEED), "exec"), namespace)
        if "How does it compare to JavaScript?" in block:
            # The multi-turn example appended the first answer as a message and asked again.
            assert namespace["messages"][-2]["role"] == "assistant"
            assert isinstance(namespace["messages"][-2]["content"], str)
            assert namespace["response"].strip()
    printed = out.getvalue()
    assert printed.strip(), "the examples print the answer and the streamed tokens"
    # The last example returned a structured review.
    import json

    review = json.loads(namespace["response"])
    assert set(review) == {"overall_score", "strengths", "weaknesses", "suggestions"}
    namespace["CodeReview"].model_validate(review)
