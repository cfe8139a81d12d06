"""Import benchmark: time and peak memory of importing many small traces from one file.

    python bench/bench_import.py [--traces 100000] [--format openai|thinkscope] [--python-heap]
    python bench/bench_import.py --case openwebui     # adversarial Open WebUI message (issue 11 item 8)
    python bench/bench_import.py --case huge-line     # one 150 MB line of 6 M tokens (issue 11 item 9)

--case openwebui times split_details on messages made of `<details type="reasoning">` openings
without a closing tag, against the regex it replaced (kept here as the baseline), side by side.
--case huge-line imports one ThinkScope line of 6 M tokens (150 MB) in a fresh process, with the
per-line limit (refused before parsing) and without it (the code path before the limit: parse
and store), and the largest line the limit accepts (250k tokens with 5 alternatives); peak RSS
growth for each.

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


_OLD_BLOCK = r'<details\s+type="reasoning"(?P<attrs>[^>]*)>(?P<body>.*?)</details>\s*'


def old_split_details(content: str):
    """The Open WebUI splitter before the fix (a lazy regex body): the baseline."""
    import re

    from storage.importers.openwebui import _DURATION, _SUMMARY, _unquote

    block = re.compile(_OLD_BLOCK, re.DOTALL)
    thoughts = []
    for match in block.finditer(content):
        _DURATION.search(match.group("attrs"))
        thoughts.append(_unquote(_SUMMARY.sub("", match.group("body"), count=1)))
    return "\n\n".join(t for t in thoughts if t), block.sub("", content).strip()


def case_openwebui(max_old_kib: int) -> None:
    from storage.importers.openwebui import split_details

    opening = '<details type="reasoning">'
    print("| message KiB | openings | new ms | old (regex) s | old / new |")
    print("|---:|---:|---:|---:|---:|")
    for kib in (42, 84, 168, 336, 10240):
        content = opening * (kib * 1024 // len(opening))
        t_new = float("inf")
        for _ in range(5):  # best of 5: the new parse takes well under a second
            start = time.perf_counter()
            new = split_details(content)
            t_new = min(t_new, time.perf_counter() - start)
        if kib <= max_old_kib:
            start = time.perf_counter()
            old = old_split_details(content)
            t_old = time.perf_counter() - start
            assert old[:2] == new[:2]
            print(f"| {kib:,} | {content.count(opening):,} | {t_new * 1e3:.2f} | {t_old:.1f} | {t_old / t_new:,.0f} |")
        else:
            print(f"| {kib:,} | {content.count(opening):,} | {t_new * 1e3:.2f} | (not run) | |")


def write_huge_line(path: Path, n: int, k: int) -> None:
    """One ThinkScope line of n tokens with k alternatives each, written without building it in memory."""
    head = {"format": "thinkscope.trace", "version": 1, "prompt": {"text": "q"},
            "trace": {"model": "bench", "thinking_text": "t", "answer_text": "a", "stop_reason": "eos"}}
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(head)[:-1] + ', "tokens": {')
        columns = [("token_id", "1234"), ("text", '"ab"'), ("logprob", "-0.25"), ("entropy", "0.5"),
                   ("top_ids", "[" + ",".join(["1234"] * k) + "]"), ("top_texts", "[" + ",".join(['"ab"'] * k) + "]"),
                   ("top_logprobs", "[" + ",".join(["-0.25"] * k) + "]"), ("phase", "0")]
        for i, (name, item) in enumerate(columns):
            out.write(("," if i else "") + f'"{name}": [')
            for start in range(0, n, 100_000):
                m = min(100_000, n - start)
                out.write(("," if start else "") + ",".join([item] * m))
            out.write("]")
        out.write("}}\n")


def huge_child(path: str, db: str, unlimited: bool) -> None:
    import storage.importers.common as common
    import storage.importers.source as source
    from storage import StorageConfig, count_traces
    from storage.errors import TraceImportError
    from storage.importers import import_file

    if unlimited:  # the code path before the per-line limit
        source.MAX_LINE_VALUES = common.MAX_TOKEN_VALUES = 10**12
    cfg = dataclasses.replace(StorageConfig.from_env(db), seed_path=None)
    count_traces(cfg)
    base = rss_kib()
    start = time.perf_counter()
    try:
        outcome = f"stored {import_file(cfg, path).count} trace"
    except TraceImportError as exc:
        outcome = "refused: " + str(exc).split(": ", 1)[1][:90] + "…"
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "peak_growth_mib": (peak - base) / 1024, "outcome": outcome}))


def case_huge_line(skip_baseline: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_import_huge_"))
    cases = [("6 M tokens, K = 0", 6_000_000, 0, False)]
    if not skip_baseline:
        cases.append(("6 M tokens, K = 0, no per-line limit (before)", 6_000_000, 0, True))
    cases.append(("250k tokens, K = 5 (largest accepted)", 250_000, 5, False))
    print("| line | MiB | import s | peak RSS growth MiB | outcome |")
    print("|---|---:|---:|---:|---|")
    for label, n, k, unlimited in cases:
        path = work / f"line-{n}-{k}.jsonl"
        if not path.exists():
            write_huge_line(path, n, k)
        cmd = [sys.executable, __file__, "--huge-child", str(path), str(work / f"db-{n}-{k}-{unlimited}.duckdb")]
        out = subprocess.run(cmd + (["--unlimited"] if unlimited else []), capture_output=True, text=True, check=True)
        f = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {label} | {path.stat().st_size / 2**20:,.0f} | {f['seconds']:.1f} | {f['peak_growth_mib']:,.0f} | "
              f"{f['outcome']} |")
    print(f"\n(files in {work})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["traces", "openwebui", "huge-line"], default="traces")
    parser.add_argument("--max-old-kib", type=int, default=336,
                        help="openwebui: largest message the quadratic baseline is run on")
    parser.add_argument("--skip-baseline", action="store_true", help="huge-line: skip the 3 GB run without the limit")
    parser.add_argument("--huge-child", nargs=2, metavar=("FILE", "DB"), help=argparse.SUPPRESS)
    parser.add_argument("--unlimited", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--format", choices=["openai", "thinkscope"], default="openai")
    parser.add_argument("--python-heap", action="store_true",
                        help="also trace the Python heap peak (tracemalloc; slows the import down)")
    parser.add_argument("--child", nargs=2, metavar=("FILE", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.python_heap)
        return
    if args.huge_child:
        huge_child(*args.huge_child, args.unlimited)
        return
    if args.case == "openwebui":
        case_openwebui(args.max_old_kib)
        return
    if args.case == "huge-line":
        case_huge_line(args.skip_baseline)
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
