"""ThinkScope's own trace file format: JSON Lines, one self-contained trace per line.

    {"format": "thinkscope.trace", "version": 1,
     "prompt": {"text", "reference_answer", "source"},
     "run": {"ref", "model", "strategy", "settings", "note", "created_at"},
     "trace": {"model", "thinking_text", "answer_text", "extracted_answer", "correct",
               "stop_reason", "latency_s", "settings", "meta", "created_at"},
     "tokens": {"token_id", "text", "logprob", "entropy", "top_ids", "top_texts",
                "top_logprobs", "phase"}}           # columns as lists, top_* as [T][K]

Database ids are not written (they differ between databases); `run.ref` numbers the runs of one
file in order of first appearance, so traces of one run stay together across export and import,
and export -> import -> export yields identical bytes. Unknown numbers (NaN) are written as null,
and so is any non-finite number an older database may hold (storage/content.py has the rule), so
an export never fails on stored data. Lines of an older version are upgraded on read through
_UPGRADES.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import numpy as np

from analysis.records import TokenColumns
from storage.config import StorageConfig
from storage.connection import connect, yield_to_writers
from storage.files import write_lines_atomically
# Storing parsed lines opens no connection (storage/ingest.py), so seeding a new database can use
# it from inside connection.py's first open without an import cycle; re-exported for callers.
from storage.ingest import Progress, StoreCounts, import_into, store_parsed  # noqa: F401
from storage.jsonl_decode import FORMAT, VERSION
from storage.tokens import TOKEN_COLUMNS, columns_from_arrow, fetch_arrow

# Traces fetched per query during an export.
_EXPORT_BATCH = 1000


def export_jsonl(config: StorageConfig, path: str | os.PathLike, trace_ids: Sequence[int] | None = None) -> int:
    """Write traces (all, or those of trace_ids that exist) oldest id first; returns how many.

    The file is written next to `path` and renamed into place, so a failed export leaves no
    half-written file behind (storage/files.py; `-` is standard output). The database is opened
    once per chunk of traces, not for the whole export, so a trace finished meanwhile (app, CLI)
    is stored between two chunks instead of waiting for the end.
    """
    return write_lines_atomically(path, _export_lines(config, trace_ids))


def import_jsonl(config: StorageConfig, path: str | os.PathLike, progress: Progress | None = None) -> list[int]:
    """Store every trace of a file in one transaction; returns the new trace ids in file order.

    Any invalid line raises TraceImportError naming the line and field, and nothing from the
    file is stored. progress(done_lines, total_lines) is called as lines are stored.
    """
    path = Path(path)
    with connect(config) as con:
        return import_into(con, path, progress)


def _export_lines(config: StorageConfig, trace_ids: Sequence[int] | None) -> Iterator[str]:
    if trace_ids is None:
        with connect(config, read_only=True) as con:
            ids = [r[0] for r in con.execute("SELECT trace_id FROM traces ORDER BY trace_id").fetchall()]
    else:
        ids = sorted({int(i) for i in trace_ids})
    run_refs: dict[int, int] = {}
    for start in range(0, len(ids), _EXPORT_BATCH):
        if start:
            yield_to_writers(config)  # let a waiting writer in before taking the file again
        with connect(config, read_only=True) as con:
            lines = list(_chunk_lines(con, ids[start : start + _EXPORT_BATCH], run_refs))
        yield from lines


def _chunk_lines(con: duckdb.DuckDBPyConnection, chunk: list[int], run_refs: dict[int, int]) -> Iterator[str]:
    if chunk:
        rows = con.execute(
            """
            SELECT t.trace_id, p.text, p.reference_answer, p.source,
                   r.run_id, r.model, r.strategy, r.settings, r.note, r.created_at,
                   t.model, t.thinking_text, t.answer_text, t.extracted_answer, t.correct,
                   t.stop_reason, t.latency_s, t.settings, t.meta, t.created_at
            FROM traces t
            JOIN prompts p ON p.prompt_id = t.prompt_id
            JOIN runs r ON r.run_id = t.run_id
            WHERE t.trace_id BETWEEN ? AND ? AND list_contains(?::BIGINT[], t.trace_id)
            ORDER BY t.trace_id
            """,
            [chunk[0], chunk[-1], chunk],
        ).fetchall()
        tokens = _tokens_by_trace(con, chunk)
        for row in rows:
            (trace_id, text, reference, source, run_id, run_model, strategy, run_settings, note, run_created,
             model, thinking, answer, extracted, correct, stop, latency, settings, meta, created) = row  # fmt: skip
            ref = run_refs.setdefault(run_id, len(run_refs) + 1)
            obj = {
                "format": FORMAT,
                "version": VERSION,
                "prompt": {"text": text, "reference_answer": reference, "source": source},
                "run": {
                    "ref": ref,
                    "model": run_model,
                    "strategy": strategy,
                    "settings": json.loads(run_settings),
                    "note": note,
                    "created_at": format_time(run_created),
                },
                "trace": {
                    "model": model,
                    "thinking_text": thinking,
                    "answer_text": answer,
                    "extracted_answer": extracted,
                    "correct": correct,
                    "stop_reason": stop,
                    "latency_s": latency if latency is not None and math.isfinite(latency) else None,
                    "settings": json.loads(settings),
                    "meta": json.loads(meta),
                    "created_at": format_time(created),
                },
                "tokens": encode_tokens(tokens.get(trace_id) or TokenColumns.empty()),
            }
            yield json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _tokens_by_trace(con: duckdb.DuckDBPyConnection, ids: list[int]) -> dict[int, TokenColumns]:
    names = ", ".join(TOKEN_COLUMNS)
    # BETWEEN lets DuckDB skip row groups by their trace_id min/max before the exact filter.
    table = fetch_arrow(
        con,
        f"""SELECT {names} FROM tokens
            WHERE trace_id BETWEEN ? AND ? AND list_contains(?::BIGINT[], trace_id)
            ORDER BY trace_id, position""",
        [ids[0], ids[-1], ids],
    )
    trace_col = table.column("trace_id").to_numpy()
    out: dict[int, TokenColumns] = {}
    if len(trace_col) == 0:
        return out
    bounds = np.flatnonzero(np.diff(trace_col)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(trace_col)]])
    for start, end in zip(starts.tolist(), ends.tolist()):
        out[int(trace_col[start])] = columns_from_arrow(table.slice(start, end - start))
    return out


def encode_tokens(tokens: TokenColumns) -> dict:
    return {
        "token_id": tokens.token_id.tolist(),
        "text": list(tokens.text),
        "logprob": _floats(tokens.logprob),
        "entropy": _floats(tokens.entropy),
        "top_ids": tokens.top_ids.tolist(),
        "top_texts": [list(row) for row in tokens.top_texts],
        "top_logprobs": _floats(tokens.top_logprobs),
        "phase": tokens.phase.tolist(),
    }


def _floats(values: np.ndarray) -> list:
    # float32 -> Python float is exact, and reading it back as float32 gives the same value.
    nested = values.tolist()
    if np.isfinite(values).all():
        return nested
    if values.ndim == 1:
        return [v if math.isfinite(v) else None for v in nested]
    return [[v if math.isfinite(v) else None for v in row] for row in nested]


def format_time(value) -> str:
    # isoformat pads the year to 4 digits (strftime's %Y wrote year 1 as "1-01-01", which
    # fromisoformat refuses); for years 1000-9999 the text is the same as before.
    return value.isoformat(timespec="microseconds") + "Z"
