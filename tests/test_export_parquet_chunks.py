"""The Parquet export reads the database in chunks (issue 11 item 2): a trace saved by another
process while a long export runs is stored before the export ends, and the files are the same as
those of a one-chunk export."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

import storage.parquet_export as parquet_export
from storage import save_traces
from storage.parquet_export import TOKENS_FILE, TRACES_FILE, export_parquet
from storage.testing import make_record

REPO = Path(__file__).resolve().parent.parent
WRITER = """
import sys
from storage import save_traces
from storage.config import StorageConfig
from storage.testing import make_record
config = StorageConfig(db_path=sys.argv[1], lock_timeout_s=300)
print("stored", save_traces(config, [make_record(prompt="written meanwhile", n_tokens=3)]))
"""
MEANWHILE = "SELECT count(*) FROM traces t JOIN prompts p USING (prompt_id) WHERE p.text = 'written meanwhile'"


def _wait_until(condition, what: str, limit_s: float = 300) -> None:
    """Synchronisation, not a timing assertion: `limit_s` only keeps a broken run from hanging."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_a_trace_saved_during_a_long_export_is_stored_before_the_export_ends(db_config, tmp_path, monkeypatch):
    n = 12
    save_traces(db_config, [make_record(prompt=f"q{i}", n_tokens=3, seed=i) for i in range(n)])
    monkeypatch.setattr(parquet_export, "_CHUNK_TRACES", 1, raising=False)  # a long export: one trace per chunk
    waiting = db_config.db_path.with_name(db_config.db_path.name + ".waiting")
    writer: subprocess.Popen | None = None
    seen: list[int] = []  # per COPY of the export: is the other process's trace in the database yet?
    real_copy = parquet_export._copy

    def writer_waits() -> bool:
        """The writer waits for the lock this export holds (storage/connection.py marks it), or is done."""
        mine = f"{writer.pid}-"
        return writer.poll() is not None or (waiting.is_dir() and any(p.name.startswith(mine)
                                                                      for p in waiting.iterdir()))

    def copy(con, query, path):
        nonlocal writer
        if "_export_ids" not in query:  # concatenating the parts: the database is not open
            return real_copy(con, query, path)
        if writer is None:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db_config.db_path)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Each COPY starts only once the writer waits for the file (or has finished): a writer that
        # can get in between chunks then makes progress at every chunk.
        _wait_until(writer_waits, "the writer process to wait for the database")
        seen.append(con.execute(MEANWHILE).fetchall()[0][0])
        real_copy(con, query, path)

    monkeypatch.setattr(parquet_export, "_copy", copy)
    done = export_parquet(db_config, tmp_path / "out")
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert out.startswith("stored [") and "queued" not in out + err
    assert seen[0] == 0
    # Before: the export held the file for all its COPYs, and the trace was stored only after it.
    assert seen[-1] == 1, f"the write waited for the whole export (seen per COPY: {seen})"
    # The export holds the traces there were when it started, complete.
    assert done.n_traces == n and pq.read_table(done.traces_path).num_rows == n


def test_chunked_files_equal_a_one_chunk_export(db_config, tmp_path, monkeypatch):
    records = [make_record(prompt=f"q{i}", n_tokens=i % 4, k=2, seed=i, meta={"i": i}) for i in range(7)]
    # NULLs in one chunk only: the whole file's columns are nullable where one part's are.
    records[3] = make_record(prompt="q3", n_tokens=3, k=2, seed=3, reference_answer=None, correct=None,
                             extracted_answer=None)
    save_traces(db_config, records)
    whole = export_parquet(db_config, tmp_path / "whole")
    monkeypatch.setattr(parquet_export, "_CHUNK_TRACES", 2)
    chunked = export_parquet(db_config, tmp_path / "chunked")
    assert (chunked.n_traces, chunked.n_tokens) == (whole.n_traces, whole.n_tokens) == (7, sum(i % 4 for i in range(7)))
    for name in (TRACES_FILE, TOKENS_FILE):
        a, b = pq.read_table(tmp_path / "whole" / name), pq.read_table(tmp_path / "chunked" / name)
        assert a.schema == b.schema, name  # same types and nullability
        assert repr(a.to_pylist()) == repr(b.to_pylist()), name  # same rows in the same order (NaN included)
    assert sorted(p.name for p in (tmp_path / "chunked").iterdir()) == sorted([TOKENS_FILE, TRACES_FILE])  # no parts left
