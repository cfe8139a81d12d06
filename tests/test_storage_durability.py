"""Issue 11: nothing lost while the database is locked, no leftovers after a kill, read-only databases.

Item 2: the journal keeps a finished trace when the database stays locked and stores it (once) on
the next open; an export releases the file between chunks. Item 16: read-only commands open
read-only. Item 17: temporary files of killed processes are removed; a failed import gives its
space back. Structure: seeding no longer makes connection.py and jsonl.py import each other.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import storage.connection
import storage.jsonl
from storage import StorageConfig, connect, count_traces, get_trace, save_trace
from storage.errors import DatabaseBusy, MigrationError, TraceQueued
from storage.journal import apply_entry, journal_dir, new_entry, pending, release, write_entry
from storage.testing import make_record

REPO = Path(__file__).resolve().parent.parent

HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    from pathlib import Path
    con = duckdb.connect(sys.argv[1])
    Path(sys.argv[2]).write_text("locked")
    time.sleep(float(sys.argv[3]))
    """
)


def _python(tmp_path: Path, script: str, *args: str, **kwargs) -> subprocess.Popen:
    file = tmp_path / f"script_{abs(hash(script))}.py"
    file.write_text(script, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, str(file), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _hold_lock(tmp_path: Path, db: Path) -> subprocess.Popen:
    marker = tmp_path / "locked"
    holder = _python(tmp_path, HOLDER, str(db), str(marker), "120")
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert holder.poll() is None, holder.communicate()
        assert time.monotonic() < deadline, "the lock holder did not start"
        time.sleep(0.02)
    return holder


def _release(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.communicate(timeout=30)


def test_a_trace_finished_while_the_database_is_locked_waits_in_the_journal(tmp_path):
    db = tmp_path / "db.duckdb"
    cfg = StorageConfig(db, lock_timeout_s=0.3)
    save_trace(cfg, make_record(prompt="before"))
    holder = _hold_lock(tmp_path, db)
    try:
        with pytest.raises(TraceQueued) as info:
            save_trace(cfg, make_record(prompt="finished during a long import", seed=7))
    finally:
        _release(holder)
    message = str(info.value)
    assert f"PID {holder.pid}" in message and "journal" in message and "will be stored" in message
    assert str(journal_dir(cfg)) in message
    assert len(pending(cfg)) == 1
    # The next open stores it, once, with its tokens, and empties the journal.
    assert count_traces(StorageConfig(db)) == 2
    assert pending(cfg) == []
    assert count_traces(StorageConfig(db)) == 2
    with connect(cfg, read_only=True) as con:
        (tid,) = con.execute("SELECT trace_id FROM traces t JOIN prompts p USING (prompt_id)"
                             " WHERE p.text = 'finished during a long import'").fetchall()[0]
    stored = get_trace(cfg, tid).record
    original = make_record(prompt="finished during a long import", seed=7)
    assert stored.thinking_text == original.thinking_text and stored.meta == original.meta
    assert list(stored.tokens.text) == list(original.tokens.text)
    assert (stored.tokens.top_ids == original.tokens.top_ids).all()


def test_replaying_an_entry_that_was_already_stored_stores_nothing(tmp_path):
    # A kill -9 between COMMIT and removing the journal file leaves an entry that is in the database.
    cfg = StorageConfig(tmp_path / "db.duckdb")
    count_traces(cfg)
    with connect(cfg) as con:
        entry = write_entry(cfg, new_entry("traces", [make_record(prompt="once")]))
        first = apply_entry(con, entry)
        again = apply_entry(con, entry)
    assert first == again and len(first) == 1
    assert entry.path.exists()  # as after the crash
    release(entry)  # its owner is gone: no longer in flight
    storage.connection.forget_migrated()
    assert count_traces(cfg) == 1  # the first open after it replays: nothing stored twice
    assert pending(cfg) == []


def test_a_broken_journal_entry_is_set_aside_not_a_reason_to_fail(tmp_path, caplog):
    cfg = StorageConfig(tmp_path / "db.duckdb")
    folder = journal_dir(cfg)
    folder.mkdir(parents=True)
    (folder / "0123.arrow").write_bytes(b"not an arrow file")
    assert count_traces(cfg) == 0
    assert (folder / "0123.arrow.failed").exists() and pending(cfg) == []
    assert "could not be stored" in caplog.text


def test_an_export_lets_a_writer_in_between_its_chunks(tmp_path, monkeypatch):
    db = tmp_path / "db.duckdb"
    cfg = StorageConfig(db)
    for i in range(3):
        save_trace(cfg, make_record(prompt=f"p{i}"))
    monkeypatch.setattr(storage.jsonl, "_EXPORT_BATCH", 1)
    lines = storage.jsonl._export_lines(cfg, None)
    first = next(lines)  # the export is under way, between two chunks
    writer = _python(tmp_path, textwrap.dedent("""
        import sys
        from storage import StorageConfig, save_trace
        from storage.testing import make_record
        print(save_trace(StorageConfig(sys.argv[1], lock_timeout_s=20), make_record(prompt="meanwhile")))
    """), str(db))
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err  # before: "stayed locked for 15 s" until the export ended
    rest = list(lines)
    assert json.loads(first)["prompt"]["text"] == "p0" and len(rest) == 2  # the ids chosen at the start
    assert count_traces(cfg) == 4


def test_lock_timeouts_are_their_own_error(tmp_path):
    db = tmp_path / "db.duckdb"
    count_traces(StorageConfig(db))
    holder = _hold_lock(tmp_path, db)
    try:
        with pytest.raises(DatabaseBusy, match="THINKSCOPE_LOCK_TIMEOUT_S"):
            count_traces(StorageConfig(db, lock_timeout_s=0.2))
    finally:
        _release(holder)


def _immutable(*paths: Path, on: bool) -> bool:
    # Root ignores file modes; the immutable flag stops even root from writing (as a read-only mount would).
    done = subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)], capture_output=True)
    return done.returncode == 0


