"""Public queries: save traces, list and filter them, load one with its tokens.

Every function takes a StorageConfig and holds a connection only for its own duration (see
connection.py for why).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import pyarrow as pa

from analysis.records import TokenColumns, TraceRecord
from storage import journal
from storage.config import StorageConfig
from storage.connection import connect, write
from storage.errors import DatabaseBusy, StorageError, TraceQueued
from storage.filters import TraceFilter, where_clause
from storage.tokens import TOKEN_COLUMNS, columns_from_arrow, fetch_arrow
from storage.writes import insert_run

log = logging.getLogger(__name__)

LIST_COLUMNS = (
    "trace_id", "created_at", "model", "prompt", "correct", "n_thinking_tokens", "n_answer_tokens",
    "n_tokens", "latency_s", "tokens_per_s", "stop_reason", "extracted_answer", "reference_answer",
)  # fmt: skip


@dataclass(frozen=True)
class StoredTrace:
    """A trace as stored: its ids, creation time (UTC) and the full record with tokens."""

    trace_id: int
    run_id: int
    prompt_id: int
    created_at: datetime
    record: TraceRecord


def create_run(config: StorageConfig, model: str, strategy: str, settings: dict | None = None, note: str | None = None,
               running: bool = False) -> int:
    """A new run (one generation session of one model and strategy); returns its run_id.

    running=True: a sweep or strategy run that is finished later (storage.runs.finish_run); until
    then it counts as interrupted once this process is gone."""
    return write(config, lambda con: insert_run(con, model, strategy, settings or {}, note, running=running))


def save_trace(config: StorageConfig, record: TraceRecord, run_id: int | None = None) -> int:
    """Store one trace, its prompt (deduplicated) and all its tokens atomically; returns trace_id.

    Without run_id a new run is created from the record's model, strategy and settings. The
    strategy belongs to the run: get_trace reports the run's strategy, not record.strategy.
    """
    return save_traces(config, [record], run_id)[0]


def save_traces(config: StorageConfig, records: Sequence[TraceRecord], run_id: int | None = None) -> list[int]:
    """Store many traces in one transaction; returns their trace ids in the given order.

    Without run_id one run is created per (model, strategy) among the records. The traces go
    through the journal (storage/journal.py): when the database stays locked for lock_timeout_s
    this raises TraceQueued, and they are stored on the next open instead of being lost.
    """
    records = list(records)
    if not records:
        return []
    return store_entry(config, journal.new_entry("traces", records, run_id))


def save_or_queue(config: StorageConfig, record: TraceRecord) -> int | TraceQueued:
    """save_trace for a finished generation: the trace id, or the TraceQueued saying where the
    trace waits (in the journal, stored on the next open) when the database stayed locked."""
    try:
        return save_trace(config, record)
    except TraceQueued as queued:
        return queued


def store_entry(config: StorageConfig, entry: journal.Entry) -> list[int]:
    """Write the entry to the journal, insert it, then drop it from the journal; returns trace ids.

    Raises TraceQueued when the database stays locked (the entry waits in the journal). Any
    other failure removes the entry again and is raised as before: bad data would fail on every
    replay too, and the caller still holds the records.
    """
    try:
        entry = journal.write_entry(config, entry)
    except (OSError, ValueError, TypeError, StorageError, pa.ArrowException) as exc:
        # No journal (e.g. an unwritable folder): store directly, as safe as it was without one.
        log.warning("could not journal %d traces before storing them (%s)", len(entry.records), exc)
    try:
        with connect(config) as con:
            ids = journal.apply_entry(con, entry)
    except DatabaseBusy as exc:
        journal.release(entry)
        if entry.path is None:
            raise
        raise TraceQueued(str(exc), entry.path.parent, len(entry.records)) from exc
    except StorageError:
        journal.remove_entry(entry)
        raise
    except BaseException:
        journal.release(entry)  # e.g. interrupted: the entry stays for a replay
        raise
    journal.remove_entry(entry)
    return ids


def replay_journal(config: StorageConfig) -> int:
    """Store the saves waiting in the journal now; returns how many entries are left waiting.

    Raises DatabaseBusy when the database is still locked (the entries stay)."""
    if journal.pending(config):
        with connect(config):
            pass  # a writable open replays the journal (connection.py)
    return len(journal.pending(config))


def list_traces(config: StorageConfig, filt: TraceFilter | None = None, limit: int = 200, offset: int = 0) -> pd.DataFrame:
    """One page of the trace list, newest first, with the columns in LIST_COLUMNS.

    Reads only the traces and prompts tables: the page is chosen on traces alone, then joined
    with the prompts of those rows.
    """
    filt = filt or TraceFilter()
    _check_page(limit, offset)
    where, params = where_clause(filt)
    sql = list_sql(where)
    with connect(config, read_only=True) as con:
        return con.execute(sql, [*params, limit, offset]).df()


def list_sql(where: str) -> str:
    """The trace-list query for a WHERE condition from where_clause; takes params + [limit, offset]."""
    # The page is chosen on traces alone (narrow columnar scan + top-N) and only its rows are
    # joined with prompts for their text.
    return f"""
        WITH page AS (
            SELECT t.trace_id, t.created_at, t.model, t.prompt_id, t.correct, t.n_thinking_tokens,
                   t.n_answer_tokens, t.n_tokens, t.latency_s, t.tokens_per_s, t.stop_reason,
                   t.extracted_answer
            FROM traces t
            WHERE {where}
            ORDER BY t.created_at DESC, t.trace_id DESC
            LIMIT ? OFFSET ?
        )
        SELECT page.trace_id, page.created_at, page.model, p.text AS prompt, page.correct,
               page.n_thinking_tokens, page.n_answer_tokens, page.n_tokens, page.latency_s,
               page.tokens_per_s, page.stop_reason, page.extracted_answer, p.reference_answer
        FROM page JOIN prompts p ON p.prompt_id = page.prompt_id
        ORDER BY page.created_at DESC, page.trace_id DESC
    """


def count_traces(config: StorageConfig, filt: TraceFilter | None = None) -> int:
    where, params = where_clause(filt or TraceFilter())
    with connect(config, read_only=True) as con:
        return int(con.execute(f"SELECT count(*) FROM traces t WHERE {where}", params).fetchall()[0][0])


def list_models(config: StorageConfig) -> list[str]:
    """Models that have at least one stored trace, sorted."""
    with connect(config, read_only=True) as con:
        return [row[0] for row in con.execute("SELECT DISTINCT model FROM traces ORDER BY model").fetchall()]


def get_trace(config: StorageConfig, trace_id: int) -> StoredTrace | None:
    """The trace with its prompt, run strategy and tokens; None when no such trace exists."""
    with connect(config, read_only=True) as con:
        rows = con.execute(
            """
            SELECT t.trace_id, t.run_id, t.prompt_id, t.created_at, p.text, t.model, t.thinking_text,
                   t.answer_text, t.stop_reason, t.latency_s, p.reference_answer, t.extracted_answer,
                   t.correct, p.source, r.strategy, t.settings, t.meta
            FROM traces t
            JOIN prompts p ON p.prompt_id = t.prompt_id
            JOIN runs r ON r.run_id = t.run_id
            WHERE t.trace_id = ?
            """,
            [trace_id],
        ).fetchall()
        if not rows:
            return None
        tokens = _tokens(con, trace_id)
    (tid, run_id, prompt_id, created_at, prompt, model, thinking, answer, stop, latency, reference,
     extracted, correct, source, strategy, settings, meta) = rows[0]  # fmt: skip
    record = TraceRecord(
        prompt=prompt,
        model=model,
        thinking_text=thinking,
        answer_text=answer,
        tokens=tokens,
        stop_reason=stop,
        latency_s=latency,
        reference_answer=reference,
        extracted_answer=extracted,
        correct=correct,
        prompt_source=source,
        strategy=strategy,
        settings=json.loads(settings),
        meta=json.loads(meta),
    )
    return StoredTrace(trace_id=tid, run_id=run_id, prompt_id=prompt_id, created_at=created_at, record=record)


def get_tokens(config: StorageConfig, trace_id: int) -> TokenColumns:
    """Token columns of a trace (empty when the trace has no tokens or does not exist)."""
    with connect(config, read_only=True) as con:
        return _tokens(con, trace_id)


def _tokens(con, trace_id: int) -> TokenColumns:
    names = ", ".join(TOKEN_COLUMNS)
    table = fetch_arrow(con, f"SELECT {names} FROM tokens WHERE trace_id = ? ORDER BY position", [trace_id])
    try:
        return columns_from_arrow(table)
    except ValueError as exc:
        raise StorageError(f"Tokens of trace {trace_id} are inconsistent: {exc}") from exc


def _check_page(limit: int, offset: int) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise StorageError(f"{name} must be a non-negative integer, got {value!r}")
