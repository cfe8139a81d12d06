"""Sweep throughput through an OpenAI-compatible server vs the local batched backend, same model and machine.

    .venv/bin/python bench/bench_server.py [--rows 16] [--tokens 32] [--answer 8] [--concurrency 1,4,16]

One "sweep batch" = `rows` samples of one prompt with a thinking budget of `tokens` and `answer`
answer tokens (answer-marker format, the embedded SmolLM2-135M). Local: one generate_batch call.
Server: `transformers serve` on loopback with the same converted model, the same rows sent as
concurrent chat requests (1, 4, 16 in flight). Servers may stop early at EOS (they cannot be told
to ignore it), so the figure compared is total generated tokens per second, not wall time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generation  # noqa: E402,F401  (OMP_WAIT_POLICY before torch)

from analysis.reasoning import ReasoningFormat  # noqa: E402
from generation.backends.openai_compat import OpenAIBackend, OpenAIConfig  # noqa: E402
from generation.backends.serve import transformers_serve  # noqa: E402
from generation.batch import BatchRow, BatchSettings, generate_batch  # noqa: E402
from generation.decoding import SamplingConfig  # noqa: E402
from generation.models import ModelSpec, embedded_cache_path, load_model  # noqa: E402

PROMPT = "A train travels 60 km in 45 minutes. What is its average speed in km per hour?"


def _run(model, rows, fmt, settings) -> tuple[int, float]:
    start = time.perf_counter()
    records = generate_batch(model, rows, fmt, settings)
    seconds = time.perf_counter() - start
    errors = [r.meta.get("error") for r in records if r.stop_reason == "error"]
    if errors:
        raise SystemExit(f"{len(errors)} rows failed: {errors[0]}")
    return sum(len(r.tokens) for r in records), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="thinking budget per row")
    parser.add_argument("--answer", type=int, default=8)
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    loaded = load_model(ModelSpec())  # also makes sure the converted directory exists
    fmt = ReasoningFormat(kind="answer_marker")
    sampling = SamplingConfig(0.7, 0.95, args.tokens, args.answer, 0)
    rows = [BatchRow(PROMPT)] * args.rows
    settings = BatchSettings(sampling)
    _run(loaded, rows[:2], fmt, settings)  # warm-up
    local_tokens, local_s = _run(loaded, rows, fmt, settings)
    local_rate = local_tokens / local_s
    results = []
    with transformers_serve(embedded_cache_path()) as url:
        for c in levels:
            backend = OpenAIBackend(OpenAIConfig(url, concurrency=c, timeout_s=600))
            _run(backend, rows[:1], fmt, settings)  # warm-up
            tokens, seconds = _run(backend, rows, fmt, settings)
            results.append((c, tokens, seconds))
    print(f"{args.rows} rows · thinking budget {args.tokens} + {args.answer} answer tokens · {loaded.name}\n")
    print("| backend | in flight | tokens | seconds | total tokens/s | vs local batched |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| local generate_batch | {args.rows} (one batch) | {local_tokens} | {local_s:.1f} | {local_rate:.1f} "
          "| 1.00x |")
    for c, tokens, seconds in results:
        rate = tokens / seconds
        print(f"| transformers serve (chat) | {c} | {tokens} | {seconds:.1f} | {rate:.1f} | {rate / local_rate:.2f}x |")


if __name__ == "__main__":
    main()
