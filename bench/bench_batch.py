"""Batched sampling vs sequential generations: total tokens/s at N samples of one prompt.

    .venv/bin/python bench/bench_batch.py [--n 16] [--tokens 64]

Both sides generate exactly the same number of tokens per sample (EOS ignored, same budgets):
sequential = N calls of generation.decoding.decode; batched = one generation.batch.generate_batch.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generation  # noqa: E402,F401  (OMP_WAIT_POLICY before torch)

import torch  # noqa: E402

from analysis.reasoning import ReasoningFormat
from generation.batch import BatchRow, BatchSettings, generate_batch
from generation.decoding import DecodeOutcome, SamplingConfig, decode
from generation.models import ModelSpec, load_model
from generation.prompting import encode_prompt

PROMPT = "A train travels 60 km in 45 minutes. What is its average speed in km per hour?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64, help="thinking tokens per sample (then a forced answer)")
    parser.add_argument("--answer", type=int, default=8)
    args = parser.parse_args()
    loaded = load_model(ModelSpec())
    fmt = ReasoningFormat(kind="answer_marker")
    cfg = SamplingConfig(temperature=0.7, max_thinking_tokens=args.tokens, max_answer_tokens=args.answer, seed=0)
    ids = encode_prompt(loaded.tokenizer, PROMPT, fmt)
    # Warm-up so neither side pays one-off costs.
    list(decode(loaded.model, loaded.tokenizer, ids, cfg, fmt, threading.Event(), DecodeOutcome(), ignore_eos=True))

    start = time.perf_counter()
    seq_tokens = 0
    for i in range(args.n):
        c = SamplingConfig(cfg.temperature, cfg.top_p, cfg.max_thinking_tokens, cfg.max_answer_tokens, seed=i)
        seq_tokens += sum(1 for _ in decode(loaded.model, loaded.tokenizer, ids, c, fmt, threading.Event(),
                                            DecodeOutcome(), ignore_eos=True))
    seq_s = time.perf_counter() - start

    start = time.perf_counter()
    records = generate_batch(loaded, [BatchRow(PROMPT)] * args.n, fmt, BatchSettings(cfg, ignore_eos=True))
    batch_s = time.perf_counter() - start
    batch_tokens = sum(len(r.tokens) for r in records)

    print(f"torch threads: {torch.get_num_threads()} · model {loaded.name} · prompt {len(ids)} tokens\n")
    print("| mode | samples | tokens | seconds | total tokens/s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| sequential decode() x{args.n} | {args.n} | {seq_tokens} | {seq_s:.1f} | {seq_tokens / seq_s:.1f} |")
    print(f"| generate_batch N={args.n} | {args.n} | {batch_tokens} | {batch_s:.1f} | {batch_tokens / batch_s:.1f} |")
    print(f"\nspeed-up: {(batch_tokens / batch_s) / (seq_tokens / seq_s):.1f}x")


if __name__ == "__main__":
    main()
