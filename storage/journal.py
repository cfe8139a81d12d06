"""The journal: finished traces kept on disk beside the database until they are stored in it.

A save first writes one journal entry (`<db>.journal/<id>.arrow`), then inserts into DuckDB and
removes the entry after COMMIT. When the database stays locked (a long import, another process)
the entry simply remains, and the next writable open of the database (any process) stores it, so
a finished generation is never dropped; a kill -9 during the insert leaves the entry too.

An entry is one Arrow IPC file: the token rows of its traces as a table (a memory copy, unlike
JSON, so journaling a 200,000-token batch costs milliseconds), and everything else (kind, run,
records without tokens, sweep cells or strategy selections) as JSON in the schema metadata. It is
written to a temporary name that embeds the writer's pid, fsync'd and renamed into place, so a
reader sees whole entries only.

Replay is idempotent: storing an entry also inserts its id into journal_applied (migration 008)
in the same transaction, and an entry whose id is already there returns the stored trace ids
instead of inserting again. So a crash between COMMIT and the removal of the file, or two
processes replaying the same entry, never stores a trace twice.

This module opens no connection (connection.py calls replay_into on an attached file).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from analysis.records import TokenColumns, TraceRecord
from storage.config import StorageConfig
from storage.errors import StorageError
from storage.jsonvalue import dumps_object
from storage.tokens import columns_from_arrow, tokens_table
from storage.writes import (NewTrace, insert_run, insert_selections, insert_sweep_cells, insert_traces, require_run,
                            transaction, utc_now)

log = logging.getLogger(__name__)

KINDS = ("traces", "sweep", "strategy")
_META_KEY = b"thinkscope.journal"
_SUFFIX = ".arrow"
# Entries this process is storing right now: a replay (inside the same save's connect) leaves
# them to their owner instead of decoding and inserting them a second time.
_in_flight: set[str] = set()
_in_flight_guard = threading.Lock()
# Record fields kept as JSON; tokens travel as the Arrow table.
_FIELDS = ("prompt", "model", "thinking_text", "answer_text", "stop_reason", "latency_s", "reference_answer",
           "extracted_answer", "correct", "prompt_source", "strategy")


@dataclass(frozen=True)
class Entry:
    """One save: what to insert, and where it waits on disk."""

    entry_id: str
    kind: str  # one of KINDS
    records: list[TraceRecord]
    run_id: int | None  # None: kind "traces" creates one run per (model, strategy)
    extra: dict  # kind "sweep": sweep_key, cells; kind "strategy": selections
    created_at: datetime  # when the traces were finished (UTC); replayed traces keep it
    path: Path | None = None


def journal_dir(config: StorageConfig) -> Path:
    path = config.db_path.absolute()
    return path.with_name(path.name + ".journal")


def new_entry(kind: str, records: Sequence[TraceRecord], run_id: int | None = None, extra: dict | None = None) -> Entry:
    if kind not in KINDS:
        raise ValueError(f"unknown journal entry kind {kind!r}")
    return Entry(uuid.uuid4().hex, kind, list(records), run_id, dict(extra or {}), utc_now())


def write_entry(config: StorageConfig, entry: Entry) -> Entry:
    """Put the entry on disk durably; returns it with its path. Raises OSError/ValueError/StorageError
    when it cannot be written (the caller then saves without a journal)."""
    folder = journal_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{entry.entry_id}{_SUFFIX}"
    tmp = folder / f".{entry.entry_id}.{os.getpid()}.tmp"
    table = _encode(entry)
    try:
        with open(tmp, "wb") as handle:
            with pa.ipc.new_file(handle, table.schema) as writer:
                writer.write_table(table)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    with _in_flight_guard:
        _in_flight.add(entry.entry_id)
    return Entry(entry.entry_id, entry.kind, entry.records, entry.run_id, entry.extra, entry.created_at, final)


def remove_entry(entry: Entry) -> None:
    if entry.path is not None:
        entry.path.unlink(missing_ok=True)
    release(entry)


def release(entry: Entry) -> None:
    """The owner is done with the entry (stored, or left queued): any replay may take it now."""
    with _in_flight_guard:
        _in_flight.discard(entry.entry_id)


def pending(config: StorageConfig) -> list[Path]:
    """Entry files waiting to be stored, oldest first (cheap when there is no journal folder)."""
    try:
        found = [e for e in os.scandir(journal_dir(config)) if e.name.endswith(_SUFFIX) and e.is_file()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read the journal %s: %s", journal_dir(config), exc)
        return []
    return [Path(e.path) for e in sorted(found, key=lambda e: (e.stat().st_mtime_ns, e.name))]


def apply_entry(con: duckdb.DuckDBPyConnection, entry: Entry) -> list[int]:
    """Insert the entry in one transaction, unless it was stored before; returns its trace ids."""
    with transaction(con):
        done = con.execute("SELECT trace_ids FROM journal_applied WHERE entry_id = ?", [entry.entry_id]).fetchall()
        if done:
            return [int(i) for i in json.loads(done[0][0])]
        ids = _insert(con, entry)
        con.execute("INSERT INTO journal_applied VALUES (?, ?, ?)", [entry.entry_id, json.dumps(ids), utc_now()])
    return ids


def replay_into(con: duckdb.DuckDBPyConnection, config: StorageConfig) -> int:
    """Store every waiting entry on an attached, writable connection; returns how many traces.

    Never raises for a bad entry: it is renamed to *.failed (kept for a person to look at) and
    logged, so one broken entry cannot keep the database from opening.
    """
    stored = 0
    for path in pending(config):
        if path.name.removesuffix(_SUFFIX) in _in_flight:
            continue
        try:
            entry = read_entry(path)
            stored += len(apply_entry(con, entry))
        except FileNotFoundError:
            continue  # another process stored it meanwhile
        except (StorageError, duckdb.Error, OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            failed = path.with_name(path.name + ".failed")
            log.warning("journal entry %s could not be stored (%s); kept as %s", path, exc, failed)
            try:
                os.replace(path, failed)
            except OSError:
                pass
            continue
        path.unlink(missing_ok=True)
    if stored:
        log.info("stored %d journalled traces into %s", stored, config.db_path)
    return stored


def read_entry(path: Path) -> Entry:
    with pa.memory_map(str(path), "r") as source:
        table = pa.ipc.open_file(source).read_all()
    head = json.loads(table.schema.metadata[_META_KEY])
    index = table.column("trace_id").to_numpy()
    records = []
    for k, fields in enumerate(head["records"]):
        rows = np.flatnonzero(index == k)
        if len(rows):
            tokens = columns_from_arrow(table.slice(int(rows[0]), len(rows)))
        else:
            tokens = TokenColumns.empty()
        record = TraceRecord(tokens=tokens, settings=json.loads(fields.pop("settings")),
                             meta=json.loads(fields.pop("meta")), **fields)
        records.append(record)
    created = datetime.fromisoformat(head["created_at"])
    return Entry(head["id"], head["kind"], records, head["run_id"], head["extra"], created, path)


def _encode(entry: Entry) -> pa.Table:
    records = []
    for r in entry.records:
        fields = {name: getattr(r, name) for name in _FIELDS}
        fields["correct"] = None if r.correct is None else bool(r.correct)
        fields["latency_s"] = float(r.latency_s)
        fields["settings"] = dumps_object(r.settings, "trace settings")
        fields["meta"] = dumps_object(r.meta, "trace meta")
        records.append(fields)
    head = {"id": entry.entry_id, "kind": entry.kind, "run_id": entry.run_id, "extra": entry.extra,
            "created_at": entry.created_at.isoformat(), "pid": os.getpid(), "records": records}
    # The trace_id column numbers the records of this entry (0, 1, ...), not database ids.
    table = tokens_table(list(range(len(entry.records))), [r.tokens for r in entry.records])
    # allow_nan: a latency may be unknown; the database applies its own number rule on insert.
    return table.replace_schema_metadata({_META_KEY: json.dumps(head, ensure_ascii=False).encode("utf-8")})


def _insert(con: duckdb.DuckDBPyConnection, entry: Entry) -> list[int]:
    records, when = entry.records, entry.created_at
    if entry.run_id is not None:
        require_run(con, entry.run_id)
        runs = [entry.run_id] * len(records)
    else:
        created: dict[tuple[str, str], int] = {}
        runs = []
        for r in records:
            key = (r.model, r.strategy)
            if key not in created:
                created[key] = insert_run(con, r.model, r.strategy, r.settings)
            runs.append(created[key])
    ids = insert_traces(con, [NewTrace(r, run, when) for r, run in zip(records, runs)])
    if entry.kind == "sweep":
        insert_sweep_cells(con, entry.run_id, entry.extra["sweep_key"], entry.extra["cells"], ids)
    elif entry.kind == "strategy":
        insert_selections(con, entry.run_id, entry.extra["selections"], ids)
    return ids


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
