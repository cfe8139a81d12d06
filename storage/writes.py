"""Inserting prompts, runs, traces and token rows on an open connection.

These functions never open connections: callers (traces.py, ingest.py, journal.py, seeding) put
everything of one save or one imported file into a single transaction (transaction() below).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa

from analysis.answers import stored_grade
from analysis.records import TraceRecord
from storage.content import fit_record, record_hash
from storage.errors import StorageError
from storage.jsonvalue import dumps_object
from storage.tokens import TOKEN_COLUMNS, tokens_table

# Token rows per Arrow batch: large enough for full insert speed, small enough to bound memory
# and keep list offsets within int32.
BATCH_TOKENS = 500_000


@dataclass(frozen=True)
class NewTrace:
    """A record to insert into an existing run; created_at None means now."""

    record: TraceRecord
    run_id: int
    created_at: datetime | None = None


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK when the block raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the failed statement may already have ended the transaction
        raise
    con.execute("COMMIT")


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def prompt_key(text: str, reference_answer: str | None) -> str:
    # JSON encoding keeps ("a", None) and ("a", "null") apart, which plain concatenation would not.
    return hashlib.sha256(json.dumps([text, reference_answer], ensure_ascii=False).encode("utf-8")).hexdigest()


def insert_run(
    con: duckdb.DuckDBPyConnection,
    model: str,
    strategy: str,
    settings: dict,
    note: str | None = None,
    created_at: datetime | None = None,
    running: bool = False,
) -> int:
    """A new run; running=True marks it 'running', owned by this process, until it is finished
    (storage.runs.finish_run), so a run whose process was killed reads as interrupted."""
    _require_str(model, "model")
    _require_str(strategy, "strategy")
    rows = con.execute(
        "INSERT INTO runs (model, strategy, settings, created_at, note, status, owner_pid)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING run_id",
        [model, strategy, dumps_object(settings, "run settings"), created_at or utc_now(), note,
         "running" if running else "complete", os.getpid() if running else None],
    ).fetchall()
    return int(rows[0][0])


def require_run(con: duckdb.DuckDBPyConnection, run_id: int) -> None:
    if con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0] == 0:
        raise StorageError(f"Run {run_id} does not exist")


def insert_traces(con: duckdb.DuckDBPyConnection, items: Sequence[NewTrace]) -> list[int]:
    """Insert traces with their prompts and token rows; return the new trace ids in input order."""
    ids: list[int] = []
    for batch in _batches(items):
        ids.extend(_insert_batch(con, batch))
    return ids


def _batches(items: Sequence[NewTrace]) -> Iterator[Sequence[NewTrace]]:
    start, tokens = 0, 0
    for i, item in enumerate(items):
        tokens += len(item.record.tokens)
        if tokens >= BATCH_TOKENS:
            yield items[start : i + 1]
            start, tokens = i + 1, 0
    if start < len(items):
        yield items[start:]


def _insert_batch(con: duckdb.DuckDBPyConnection, items: Sequence[NewTrace]) -> list[int]:
    for item in items:
        _check_record(item.record)
    # The limits and the number rule of every entry point (storage/content.py).
    records = [fit_record(i.record) for i in items]
    now = utc_now()
    prompt_ids = _upsert_prompts(con, records, now)
    n = len(items)
    trace_ids = [r[0] for r in con.execute("SELECT nextval('trace_id_seq') FROM range(?)", [n]).fetchall()]
    traces = pa.table(
        {
            "trace_id": pa.array(trace_ids, pa.int64()),
            "run_id": pa.array([i.run_id for i in items], pa.int64()),
            "prompt_id": pa.array(prompt_ids, pa.int64()),
            "model": pa.array([r.model for r in records], pa.string()),
            "thinking_text": pa.array([r.thinking_text for r in records], pa.string()),
            "answer_text": pa.array([r.answer_text for r in records], pa.string()),
            "extracted_answer": pa.array([r.extracted_answer for r in records], pa.string()),
            # one grade rule for every save path: unfinished traces NULL, imports graded (docs/METHODS.md §7)
            "correct": pa.array([stored_grade(r) for r in records], pa.bool_()),
            "n_thinking_tokens": pa.array([r.n_thinking_tokens for r in records], pa.int32()),
            "n_answer_tokens": pa.array([r.n_answer_tokens for r in records], pa.int32()),
            "n_tokens": pa.array([len(r.tokens) for r in records], pa.int32()),
            "latency_s": pa.array([float(r.latency_s) for r in records], pa.float64()),
            "tokens_per_s": pa.array([float(r.tokens_per_s) for r in records], pa.float64()),
            "stop_reason": pa.array([r.stop_reason for r in records], pa.string()),
            "settings": pa.array([dumps_object(r.settings, "trace settings") for r in records], pa.string()),
            "meta": pa.array([dumps_object(r.meta, "trace meta") for r in records], pa.string()),
            "created_at": pa.array([i.created_at or now for i in items], pa.timestamp("us")),
            "content_hash": pa.array([record_hash(r) for r in records], pa.string()),
        }
    )
    _insert_arrow(con, "traces", traces)
    try:
        tokens = tokens_table(trace_ids, [r.tokens for r in records])
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise StorageError(f"Token columns cannot be stored: {exc}") from exc
    insert_tokens(con, tokens)
    return trace_ids


def insert_tokens(con: duckdb.DuckDBPyConnection, tokens: pa.Table) -> None:
    """Append token rows (an Arrow table with TOKEN_COLUMNS) in one statement."""
    _insert_arrow(con, "tokens", tokens, TOKEN_COLUMNS)


def _upsert_prompts(con: duckdb.DuckDBPyConnection, records: Sequence[TraceRecord], now: datetime) -> list[int]:
    """Prompt ids for the records, inserting the (text, reference answer) pairs not yet stored."""
    keys = [prompt_key(r.prompt, r.reference_answer) for r in records]
    first: dict[str, TraceRecord] = {}
    for key, record in zip(keys, records):
        first.setdefault(key, record)
    new = pa.table(
        {
            "ord": pa.array(range(len(first)), pa.int64()),
            "prompt_key": pa.array(list(first), pa.string()),
            "text": pa.array([r.prompt for r in first.values()], pa.string()),
            "reference_answer": pa.array([r.reference_answer for r in first.values()], pa.string()),
            "source": pa.array([r.prompt_source for r in first.values()], pa.string()),
        }
    )
    new_prompts = new  # noqa: F841 (read by name in the SQL: a replacement scan, see _insert_arrow)
    # ORDER BY keeps prompt ids in first-seen order, so an import numbers prompts like the file.
    con.execute(
        """
        INSERT INTO prompts (prompt_key, text, reference_answer, source, created_at)
        SELECT n.prompt_key, n.text, n.reference_answer, n.source, ?
        FROM new_prompts n
        WHERE NOT EXISTS (SELECT 1 FROM prompts p WHERE p.prompt_key = n.prompt_key)
        ORDER BY n.ord
        """,
        [now],
    )
    found = dict(
        con.execute(
            "SELECT p.prompt_key, p.prompt_id FROM prompts p JOIN new_prompts n ON p.prompt_key = n.prompt_key"
        ).fetchall()
    )
    return [found[k] for k in keys]


def _insert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table, columns: Sequence[str] | None = None) -> None:
    # Read through DuckDB's replacement scan of the local `arrow_rows`, not con.register(): inside an
    # open transaction a registered table stays alive until COMMIT, so a 100k-trace import kept every
    # batch in memory (453 vs 244 MiB peak growth, bench/bench_import.py).
    names = ", ".join(columns or data.column_names)
    arrow_rows = data  # noqa: F841 (read by name in the SQL below)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM arrow_rows")


def _check_record(record: TraceRecord) -> None:
    # Catch wrong types here with a field name, rather than as an Arrow conversion error.
    for name in ("prompt", "model", "thinking_text", "answer_text", "stop_reason", "prompt_source"):
        _require_str(getattr(record, name), name)
    for name in ("reference_answer", "extracted_answer"):
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise StorageError(f"TraceRecord.{name} must be a string or None, got {type(value).__name__}")
    if record.correct is not None and not isinstance(record.correct, (bool, np.bool_)):
        raise StorageError(f"TraceRecord.correct must be True, False or None, got {record.correct!r}")


def _require_str(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise StorageError(f"{name} must be a string, got {type(value).__name__}")


def insert_sweep_cells(con: duckdb.DuckDBPyConnection, run_id: int, sweep_key: str, cells: Sequence[Sequence],
                       trace_ids: Sequence[int]) -> None:
    """Sweep cells [budget, sample_index, n_thinking_tokens, n_answer_tokens, correct,
    first_correct_token], one per stored trace (same order)."""
    if len(cells) != len(trace_ids):
        raise StorageError("one sweep cell per trace is required")
    now = utc_now()
    for (budget, index, n_thinking, n_answer, correct, first_correct), tid in zip(cells, trace_ids):
        con.execute(
            "INSERT INTO sweep_cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [sweep_key, budget, index, tid, run_id, n_thinking, n_answer, correct, first_correct, now],
        )


def insert_selections(con: duckdb.DuckDBPyConnection, run_id: int, selections: Sequence[dict],
                      trace_ids: Sequence[int]) -> None:
    """Strategy selections as dicts (prompt, reference_answer, selected_answer, correct, chosen_index,
    rule, detail, start, stop); trace_ids[start:stop] are the samples the selection chose from."""
    now = utc_now()
    for sel in selections:
        ids = list(trace_ids[sel["start"]:sel["stop"]])
        chosen = ids[sel["chosen_index"]] if sel["chosen_index"] is not None else None
        con.execute(
            "INSERT INTO strategy_selections (run_id, prompt, reference_answer, selected_answer, correct,"
            " chosen_trace_id, rule, detail, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, sel["prompt"], sel["reference_answer"], sel["selected_answer"], sel["correct"], chosen,
             sel["rule"], dumps_object({**sel["detail"], "trace_ids": ids}, "selection detail"), now],
        )
