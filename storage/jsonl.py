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
and export -> import -> export yields identical bytes. Unknown numbers (NaN) are written as null.
Lines of an older version are upgraded on read through _UPGRADES.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import duckdb
import numpy as np

from analysis.records import TokenColumns
from storage.config import StorageConfig
from storage.connection import connect, transaction
from storage.errors import TraceImportError
from storage.files import write_lines_atomically
from storage.jsonl_decode import FORMAT, VERSION, ParsedLine, decode_line
from storage.tokens import TOKEN_COLUMNS, columns_from_arrow, fetch_arrow
from storage.writes import NewTrace, insert_run, insert_traces

Progress = Callable[[int, int], None]

# Traces collected before they are inserted during an import (all inside one transaction).
_IMPORT_BATCH = 1000
# Traces fetched per query during an export.
_EXPORT_BATCH = 1000


def export_jsonl(config: StorageConfig, path: str | os.PathLike, trace_ids: Sequence[int] | None = None) -> int:
    """Write traces (all, or those of trace_ids that exist) oldest id first; returns how many.

    The file is written next to `path` and renamed into place, so a failed export leaves no
    half-written file behind.
    """
    with connect(config, read_only=True) as con:
        return write_lines_atomically(path, _export_lines(con, trace_ids))


def import_jsonl(config: StorageConfig, path: str | os.PathLike, progress: Progress | None = None) -> list[int]:
    """Store every trace of a file in one transaction; returns the new trace ids in file order.

    Any invalid line raises TraceImportError naming the line and field, and nothing from the
    file is stored. progress(done_lines, total_lines) is called as lines are stored.
    """
    path = Path(path)
    with connect(config) as con:
        return import_into(con, path, progress)


def import_into(
    con: duckdb.DuckDBPyConnection, path: Path, progress: Progress | None = None, note: str | None = None
) -> list[int]:
    """import_jsonl on an open connection (also used to seed a new database).

    Lines are parsed and inserted in batches inside one open transaction, so memory stays bounded
    for large files while a bad line anywhere still rolls back everything before it.
    """
    total = _count_lines(path) if progress else 0
    ids = store_parsed(
        con, _parse_file(path), note or f"imported from {path.name}", (lambda line: progress(line, total)) if progress else None
    )
    if progress:
        progress(total, total)
    return ids


def store_parsed(
    con: duckdb.DuckDBPyConnection,
    items: Iterable[tuple[int, ParsedLine]],
    note: str,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Insert parsed traces in one transaction; returns their new ids in order.

    items yields (progress position, trace) and may raise at any point (a bad line): everything
    inserted before it is rolled back. Traces are inserted in batches of _IMPORT_BATCH, so only
    one batch is held in memory; progress(position) is called after each batch.
    """
    runs: dict[tuple, int] = {}
    ids: list[int] = []
    batch: list[NewTrace] = []
    last = 0
    with transaction(con):
        for position, parsed in items:
            batch.append(NewTrace(parsed.record, _run_for(con, parsed, runs, note), parsed.created_at))
            last = position
            if len(batch) >= _IMPORT_BATCH:
                ids.extend(insert_traces(con, batch))
                batch = []
                if progress:
                    progress(last)
        if batch:
            ids.extend(insert_traces(con, batch))
    return ids


def _run_for(con: duckdb.DuckDBPyConnection, parsed: ParsedLine, runs: dict[tuple, int], note: str) -> int:
    run = parsed.run
    if run is not None:
        key: tuple = ("ref", run.ref)
        if key not in runs:
            runs[key] = insert_run(con, run.model, run.strategy, run.settings, run.note, run.created_at)
    else:
        # Files without run information: one run per model and strategy found in the file.
        key = ("auto", parsed.record.model, parsed.record.strategy)
        if key not in runs:
            runs[key] = insert_run(con, parsed.record.model, parsed.record.strategy, {}, note)
    return runs[key]


def _parse_file(path: Path) -> Iterator[tuple[int, ParsedLine]]:
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise TraceImportError(path, None, f"cannot read the file ({exc.strerror or exc})") from exc
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TraceImportError(
                    path, lineno, f"not valid UTF-8 (byte {exc.start + 1} of the line is {raw[exc.start]:#04x})"
                ) from None
            if lineno == 1:
                text = text.removeprefix("\ufeff")  # a BOM some editors add
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceImportError(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
            yield lineno, decode_line(obj, path, lineno)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            count, last = 0, b"\n"
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise TraceImportError(path, None, f"cannot read the file ({exc.strerror or exc})") from exc
    return count + (last != b"\n")


def _export_lines(con: duckdb.DuckDBPyConnection, trace_ids: Sequence[int] | None) -> Iterator[str]:
    if trace_ids is None:
        ids = [r[0] for r in con.execute("SELECT trace_id FROM traces ORDER BY trace_id").fetchall()]
    else:
        ids = sorted({int(i) for i in trace_ids})
    run_refs: dict[int, int] = {}
    for start in range(0, len(ids), _EXPORT_BATCH):
        chunk = ids[start : start + _EXPORT_BATCH]
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
                    "latency_s": latency,
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
    if not np.isnan(values).any():
        return nested
    if values.ndim == 1:
        return [None if v != v else v for v in nested]
    return [[None if v != v else v for v in row] for row in nested]


def format_time(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
