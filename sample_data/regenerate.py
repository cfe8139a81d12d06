"""Regenerate the sample data: the prompt set, then one trace per prompt from the embedded model.

    python sample_data/regenerate.py [--samples 1] [--max-thinking 128]

Writes sample_data/prompts.jsonl and sample_data/traces.jsonl (ThinkScope JSONL); a new database
is seeded from the latter. The prompt set is deterministic (fixed seed); the traces are what the
embedded 135M model really produced, mistakes and loops included.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana"]
ITEMS = ["apples", "marbles", "books", "stickers", "pencils", "cookies"]


def make_prompts(seed: int = 2026) -> list[dict]:
    """Arithmetic and word problems in five difficulty levels, each with its reference answer."""
    rng = random.Random(seed)
    prompts: list[dict] = []

    def add(level: int, text: str, answer: int) -> None:
        prompts.append({"id": f"L{level}-{len(prompts) + 1:02d}", "level": level, "prompt": text, "answer": str(answer)})

    for _ in range(4):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        add(1, f"What is {a} + {b}?", a + b)
    for _ in range(4):
        a, b = rng.randint(20, 99), rng.randint(10, 60)
        op = rng.choice(["+", "-"])
        add(2, f"What is {a} {op} {b}?", a + b if op == "+" else a - b)
    for _ in range(4):
        a, b = rng.randint(12, 49), rng.randint(3, 9)
        add(3, f"What is {a} * {b}?", a * b)
    for _ in range(4):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        have, give = rng.randint(10, 30), rng.randint(2, 9)
        add(4, f"{name} has {have} {item} and gives {give} of them to a friend. How many {item} does {name} have left?",
            have - give)
    for _ in range(4):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        boxes, per_box, eaten = rng.randint(3, 6), rng.randint(4, 9), rng.randint(2, 7)
        add(5, f"{name} buys {boxes} boxes with {per_box} {item} in each box, then loses {eaten} {item}. "
               f"How many {item} are left?", boxes * per_box - eaten)
    return prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1, help="traces per prompt")
    parser.add_argument("--max-thinking", type=int, default=128)
    parser.add_argument("--max-answer", type=int, default=32)
    args = parser.parse_args()

    from tqdm import tqdm

    from generation.decoding import SamplingConfig
    from generation.models import ModelSpec, load_model
    from generation.prompting import detect_format
    from generation.streaming import GenerationRequest, generate
    from storage.config import StorageConfig
    from storage.jsonl import export_jsonl
    from storage.traces import save_trace

    prompts = make_prompts()
    (HERE / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    loaded = load_model(ModelSpec())
    fmt = detect_format(loaded.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        config = StorageConfig(db_path=Path(tmp) / "sample.duckdb", seed_path=None)
        jobs = [(p, s) for p in prompts for s in range(args.samples)]
        for index, (prompt, sample) in enumerate(tqdm(jobs, desc="generating sample traces")):
            sampling = SamplingConfig(0.7, 0.95, args.max_thinking, args.max_answer, seed=index)
            request = GenerationRequest(prompt["prompt"], sampling, fmt, prompt["answer"], prompt_source="sample")
            generate(loaded, request, on_finish=lambda record: save_trace(config, record))
        count = export_jsonl(config, HERE / "traces.jsonl")
    print(f"wrote {len(prompts)} prompts and {count} traces to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
