"""provider="local" against llama-cpp-python itself, and `gen-ai chat` time to first token.

    python benchmarks/bench_local.py [--runs 5] [--max-tokens 128]

1. Tokens per second of ``client.run_chat_completions_stream`` (provider "local") versus
   ``Llama.create_chat_completion(stream=True)`` on the same model, prompt and settings (same
   Llama parameters, temperature 0 so both generate the same tokens). Runs alternate between the
   two; the table shows the median of each. Both count generated tokens over the whole call.
2. Time from starting ``python -m gen_ai chat`` (a fresh process: interpreter start, imports,
   model load, prompt) to the first byte of the answer on stdout; median of several runs.

Prints a markdown table. The machine may be shared: compare the ratio, not absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--n-threads", type=int, default=None, help="default: llama-cpp-python's default")
    ap.add_argument("--ttft-runs", type=int, default=5)
    opts = ap.parse_args()

    import llama_cpp

    from gen_ai import create_client
    from gen_ai.providers.local import DEFAULT_REPEAT_PENALTY, default_model_path

    path = str(default_model_path())
    llama_params: dict[str, object] = {"n_ctx": 2048, "seed": 1}
    if opts.n_threads:
        llama_params["n_threads"] = opts.n_threads
    client = create_client(provider="local", **llama_params)
    raw = llama_cpp.Llama(model_path=path, verbose=False, **llama_params)  # type: ignore[arg-type]
    settings = {"max_tokens": opts.max_tokens, "temperature": 0.0, "top_p": 1.0}

    def ours() -> tuple[int, float]:
        start = time.perf_counter()
        stream = client.run_chat_completions_stream(PROMPT, **settings)
        for _ in stream:
            pass
        elapsed = time.perf_counter() - start
        # the same count for both sides: the generated text, tokenized
        return len(raw.tokenize(stream.text.encode(), add_bos=False, special=True)), elapsed

    def theirs() -> tuple[int, float]:
        start = time.perf_counter()
        text = []
        for chunk in raw.create_chat_completion(messages=PROMPT, stream=True,  # type: ignore[union-attr]
                                                repeat_penalty=DEFAULT_REPEAT_PENALTY, **settings):
            content = chunk["choices"][0]["delta"].get("content")  # type: ignore[index]
            if content:
                text.append(content)
        elapsed = time.perf_counter() - start
        tokens = len(raw.tokenize("".join(text).encode(), add_bos=False, special=True))
        return tokens, elapsed

    ours(), theirs()  # warm up: model load, first-call allocations
    rates: dict[str, list[float]] = {"gen_ai local stream": [], "llama-cpp-python stream": []}
    for _ in range(opts.runs):
        for name, fn in (("gen_ai local stream", ours), ("llama-cpp-python stream", theirs)):
            tokens, elapsed = fn()
            rates[name].append(tokens / elapsed)

    ttft: list[float] = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in ("GEN_AI_PROVIDER", "OPENAI_BASE_URL"):
        env.pop(key, None)
    for _ in range(opts.ttft_runs):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "gen_ai", "chat", "Say hello", "--max-tokens", "16"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                env=env, cwd=ROOT)
        assert proc.stdout is not None
        first = proc.stdout.read1(1)
        ttft.append(time.perf_counter() - start)
        proc.stdout.read()
        proc.wait()
        if not first:
            raise SystemExit("gen-ai chat printed nothing")

    ours_med = statistics.median(rates["gen_ai local stream"])
    theirs_med = statistics.median(rates["llama-cpp-python stream"])
    print(f"model: {Path(path).name}, max_tokens={opts.max_tokens}, temperature=0, runs={opts.runs} "
          f"(alternating), load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
    print("| measurement | median | runs |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} tokens/s | "
              f"{', '.join(f'{v:.1f}' for v in values)} |")
    print(f"| ratio gen_ai / llama-cpp-python | {ours_med / theirs_med:.3f}x | target >= 0.95x |")
    print(f"| `gen-ai chat` start to first token | {statistics.median(ttft) * 1000:.0f} ms | "
          f"{', '.join(f'{v * 1000:.0f}' for v in ttft)} ms |")


if __name__ == "__main__":
    main()
