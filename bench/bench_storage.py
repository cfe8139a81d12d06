"""Storage benchmark: token-row bulk insert rate and trace-list query latency.

    python bench/bench_storage.py [--traces 100000 --tokens-per-trace 100 --top-k 5]

(1) Inserting token rows from one Arrow table (the path save_trace uses), against executemany of
    the same rows on a smaller slice. Target: >= 1e6 rows/s.
(2) list_traces (default and a filtered page) and a few other reads on a database of --traces
    traces x --tokens-per-trace tokens, median of --repeats runs. Target: < 100 ms.
(3) The journal's cost on saves: save_traces (journal entry written and fsync'd, insert, entry
    removed) against the same saves without the journal (the insert alone, the path store_entry
    takes when it cannot journal), alternated save by save on two fresh databases in one run, for
    bulk saves (--journal-batch traces per save) and single-trace saves. --journal-only runs only this.
Prints a markdown table. The database lives in a temporary directory unless --db is given.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402

from analysis.records import TokenColumns  # noqa: E402

from storage import StorageConfig, TraceFilter, connect, count_traces, get_trace, list_traces, save_traces  # noqa: E402
from storage import journal  # noqa: E402
from storage.testing import make_record, make_tokens  # noqa: E402
from storage.tokens import TOKEN_COLUMNS, tokens_table  # noqa: E402
from storage.traces import LIST_COLUMNS  # noqa: E402
from storage.writes import insert_tokens  # noqa: E402

MODELS = ("SmolLM2-135M-Instruct", "Qwen3-0.6B", "Qwen3-1.7B", "DeepSeek-R1-Distill-1.5B")
FILTERED = TraceFilter(models=MODELS[1:3], prompt_contains="apples", correct="incorrect", min_tokens=50)


def main() -> None:
    args = parse_args()
    workdir = Path(args.db).parent if args.db else Path(tempfile.mkdtemp(prefix="bench_storage_"))
    db = Path(args.db) if args.db else workdir / "bench.duckdb"
    rows: list[tuple[str, str, str]] = []
    try:
        if not args.journal_only:
            rows += bench_insert(workdir, args)
        rows += bench_journal(workdir, args)
        if not args.journal_only:
            rows += bench_queries(db, args)
    finally:
        if not args.db and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    scope = "journal comparison" if args.journal_only else f"{args.traces:,} traces"
    print(f"duckdb {duckdb.__version__}, {scope} x {args.tokens_per_trace} tokens, top-k {args.top_k}")
    print()
    print("| measurement | result | target |")
    print("| --- | --- | --- |")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", type=int, default=100_000)
    p.add_argument("--tokens-per-trace", type=int, default=100)
    p.add_argument("--top-k", type=int, default=5, help="alternatives stored per token")
    p.add_argument("--insert-rows", type=int, default=1_000_000, help="token rows for the insert-rate test")
    p.add_argument("--baseline-rows", type=int, default=5_000, help="token rows for the executemany baseline")
    p.add_argument("--repeats", type=int, default=7, help="runs per query; the median is reported")
    p.add_argument("--journal-batch", type=int, default=2_000, help="traces per bulk save in the journal test")
    p.add_argument("--journal-rounds", type=int, default=10, help="bulk saves with and without the journal, each")
    p.add_argument("--journal-singles", type=int, default=100, help="single-trace saves with and without, each")
    p.add_argument("--journal-only", action="store_true", help="run only the journal comparison (3)")
    p.add_argument("--db", help="keep the populated database at this path (reused if it has enough traces)")
    p.add_argument("--keep", action="store_true", help="do not delete the temporary directory")
    return p.parse_args()


def token_pool(n_tokens: int, k: int, size: int = 64) -> list:
    # Distinct token sets reused across traces: generating 10^7 fresh rows in Python would
    # measure the generator, not storage. Saving still converts every trace's columns.
    return [make_tokens(n_tokens, k, seed=s) for s in range(size)]


def bench_insert(workdir: Path, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    per = args.tokens_per_trace
    n_traces = max(1, args.insert_rows // per)
    pool = token_pool(per, args.top_k)
    columns = [pool[i % len(pool)] for i in range(n_traces)]
    start = time.perf_counter()
    table = tokens_table(list(range(1, n_traces + 1)), columns)
    build_s = time.perf_counter() - start
    n = table.num_rows

    cfg = StorageConfig(workdir / "insert.duckdb")
    arrow_rate = insert_rate(cfg, table)
    # The same rows without top-k alternatives: the 5 strings per row dominate the cost.
    no_alternatives = tokens_table(list(range(1, n_traces + 1)), [strip_alternatives(c) for c in columns])
    plain_rate = insert_rate(cfg, no_alternatives)

    m = min(args.baseline_rows, n)
    baseline_rows = [tuple(r.values()) for r in table.slice(0, m).to_pylist()]
    with connect(cfg) as con:
        con.execute("DELETE FROM tokens")
        placeholders = ", ".join("?" * len(TOKEN_COLUMNS))
        con.execute("BEGIN TRANSACTION")
        start = time.perf_counter()
        con.executemany(f"INSERT INTO tokens ({', '.join(TOKEN_COLUMNS)}) VALUES ({placeholders})", baseline_rows)
        con.execute("COMMIT")
        base_rate = m / (time.perf_counter() - start)
    return [
        (f"token rows from one Arrow table ({n:,} rows, median / best of 5)", _rate(arrow_rate), ">= 1 M rows/s"),
        (f"baseline: executemany ({m:,} rows)", f"{base_rate / 1e3:.1f} k rows/s (Arrow median is {arrow_rate[0] / base_rate:,.0f}x)", ""),
        ("  same rows without top-k alternatives (K = 0)", _rate(plain_rate), ""),
        ("TokenColumns -> Arrow table (Python side of a save)", f"{n / build_s / 1e6:.2f} M rows/s", ""),
    ]


def insert_rate(cfg: StorageConfig, table, runs: int = 5) -> tuple[float, float]:
    """(median, best) rows/s of inserting `table` into an emptied tokens table, one transaction each.

    Best is reported too because on a shared machine the median mostly measures the neighbours.
    """
    rates = []
    for _ in range(runs):
        with connect(cfg) as con:
            con.execute("DELETE FROM tokens")
            con.execute("CHECKPOINT")
            con.execute("BEGIN TRANSACTION")
            start = time.perf_counter()
            insert_tokens(con, table)
            con.execute("COMMIT")
            rates.append(table.num_rows / (time.perf_counter() - start))
    return statistics.median(rates), max(rates)


def _rate(rates: tuple[float, float]) -> str:
    return f"{rates[0] / 1e6:.2f} / {rates[1] / 1e6:.2f} M rows/s"


def strip_alternatives(c: TokenColumns) -> TokenColumns:
    n = len(c)
    return TokenColumns(
        token_id=c.token_id, text=c.text, logprob=c.logprob, entropy=c.entropy,
        top_ids=np.empty((n, 0), np.int64), top_texts=[[] for _ in range(n)],
        top_logprobs=np.empty((n, 0), np.float32), phase=c.phase,
    )  # fmt: skip


def save_without_journal(cfg: StorageConfig, records: list) -> list[int]:
    """What save_traces does minus the journal: the same entry inserted in one transaction."""
    with connect(cfg) as con:
        return journal.apply_entry(con, journal.new_entry("traces", records))


def bench_journal(workdir: Path, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    per = args.tokens_per_trace
    pool = token_pool(per, args.top_k)
    configs = {"journal": StorageConfig(workdir / "journal_on.duckdb"),
               "no journal": StorageConfig(workdir / "journal_off.duckdb")}
    saves = {"journal": save_traces, "no journal": save_without_journal}
    for cfg in configs.values():
        count_traces(cfg)  # create and migrate both before timing

    def batch(tag: str, size: int) -> list:
        return [make_record(prompt=f"Problem {tag}-{i}: how many apples?", tokens=pool[i % len(pool)], meta={})
                for i in range(size)]

    def compare(rounds: int, size: int) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {name: [] for name in configs}
        for r in range(rounds):
            # Alternate which goes first, so that neither always meets a warmer (or busier) machine.
            for name in (("journal", "no journal") if r % 2 == 0 else ("no journal", "journal")):
                records = batch(f"{name}-{r}", size)
                start = time.perf_counter()
                saves[name](configs[name], records)
                times[name].append(time.perf_counter() - start)
        return times

    bulk = compare(args.journal_rounds, args.journal_batch)
    single = compare(args.journal_singles, 1)
    # The journal write on its own (Arrow IPC file, fsync of file and folder, removal), for the same bulk batch.
    records = batch("alone", args.journal_batch)
    alone = []
    for _ in range(args.journal_rounds):
        start = time.perf_counter()
        journal.remove_entry(journal.write_entry(configs["journal"], journal.new_entry("traces", records)))
        alone.append(time.perf_counter() - start)
    rows = []
    for label, times, unit in ((f"bulk save, {args.journal_batch:,} traces x {per} tokens (median of "
                                f"{args.journal_rounds})", bulk, "ms"),
                               (f"single-trace save, {per} tokens (median of {args.journal_singles})", single, "ms")):
        on, off = statistics.median(times["journal"]), statistics.median(times["no journal"])
        rows.append((f"{label}: with the journal / without", f"{on * 1e3:.1f} / {off * 1e3:.1f} {unit} = "
                     f"**{on / off:.2f}x**", ""))
    # Of that, converting the token columns to Arrow: the insert converts the same rows again.
    convert = []
    for _ in range(args.journal_rounds):
        start = time.perf_counter()
        tokens_table(list(range(len(records))), [r.tokens for r in records])
        convert.append(time.perf_counter() - start)
    rows.append((f"  of which the journal entry alone (bulk, median of {args.journal_rounds})",
                 f"{statistics.median(alone) * 1e3:.1f} ms", ""))
    rows.append(("    of which token columns -> Arrow table (the insert does it again)",
                 f"{statistics.median(convert) * 1e3:.1f} ms", ""))
    return rows


def populate(cfg: StorageConfig, args: argparse.Namespace) -> tuple[float, int]:
    """Fill the database up to --traces traces with save_traces; returns (seconds, traces added)."""
    have = count_traces(cfg)
    need = args.traces - have
    if need <= 0:
        return 0.0, 0
    rng = np.random.default_rng(1)
    pool = token_pool(args.tokens_per_trace, args.top_k)
    fruits = ("apples", "pears", "plums", "figs")
    chunk = max(1, 200_000 // args.tokens_per_trace)  # ~2e5 token rows per save_traces call
    start = time.perf_counter()
    done = 0
    last_report = start
    while done < need:
        records = []
        for i in range(done, min(need, done + chunk)):
            p = int(rng.integers(0, 2000))
            records.append(
                make_record(
                    prompt=f"Problem {p}: Tom has {p % 17} {fruits[p % 4]} and buys {p % 5} more. How many?",
                    reference_answer=str(p % 17 + p % 5),
                    model=MODELS[int(rng.integers(0, len(MODELS)))],
                    tokens=pool[i % len(pool)],
                    correct=(True, False, None)[int(rng.integers(0, 3))],
                    latency_s=float(rng.uniform(1, 20)),
                    meta={},
                )
            )
        save_traces(cfg, records)
        done += len(records)
        if time.perf_counter() - last_report > 10:
            last_report = time.perf_counter()
            print(f"  populated {have + done:,}/{args.traces:,} traces", file=sys.stderr)
    return time.perf_counter() - start, need


def median_ms(fn, repeats: int) -> float:
    fn()  # warm: first call pays for imports and the OS file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_queries(db: Path, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    cfg = StorageConfig(db, lock_timeout_s=60)
    print(f"populating {db} ...", file=sys.stderr)
    seconds, added = populate(cfg, args)
    total = count_traces(cfg)
    with connect(cfg, read_only=True) as con:
        token_rows = con.execute("SELECT count(*) FROM tokens").fetchall()[0][0]
    rows = []
    if added:
        rate = added * args.tokens_per_trace / seconds
        rows.append(
            (f"save_traces end to end ({added:,} traces)", f"{added / seconds:,.0f} traces/s = {rate / 1e6:.2f} M token rows/s", "")
        )
    rows.append(("database", f"{total:,} traces, {token_rows:,} token rows, {db.stat().st_size / 2**30:.2f} GiB", ""))

    page = list_traces(cfg, FILTERED)
    assert tuple(page.columns) == LIST_COLUMNS
    n_filtered = count_traces(cfg, FILTERED)
    r = args.repeats
    rows.append((f"list_traces, default filter (median of {r})", f"{median_ms(lambda: list_traces(cfg), r):.1f} ms", "< 100 ms"))
    rows.append(
        (f"list_traces, filtered: {n_filtered:,} matches (median of {r})", f"{median_ms(lambda: list_traces(cfg, FILTERED), r):.1f} ms", "< 100 ms")
    )
    rows.append((f"count_traces, filtered (median of {r})", f"{median_ms(lambda: count_traces(cfg, FILTERED), r):.1f} ms", ""))
    trace_id = int(list_traces(cfg, limit=1, offset=total // 2)["trace_id"].iloc[0])
    rows.append(
        (f"get_trace with {args.tokens_per_trace} tokens (median of {r})", f"{median_ms(lambda: get_trace(cfg, trace_id), r):.1f} ms", "")
    )

    # The same list query on an already open connection: how much of the above is opening the
    # file (DuckDB's per-process file lock forces one attach per operation).
    from storage.filters import where_clause
    import storage.traces as traces_module

    with connect(cfg, read_only=True) as con:
        def query_only(filt):
            where, params = where_clause(filt)
            sql = traces_module.list_sql(where)
            return lambda: con.execute(sql, [*params, 200, 0]).df()

        rows.append(("  of which the query alone, default filter", f"{median_ms(query_only(TraceFilter()), r):.1f} ms", ""))
        rows.append(("  of which the query alone, filtered", f"{median_ms(query_only(FILTERED), r):.1f} ms", ""))
    rows.append(("  attach + detach of the file (read-only)", f"{median_ms(lambda: _touch(cfg), r):.1f} ms", ""))
    return rows


def _touch(cfg: StorageConfig) -> None:
    with connect(cfg, read_only=True):
        pass


if __name__ == "__main__":
    main()
