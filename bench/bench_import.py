"""Import benchmark: time and peak memory of importing many small traces from one file.

    python bench/bench_import.py [--traces 100000] [--format openai|thinkscope] [--python-heap]

Writes a JSONL file of --traces small traces (OpenAI request/response pairs with reasoning and 8
tokens of log-probabilities, or ThinkScope lines), then imports it in a fresh process and reports
the peak resident memory growth over that process's baseline (after imports, before reading the
file). The same is done with a tenth of the traces: bounded memory means the two peaks are
close, not ten times apart. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_openai(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            pieces = [str(i % 97), " +", " ", str(i % 13), " =", " ", str(i % 97 + i % 13), "."]
            obj = {
                "request": {"model": "bench-model", "messages": [{"role": "user", "content": f"What is {i % 97} + {i % 13}? #{i}"}]},
                "response": {"model": "bench-model", "created": 1732780800 + i, "choices": [{
                    "message": {"role": "assistant", "content": "".join(pieces),
                                "reasoning_content": f"I add {i % 97} and {i % 13}. Carry nothing. Done."},
                    "logprobs": {"content": [{"token": p, "logprob": -0.1 * (j + 1),
                                              "top_logprobs": [{"token": p, "logprob": -0.1 * (j + 1)},
                                                               {"token": "x", "logprob": -3.0}]}
                                             for j, p in enumerate(pieces)]},
                    "finish_reason": "stop"}]},
            }
            out.write(json.dumps(obj) + "\n")


def write_thinkscope(path: Path, n: int) -> None:
    from storage import StorageConfig, save_traces
    from storage.jsonl import export_jsonl
    from storage.testing import make_record

    work = Path(tempfile.mkdtemp(prefix="bench_import_src_"))
    cfg = StorageConfig(work / "src.duckdb")
    for start in range(0, n, 5000):
        save_traces(cfg, [make_record(prompt=f"What is {i} + 1?", seed=i, n_tokens=8) for i in range(start, min(n, start + 5000))])
    export_jsonl(cfg, path)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(path: str, db: str, python_heap: bool) -> None:
    """Runs in a fresh process: import once, print JSON with the figures."""
    import tracemalloc

    from storage import StorageConfig, count_traces
    from storage.importers import import_file

    # $THINKSCOPE_DB_MEMORY_MB sets DuckDB's memory limit, as in the app (default 512 MiB).
    cfg = dataclasses.replace(StorageConfig.from_env(db), seed_path=None)
    count_traces(cfg)  # create + migrate the database first: not part of the import
    if python_heap:
        tracemalloc.start()
    base = rss_kib()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = import_file(cfg, path)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    heap = tracemalloc.get_traced_memory()[1] / 2**20 if python_heap else None
    print(json.dumps({"traces": result.count, "seconds": elapsed, "base_mib": base / 1024,
                      "peak_growth_mib": (peak - max(base, 0)) / 1024, "peak_before_mib": peak_before / 1024,
                      "python_heap_peak_mib": heap}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--format", choices=["openai", "thinkscope"], default="openai")
    parser.add_argument("--python-heap", action="store_true",
                        help="also trace the Python heap peak (tracemalloc; slows the import down)")
    parser.add_argument("--child", nargs=2, metavar=("FILE", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.python_heap)
        return
    work = Path(tempfile.mkdtemp(prefix="bench_import_"))
    rows = []
    for n in (max(1, args.traces // 10), args.traces):
        path = work / f"{args.format}-{n}.jsonl"
        (write_openai if args.format == "openai" else write_thinkscope)(path, n)
        flags = ["--python-heap"] if args.python_heap else []
        out = subprocess.run([sys.executable, __file__, "--child", str(path), str(work / f"db-{n}.duckdb"), *flags],
                             capture_output=True, text=True, check=True)
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((n, path.stat().st_size / 2**20, figures))
    print("| format | traces | file MiB | import s | traces/s | peak RSS growth MiB | Python heap peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, size, f in rows:
        heap = f"{f['python_heap_peak_mib']:.0f}" if f["python_heap_peak_mib"] is not None else "-"
        print(f"| {args.format} | {f['traces']:,} | {size:.1f} | {f['seconds']:.1f} | {f['traces'] / f['seconds']:,.0f} | "
              f"{f['peak_growth_mib']:.0f} | {heap} |")
    print(f"\n(baseline RSS of the importing process: {rows[-1][2]['base_mib']:.0f} MiB; files in {work})")


if __name__ == "__main__":
    main()
