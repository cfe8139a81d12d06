"""Embedded model load: first (GGUF de-quantise + save safetensors) vs later loads from the cache.

    python bench/bench_model_load.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["THINKSCOPE_CACHE"] = cache  # a cold cache, so the first load really converts
        from generation.models import ModelSpec, load_model

        first = load_model(ModelSpec())
        assert first.source.startswith("converted"), first.source
        cached = []
        for _ in range(args.repeats):
            loaded = load_model(ModelSpec())
            assert loaded.source == "safetensors cache"
            cached.append(loaded.load_s)
    c = statistics.median(cached)
    print("| load | seconds |")
    print("|---|---|")
    print(f"| first load (convert GGUF -> safetensors cache) | {first.load_s:.2f} |")
    print(f"| later load from cache (median of {args.repeats}) | {c:.2f} |")
    print(f"| **speed-up** | **{first.load_s / c:.0f}x** |")


if __name__ == "__main__":
    main()
