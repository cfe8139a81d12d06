"""Storing parsed traces on an open connection, in one transaction per file.

Shared by the ThinkScope JSONL import (storage/jsonl.py), the other formats (storage/importers/)
and seeding a new database (storage/seed.py). It opens no connection itself, so seeding, which
runs inside connection.py's first open of a file, can use it without an import cycle.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import duckdb

from storage.content import record_hash
from storage.errors import TraceImportError
from storage.jsonl_decode import ParsedLine, decode_line, describe_json_error
from storage.writes import NewTrace, insert_run, insert_traces, transaction

Progress = Callable[[int, int], None]

# Traces collected before they are inserted during an import (all inside one transaction).
_IMPORT_BATCH = 1000


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


class StoreCounts:
    """What store_parsed did: new trace ids in file order, and how many were already present."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.present = 0


def store_parsed(
    con: duckdb.DuckDBPyConnection,
    items: Iterable[tuple[int, ParsedLine]],
    note: str,
    progress: Callable[[int], None] | None = None,
    skip_present: bool = False,
    counts: StoreCounts | None = None,
) -> list[int]:
    """Insert parsed traces in one transaction; returns their new ids in order.

    items yields (progress position, trace) and may raise at any point (a bad line): everything
    inserted before it is rolled back. Traces are inserted in batches of _IMPORT_BATCH, so only
    one batch is held in memory; progress(position) is called after each batch.

    skip_present: a trace whose content (storage.content.record_hash) the database already holds
    is not stored again, so importing a file twice adds nothing. Copies count: a file holding the
    same trace twice stores two the first time, none the second. counts.present says how many
    were skipped.
    """
    counts = counts if counts is not None else StoreCounts()
    runs: dict[tuple, tuple[int, ParsedLine]] = {}
    batch: list[tuple[ParsedLine, str | None]] = []
    stored: dict[str, int] = {}  # hash -> copies in the database before this file
    seen: dict[str, int] = {}  # hash -> copies met in this file so far
    last = 0

    def flush() -> None:
        if skip_present:
            _count_stored(con, [h for _, h in batch if h not in stored], stored)
        new = []
        for parsed, digest in batch:
            if digest is not None:
                seen[digest] = seen.get(digest, 0) + 1
                if seen[digest] <= stored[digest]:
                    counts.present += 1
                    continue
            new.append(NewTrace(parsed.record, _run_for(con, parsed, runs, note), parsed.created_at))
        if new:
            counts.ids.extend(insert_traces(con, new))

    with transaction(con):
        for position, parsed in items:
            batch.append((parsed, record_hash(parsed.record) if skip_present else None))
            last = position
            if len(batch) >= _IMPORT_BATCH:
                flush()
                batch = []
                if progress:
                    progress(last)
        if batch:
            flush()
    return counts.ids


def _count_stored(con: duckdb.DuckDBPyConnection, digests: list[str], stored: dict[str, int]) -> None:
    """Fill stored[h] with how many traces of that content the database holds (first sighting only:
    later batches of this file would otherwise count the copies this import just stored)."""
    fresh = list(dict.fromkeys(digests))
    if not fresh:
        return
    stored.update(dict.fromkeys(fresh, 0))
    rows = con.execute(
        # A hash join against the batch's hashes: one scan of the column, whatever the batch size.
        "SELECT t.content_hash, count(*) FROM traces t JOIN (SELECT unnest(?::VARCHAR[]) AS h) q"
        " ON q.h = t.content_hash GROUP BY 1",
        [fresh],
    ).fetchall()
    stored.update({h: int(c) for h, c in rows})


def _run_for(con: duckdb.DuckDBPyConnection, parsed: ParsedLine, runs: dict[tuple, tuple[int, ParsedLine]],
             note: str) -> int:
    """The run a trace goes into, created when its first trace is stored (so a file whose traces
    are all present already adds no empty run)."""
    run = parsed.run
    if run is not None:
        key: tuple = ("ref", run.ref)
        if key not in runs:
            runs[key] = (insert_run(con, run.model, run.strategy, run.settings, run.note, run.created_at), parsed)
        else:
            _same_run(runs[key][1], parsed)
    else:
        # Files without run information: one run per model and strategy found in the file.
        key = ("auto", parsed.record.model, parsed.record.strategy)
        if key not in runs:
            runs[key] = (insert_run(con, parsed.record.model, parsed.record.strategy, {}, note), parsed)
    return runs[key][0]


def _same_run(first: ParsedLine, later: ParsedLine) -> None:
    """Lines sharing a run.ref must describe the same run: merging two models into one run would
    silently mix their metrics."""
    a, b = first.run, later.run
    for field in ("model", "strategy"):
        if getattr(a, field) != getattr(b, field):
            where = f" (line {first.line})" if first.line is not None else ""
            raise TraceImportError(
                later.path or Path("file"), later.line,
                f"run.ref {b.ref} was given {field} {getattr(a, field)!r} before{where}, here {getattr(b, field)!r}; "
                f"lines of one run must agree (give each run its own ref)", f"run.{field}",
            )


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
                raise TraceImportError(path, lineno, f"invalid JSON ({describe_json_error(exc, text)})") from None
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
