"""Streaming with per-token capture vs bare `model.generate`, same model, prompt and length.

    python bench/bench_streaming.py [--tokens 128] [--repeats 3]

Both sides decode greedily to exactly N new tokens; runs alternate so machine noise hits both.
Reports the throughput ratio (target >= 0.9) and both against this machine's memory-bandwidth floor:
decoding one token at batch 1 reads every weight once, so tokens/s cannot beat
bandwidth / weight bytes. Bandwidth is measured in the same run (a large tensor copy: bytes read
plus bytes written, per second; best of several, as the floor is a ceiling on speed).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from analysis.reasoning import ReasoningFormat  # noqa: E402
from generation.decoding import SamplingConfig  # noqa: E402
from generation.models import ModelSpec, load_model  # noqa: E402
from generation.prompting import encode_prompt  # noqa: E402
from generation.streaming import GenerationRequest, LiveGeneration  # noqa: E402

PROMPT = "Explain step by step how to multiply 23 by 47."


def bare_generate(loaded, prompt_ids: list[int], n: int) -> float:
    ids = torch.tensor([prompt_ids])
    start = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                    do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
    elapsed = time.perf_counter() - start
    assert out.shape[1] - ids.shape[1] == n
    return n / elapsed


def streamed(loaded, fmt: ReasoningFormat, n: int) -> float:
    # Limits far above n: the run is cut at exactly n tokens by stopping, like a user pressing Stop.
    sampling = SamplingConfig(temperature=0.0, max_thinking_tokens=100_000, max_answer_tokens=100_000)
    request = GenerationRequest(PROMPT, sampling, fmt)
    start = time.perf_counter()
    count = 0
    with LiveGeneration(loaded, request, ignore_eos=True) as live:
        for event in live.events():
            count += 1
            if count == n:
                elapsed = time.perf_counter() - start
                live.stop()
                break
    assert count == n
    return n / elapsed


def copy_bandwidth_bytes_per_s(mib: int = 512, repeats: int = 5) -> float:
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        elapsed = time.perf_counter() - start
        best = max(best, 2 * src.numel() * src.element_size() / elapsed)
    return best


def weight_bytes(model) -> int:
    # Tied embeddings share storage: count each tensor once.
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    loaded = load_model(ModelSpec())
    fmt = ReasoningFormat(kind="answer_marker")
    prompt_ids = encode_prompt(loaded.tokenizer, PROMPT, fmt)
    bare_generate(loaded, prompt_ids, 8)  # warm-up
    streamed(loaded, fmt, 8)
    bare, ours = [], []
    for _ in range(args.repeats):
        bare.append(bare_generate(loaded, prompt_ids, args.tokens))
        ours.append(streamed(loaded, fmt, args.tokens))
    b, o = statistics.median(bare), statistics.median(ours)
    bandwidth = copy_bandwidth_bytes_per_s()
    floor = bandwidth / weight_bytes(loaded.model)
    print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s, weights {weight_bytes(loaded.model) / 2**20:.0f} MiB "
          f"({loaded.model.dtype}), floor {floor:.1f} tokens/s, torch threads {torch.get_num_threads()}")
    print(f"| measure | tokens/s (median of {args.repeats}) | of the bandwidth floor |")
    print("|---|---|---|")
    print(f"| bare model.generate, greedy, {args.tokens} tokens | {b:.1f} | {b / floor:.2f} |")
    print(f"| ThinkScope streaming + per-token capture | {o:.1f} | {o / floor:.2f} |")
    print(f"| **ratio** streaming / generate (target >= 0.9) | **{o / b:.2f}** | |")


if __name__ == "__main__":
    main()
