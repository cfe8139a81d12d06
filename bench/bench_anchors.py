"""Thought Anchors rollouts: all N samples of one sentence cut in one batch vs N sequential continuations.

    .venv/bin/python bench/bench_anchors.py [--n 8] [--tokens 48]

Both sides continue the same stored trace from the same cut (the thinking up to a middle sentence,
given as a token prefix, as generation/anchors.py does) and generate exactly the same number of tokens
per sample (EOS ignored, same budgets): sequential = N generate_batch calls of one row each; batched =
one generate_batch call of N rows (the prefix is prefilled once and expanded to the rows).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generation  # noqa: E402,F401  (OMP_WAIT_POLICY before torch)

import torch  # noqa: E402

from analysis.reasoning import ReasoningFormat  # noqa: E402
from generation.anchors import cuts, thinking_head  # noqa: E402
from generation.batch import BatchRow, BatchSettings, generate_batch  # noqa: E402
from generation.decoding import SamplingConfig  # noqa: E402
from generation.models import ModelSpec, load_model  # noqa: E402

PROMPT = "A train travels 60 km in 45 minutes. What is its average speed in km per hour?"
THINKING = ("The train covers 60 km. It takes 45 minutes, which is 0.75 hours. Speed is distance divided by "
            "time. So the speed is 60 / 0.75. That equals 80 km per hour. Let me check: 80 times 0.75 is 60.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=8, help="samples of the cut (N)")
    parser.add_argument("--tokens", type=int, default=48, help="new thinking tokens per sample (then a forced answer)")
    parser.add_argument("--answer", type=int, default=8)
    args = parser.parse_args()
    loaded = load_model(ModelSpec())
    fmt = ReasoningFormat(kind="answer_marker")
    steps, all_cuts = cuts(THINKING)
    cut = all_cuts[len(steps) // 2]
    ids = tuple(loaded.tokenizer(thinking_head(fmt) + THINKING[:cut.char], add_special_tokens=False)["input_ids"])

    def settings(seed: int) -> BatchSettings:
        return BatchSettings(SamplingConfig(0.7, 0.95, len(ids) + args.tokens, args.answer, seed), ignore_eos=True)

    row = BatchRow(PROMPT, prefix_ids=ids)
    generate_batch(loaded, [row], fmt, settings(0))  # warm-up: neither side pays one-off costs

    start = time.perf_counter()
    seq_tokens = sum(len(generate_batch(loaded, [row], fmt, settings(i))[0].tokens) for i in range(args.n))
    seq_s = time.perf_counter() - start

    start = time.perf_counter()
    batch_tokens = sum(len(r.tokens) for r in generate_batch(loaded, [row] * args.n, fmt, settings(0)))
    batch_s = time.perf_counter() - start

    print(f"torch threads: {torch.get_num_threads()} · model {loaded.name} · cut before sentence {cut.index} "
          f"of {len(steps)} · prefix {len(ids)} tokens\n")
    print("| mode | samples | tokens | seconds | total tokens/s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| sequential, {args.n} x 1 row | {args.n} | {seq_tokens} | {seq_s:.1f} | {seq_tokens / seq_s:.1f} |")
    print(f"| batched, 1 x {args.n} rows | {args.n} | {batch_tokens} | {batch_s:.1f} | {batch_tokens / batch_s:.1f} |")
    print(f"\nratio (batched / sequential tokens/s): {(batch_tokens / batch_s) / (seq_tokens / seq_s):.2f}x")


if __name__ == "__main__":
    main()