def test_a_read_only_database_can_be_exported_and_says_when_it_needs_a_migration(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    db = folder / "db.duckdb"
    cfg = StorageConfig(db)
    save_trace(cfg, make_record(prompt="readable"))
    out = tmp_path / "out"
    out.mkdir()

    def export(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "cli.py", "--db", str(db), "export", str(out / name)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)

    if os.geteuid() == 0:
        if not _immutable(db, folder, on=True):
            pytest.skip("chattr +i is not available here")
    else:
        os.chmod(db, 0o444)
        os.chmod(folder, 0o555)
    try:
        assert not os.access(db, os.W_OK)
        done = export("a.jsonl")
        assert done.returncode == 0, done.stderr  # before: "Permission denied" from the migration check
        assert "exported 1 traces" in done.stdout and "readable" in (out / "a.jsonl").read_text()
    finally:
        _immutable(db, folder, on=False) if os.geteuid() == 0 else (os.chmod(folder, 0o755), os.chmod(db, 0o644))
    # An older database (the last migration missing) cannot be migrated read-only: say so, change nothing.
    with connect(cfg) as con:
        last = con.execute("SELECT max(name) FROM schema_migrations").fetchall()[0][0]
        con.execute("DELETE FROM schema_migrations WHERE name = ?", [last])
    before = db.read_bytes()
    if os.geteuid() == 0:
        _immutable(db, folder, on=True)
    else:
        os.chmod(db, 0o444)
        os.chmod(folder, 0o555)
    try:
        done = export("b.jsonl")
    finally:
        _immutable(db, folder, on=False) if os.geteuid() == 0 else (os.chmod(folder, 0o755), os.chmod(db, 0o644))
    assert done.returncode == 1
    assert f"needs the migrations {last}" in done.stderr and "read-only" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and db.read_bytes() == before and not (out / "b.jsonl").exists()


def test_read_only_migration_check_raises_a_migration_error(tmp_path, monkeypatch):
    cfg = StorageConfig(tmp_path / "db.duckdb")
    count_traces(cfg)
    with connect(cfg) as con:
        last = con.execute("SELECT max(name) FROM schema_migrations").fetchall()[0][0]
        con.execute("DELETE FROM schema_migrations WHERE name = ?", [last])
    storage.connection.forget_migrated()
    monkeypatch.setattr(storage.connection, "_writable", lambda path: False)
    with pytest.raises(MigrationError, match="read-only"):
        count_traces(cfg)


def test_spill_folders_of_dead_processes_are_removed(tmp_path):
    # kill -9 during a big query leaves DuckDB's spill folder, named after the process.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    script = textwrap.dedent("""
        import os, sys, tempfile
        from pathlib import Path
        from storage import StorageConfig, count_traces
        stale, alive = Path(sys.argv[2]), Path(sys.argv[3])
        count_traces(StorageConfig(sys.argv[1]))
        print(stale.exists(), alive.exists())
    """)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    stale = tmp / f"thinkscope-duckdb-{pid}"
    alive = tmp / f"thinkscope-duckdb-{os.getpid()}"
    for folder in (stale, alive):
        folder.mkdir()
        (folder / "duckdb_temp_block-1.block").write_bytes(b"x" * 1000)
    proc = _python(tmp_path, script, str(tmp_path / "db.duckdb"), str(stale), str(alive), env={"TMPDIR": str(tmp)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.split() == ["False", "True"]  # the dead process's folder went, a live one's stayed


def test_export_part_files_of_dead_processes_are_removed(tmp_path):
    from storage.files import write_lines_atomically

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    stale = tmp_path / f"traces.jsonl.{dead}.part"
    stale.write_text("half an export")
    other = tmp_path / f"other.jsonl.{dead}.part"  # another target's: not ours to judge, but dead too
    other.write_text("x")
    assert write_lines_atomically(tmp_path / "traces.jsonl", ["a", "b"]) == 2
    assert not stale.exists() and other.exists()
    assert (tmp_path / "traces.jsonl").read_text() == "a\nb\n"
    assert not list(tmp_path.glob("traces.jsonl.*.part"))


def test_parquet_work_folders_of_dead_processes_are_removed(tmp_path, db_config):
    from storage.parquet_export import export_parquet

    save_trace(db_config, make_record())
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    out = tmp_path / "out"
    stale = out / f".parquet-export-{dead}-abcd"
    stale.mkdir(parents=True)
    (stale / "tokens.parquet").write_bytes(b"x" * 100)
    export_parquet(db_config, out)
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == ["tokens.parquet", "traces.parquet"]


def test_a_failed_import_gives_its_space_back(tmp_path, monkeypatch):
    import storage.ingest
    from storage import save_traces
    from storage.errors import TraceImportError
    from storage.jsonl import export_jsonl, import_jsonl

    source = StorageConfig(tmp_path / "source.duckdb")
    save_traces(source, [make_record(prompt=f"q{i}", n_tokens=2000, seed=i) for i in range(200)])
    good = tmp_path / "big.jsonl"
    export_jsonl(source, good)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "{broken\n")
    # Small batches and a small memory limit: the uncommitted rows go to the file before the bad line.
    monkeypatch.setattr(storage.ingest, "_IMPORT_BATCH", 10)
    target = StorageConfig(tmp_path / "target.duckdb", memory_limit_mb=64)
    save_trace(target, make_record(prompt="already there"))
    before = target.db_path.stat().st_size
    with pytest.raises(TraceImportError):
        import_jsonl(target, bad)
    after = target.db_path.stat().st_size
    assert count_traces(target) == 1
    # Rolled back, and the blocks it had written are given back (the file does not keep them).
    assert after <= before + 512 * 1024, (before, after)


def test_connection_and_jsonl_no_longer_import_each_other():
    source = (REPO / "storage" / "connection.py").read_text()
    assert "storage.jsonl" not in source and "import_into" not in source
    for name in ("seed.py", "ingest.py", "journal.py", "migrate.py", "writes.py"):
        text = (REPO / "storage" / name).read_text()
        assert "storage.connection" not in text and "storage.jsonl " not in text, name


def test_the_generate_page_says_a_trace_is_queued_and_stores_it_on_request(tmp_path, monkeypatch):
    # What pages/generate.py shows when its save came back queued (save_or_queue): no error, no retry
    # button that would store the trace a second time, and a button that stores the journal now.
    from streamlit.testing.v1 import AppTest

    import streamlit as st

    db = tmp_path / "app.duckdb"
    monkeypatch.setenv("THINKSCOPE_DB", str(db))
    st.cache_resource.clear()
    cfg = StorageConfig(db, lock_timeout_s=0.3)
    count_traces(cfg)
    holder = _hold_lock(tmp_path, db)
    try:
        from storage.traces import save_or_queue

        queued = save_or_queue(cfg, make_record(prompt="queued in the app"))
    finally:
        _release(holder)
    assert isinstance(queued, TraceQueued)

    def script():
        import streamlit as st

        from generation.streaming import Finished
        from storage.testing import make_record
        from ui.results import show_finished

        show_finished(Finished(make_record(prompt="queued in the app"), st.session_state["queued"]))

    at = AppTest.from_function(script, default_timeout=60)
    at.session_state["queued"] = queued
    at.run()
    assert not at.exception, at.exception
    assert any("Queued, not yet stored" in i.value and "journal" in i.value for i in at.info)
    assert not at.error and [b.label for b in at.button] == ["Store queued traces now"]
    at.button[0].click().run()
    assert any("Stored" in s.value for s in at.success)
    assert count_traces(StorageConfig(db)) == 1 and pending(cfg) == []
    st.cache_resource.clear()
