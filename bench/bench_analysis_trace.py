"""MI + logit-lens DTR + confidence on a trace of the embedded model, against the time to generate it.

    .venv/bin/python bench/bench_analysis_trace.py [--tokens 1000] [--growth 250,500,1000,2000,4000]
    .venv/bin/python bench/bench_analysis_trace.py --precision-only   # lens error on the sample traces

1. Generates a ~N-token trace (ignore_eos, greedy-free sampling at the app defaults) and times it.
2. Analyses it with generation.analyze.analyze_trace (bfloat16 and float32 logit lens) and reports
   analysis / generation time (target <= 0.25) with a per-stage breakdown.
3. Growth: analyses traces of 250..4000 tokens. Longer traces reuse the generated token ids,
   repeated (generating 4,000 tokens here would take minutes; the cost depends on length, not content).
4. Precision: the raw (unrefined) logit-lens JSD with bfloat16 output logits (the lens before issue 10)
   and with bfloat16 inputs and float32 output (now), against the float32 lens, on real traces.
Prints markdown tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generation  # noqa: F401,E402  (sets OMP_WAIT_POLICY before torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from analysis.records import TokenColumns  # noqa: E402
from analysis.trace_signals import AnalysisSettings  # noqa: E402
from generation.analyze import analyze_trace  # noqa: E402
from generation.decoding import SamplingConfig  # noqa: E402
from generation.models import ModelSpec, load_model  # noqa: E402
from generation.prompting import detect_format  # noqa: E402
from generation.streaming import GenerationRequest, LiveGeneration  # noqa: E402

STAGES = ("Forward", "Mutual", "Logit", "Done")


def timed_analysis(loaded, record, settings):
    marks = {}
    start = time.perf_counter()

    def progress(_fraction, message):
        marks.setdefault(message.split()[0], time.perf_counter() - start)

    analysis = analyze_trace(loaded, record, settings, progress)
    total = time.perf_counter() - start
    stage = {
        "forward": marks["Mutual"] - marks["Forward"],
        "mi": marks["Logit"] - marks["Mutual"],
        "lens+conf": marks["Done"] - marks["Logit"],
    }
    return analysis, total, stage


def extended(record, n_tokens: int):
    """The record with its token columns tiled (or cut) to n_tokens; ids stay valid for the model."""
    cols = record.tokens
    reps = -(-n_tokens // len(cols))
    idx = np.tile(np.arange(len(cols)), reps)[:n_tokens]
    new = TokenColumns(
        token_id=cols.token_id[idx], text=[cols.text[i] for i in idx], logprob=cols.logprob[idx],
        entropy=cols.entropy[idx], top_ids=cols.top_ids[idx], top_texts=[cols.top_texts[i] for i in idx],
        top_logprobs=cols.top_logprobs[idx], phase=np.zeros(n_tokens, np.int8),
    )
    return dataclasses.replace(record, tokens=new)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--growth", default="250,500,1000,2000,4000")
    parser.add_argument("--growth-only", action="store_true", help="skip the ratio table (generates --tokens, tiles it)")
    parser.add_argument("--precision-only", action="store_true", help="only the lens error on sample_data/traces.jsonl")
    parser.add_argument("--traces", type=int, default=20, help="how many sample traces --precision-only uses")
    args = parser.parse_args()
    loaded = load_model(ModelSpec())
    print(f"torch threads: {torch.get_num_threads()} · cpus: {os.cpu_count()} · model: {loaded.name}\n")
    if args.precision_only:
        return lens_precision(loaded, sample_records(loaded)[: args.traces])

    fmt = detect_format(loaded.tokenizer)
    sampling = SamplingConfig(0.7, 0.95, args.tokens - 40, 40, 0)
    request = GenerationRequest("A train leaves at 3 pm at 60 km/h; another at 4 pm at 80 km/h. When does the second catch up?",
                                sampling, fmt, "7 pm")
    with LiveGeneration(loaded, request, ignore_eos=True) as live:
        for _ in live.events():
            pass
    record = live.finished.record
    gen_s, n = record.latency_s, len(record.tokens)
    print(f"generated {n} tokens in {gen_s:.1f} s ({1000 * gen_s / n:.1f} ms/token)\n")

    if args.growth_only:
        return growth(loaded, record, args.growth)
    print("| lens matmul | tokens | forward s | MI s | lens + confidence s | analysis s | analysis / generation |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for dtype in ("bfloat16", "float32"):
        results[dtype], total, stage = timed_analysis(loaded, record, AnalysisSettings(lens_dtype=dtype))
        print(f"| {dtype} | {n} | {stage['forward']:.2f} | {stage['mi']:.2f} | {stage['lens+conf']:.2f} | "
              f"{total:.2f} | **{total / gen_s:.3f}** |", flush=True)
    precision_report(results["bfloat16"], results["float32"])
    lens_precision(loaded, [record])
    lens_side_by_side(loaded, record)
    growth(loaded, record, args.growth)


def precision_report(fast, exact) -> None:
    """What the bfloat16 unembedding changes against the float32 one, on the same trace."""
    a, b = fast.tokens, exact.tokens
    diff = np.abs(a.jsd_lt - b.jsd_lt)
    same_depth = float(np.mean(a.settling_depth == b.settling_depth))
    within_one = float(np.mean(np.abs(a.settling_depth - b.settling_depth) <= 1))
    print(f"\nbfloat16 vs float32 lens on this trace: JSD max |diff| {diff.max():.4f} nats, mean {diff.mean():.5f}; "
          f"settling depth equal for {100 * same_depth:.1f}% of tokens, within one layer for {100 * within_one:.1f}%; "
          f"DTR {fast.summary.dtr:.4f} vs {exact.summary.dtr:.4f}; confidence signals identical "
          f"(both float32): {bool(np.array_equal(a.entropy, b.entropy))}", flush=True)
    print("; ".join(note for note in fast.notes if "recomputed" in note), flush=True)


def sample_records(loaded):
    """The shipped sample traces (generated by the embedded model), read through the JSONL importer."""
    import tempfile

    from storage.config import StorageConfig
    from storage.traces import get_trace, list_traces

    root = Path(__file__).resolve().parent.parent
    config = StorageConfig(db_path=Path(tempfile.mkdtemp()) / "bench.duckdb", seed_path=root / "sample_data" / "traces.jsonl")
    ids = list_traces(config, limit=100)["trace_id"].tolist()
    return [r for r in (get_trace(config, i).record for i in ids) if r.model == loaded.name and len(r.tokens)]


def lens_precision(loaded, records) -> None:
    """Raw JSD error of the two bfloat16 lenses against float32, before any float32 refinement."""
    from analysis.logit_lens import jsd_to_final, settling_depth
    from generation.analyze import forced_input
    from generation.hidden_states import LogitLens, teacher_forced_states

    exact, now = LogitLens(loaded.model, torch.float32), LogitLens(loaded.model, torch.bfloat16)

    def before(h):
        # The lens before issue 10: a bf16 GEMM (float32 accumulation) whose output is rounded to bf16.
        # Emulated as now's product rounded on output: CPUs without bf16 units run bf16 GEMMs ~60x
        # slower than float32, and the numbers are the same.
        return now.logits(h).to(torch.bfloat16).float()

    errors = {"bfloat16 output (before)": [], "bfloat16 inputs, float32 output (now)": []}
    depth_diff = {name: 0 for name in errors}
    n_tokens = 0
    for record in records:
        inputs = forced_input(loaded, record)
        states = teacher_forced_states(loaded.model, inputs.prompt_ids, inputs.token_ids).layers_ltd
        final = exact(states[-1])
        ref = jsd_to_final(states, exact.logits, final_logprobs_tv=final, normalized=False)
        n_tokens += ref.shape[1]
        for name, fn in zip(errors, (before, now.logits)):
            got = jsd_to_final(states, fn, final_logprobs_tv=final, normalized=False)
            errors[name].append(np.abs(got - ref).ravel())
            depth_diff[name] += int((settling_depth(got) != settling_depth(ref)).sum())
    print(f"\nraw logit-lens JSD error against float32, {len(records)} traces, {n_tokens} tokens x "
          f"{loaded.model.config.num_hidden_layers} layers (no float32 refinement):\n")
    print("| lens | max abs error (nats) | mean | 99.9th percentile | tokens whose depth differs |")
    print("|---|---|---|---|---|")
    for name, parts in errors.items():
        e = np.concatenate(parts)
        print(f"| {name} | {e.max():.4f} | {e.mean():.5f} | {np.quantile(e, 0.999):.4f} | {depth_diff[name]} |", flush=True)


def lens_side_by_side(loaded, record, reps: int = 2) -> None:
    """The float32 logit-lens JSD of this trace, before (one 32-token chunk size for both the product
    and the JSD, final layer unembedded twice) and after (128-token products, log-softmax and JSD in
    8-row blocks, final layer reused), alternating so both see the same machine load."""
    from analysis import logit_lens
    from generation.analyze import forced_input
    from generation.hidden_states import LogitLens, teacher_forced_states

    inputs = forced_input(loaded, record)
    states = teacher_forced_states(loaded.model, inputs.prompt_ids, inputs.token_ids).layers_ltd
    lens = LogitLens(loaded.model)

    def before():
        logit_lens._JSD_BLOCK_ROWS = 32
        for t0 in range(0, states.shape[1], 32):
            logit_lens.jsd_to_final(states[:, t0:t0 + 32], lens, chunk_tokens=32)
            lens(states[-1, t0:t0 + 32])

    def after():
        logit_lens._JSD_BLOCK_ROWS = 8
        for t0 in range(0, states.shape[1], 128):
            final = lens(states[-1, t0:t0 + 128])
            logit_lens.jsd_to_final(states[:, t0:t0 + 128], lens.logits, chunk_tokens=128, final_logprobs_tv=final,
                                    normalized=False)

    times = {"before": [], "after": []}
    for _ in range(reps):
        for name, fn in (("before", before), ("after", after)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    b, a = min(times["before"]), min(times["after"])
    print(f"\nfloat32 lens JSD over {states.shape[0]} layers x {states.shape[1]} tokens, best of {reps}: "
          f"before {b:.2f} s, after {a:.2f} s: **{b / a:.2f}x** faster\n", flush=True)


def growth(loaded, record, sizes: str) -> None:
    print("\n| tokens | analysis s (default lens: auto) | ms / token | MI s | lens + confidence s |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in sizes.split(",") if s):
        _, total, stage = timed_analysis(loaded, extended(record, size), AnalysisSettings())
        print(f"| {size} | {total:.2f} | {1000 * total / size:.1f} | {stage['mi']:.2f} | {stage['lens+conf']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
