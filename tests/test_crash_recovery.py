"""Issue 11, "Must show": kill -9 in the middle of an import and of a generation, then open the
database in a fresh process, count and check it.

Nothing here waits for a time: each test waits for a sign that the child is in the middle of the
work (the database file growing with uncommitted rows, tokens on the terminal, a journal entry
on disk), then sends SIGKILL.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storage import StorageConfig, save_trace, save_traces
from storage.journal import journal_dir, pending
from storage.jsonl import export_jsonl
from storage.testing import make_record

REPO = Path(__file__).resolve().parent.parent

# Opens the database in a process of its own (as the next command would) and reports what it holds.
CHECK = textwrap.dedent(
    """
    import json, os, sys, tempfile
    from storage import StorageConfig, connect
    cfg = StorageConfig(sys.argv[1])
    with connect(cfg, read_only=True) as con:
        one = lambda sql: con.execute(sql).fetchall()[0][0]
        report = {
            "traces": one("SELECT count(*) FROM traces"),
            "tokens": one("SELECT count(*) FROM tokens"),
            "orphan_tokens": one("SELECT count(*) FROM tokens k WHERE NOT EXISTS"
                                 " (SELECT 1 FROM traces t WHERE t.trace_id = k.trace_id)"),
            "short_traces": one("SELECT count(*) FROM traces t WHERE n_tokens <>"
                                " (SELECT count(*) FROM tokens k WHERE k.trace_id = t.trace_id)"),
            "orphan_traces": one("SELECT count(*) FROM traces t WHERE NOT EXISTS"
                                 " (SELECT 1 FROM runs r WHERE r.run_id = t.run_id)"),
            "prompts": [r[0] for r in con.execute("SELECT text FROM prompts ORDER BY prompt_id").fetchall()],
        }
    report["spill"] = sorted(n for n in os.listdir(tempfile.gettempdir()) if n.startswith("thinkscope-duckdb-")
                             and n != f"thinkscope-duckdb-{os.getpid()}")
    print(json.dumps(report))
    """
)


def _env(tmp: Path, **extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), **extra}


def _check(db: Path, tmp: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHECK, str(db)], cwd=REPO, env=_env(tmp), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _wait(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the child ended before {what}: rc={proc.returncode}\n{out}\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_kill_9_during_an_import_stores_nothing_and_leaves_no_spill_folder(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    source = StorageConfig(tmp_path / "source.duckdb")
    n = 1500  # more than one insert batch (1,000 traces), so rows go in while later lines are read
    for start in range(0, n, 250):
        save_traces(source, [make_record(prompt=f"imported {i}", n_tokens=400, seed=i) for i in range(start, start + 250)])
    big = tmp_path / "big.jsonl"
    export_jsonl(source, big)
    db = tmp_path / "db.duckdb"
    save_trace(StorageConfig(db), make_record(prompt="kept"))
    size = db.stat().st_size
    # A small memory limit makes DuckDB write the uncommitted rows out while the import runs.
    child = subprocess.Popen([sys.executable, "cli.py", "--db", str(db), "import", str(big)], cwd=REPO,
                             env=_env(tmp, THINKSCOPE_DB_MEMORY_MB="64"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait(lambda: db.stat().st_size > size or any(tmp.glob("thinkscope-duckdb-*/*")), child,
          "the import wrote uncommitted rows")
    _kill(child)
    report = _check(db, tmp)
    assert report["traces"] in (1, 1 + n)  # one transaction: all or nothing (the kill may hit the COMMIT)
    if report["traces"] == 1:
        assert report["prompts"] == ["kept"]
    assert report["orphan_tokens"] == 0 and report["short_traces"] == 0 and report["orphan_traces"] == 0
    assert report["spill"] == []  # the killed import's spill folder is gone
    # The database still takes the whole file afterwards.
    done = subprocess.run([sys.executable, "cli.py", "--db", str(db), "import", str(big)], cwd=REPO, env=_env(tmp),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _check(db, tmp)["traces"] == 1 + n


def _generate(db: Path, tmp: Path, cache: Path, *extra: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "cli.py", "--db", str(db), "generate", "--prompt", "Count from 1 to 500, one per line.",
         "--max-thinking", "400", "--max-answer", "16", "--seed", "3", *extra],
        cwd=REPO, env=_env(tmp, THINKSCOPE_CACHE=str(cache), **env), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def test_kill_9_during_a_generation_leaves_a_consistent_database(tmp_path, model_cache_dir):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    db = tmp_path / "db.duckdb"
    save_trace(StorageConfig(db), make_record(prompt="kept"))
    child = _generate(db, tmp, model_cache_dir)
    seen = []

    def streaming() -> bool:  # a few tokens on the terminal: the model is mid-way
        seen.append(child.stdout.read(1))
        return len("".join(seen).split("── thinking ──", 1)[-1]) > 20 and "── thinking ──" in "".join(seen)

    _wait(streaming, child, "tokens on the terminal")
    _kill(child)
    report = _check(db, tmp)
    # A generation killed before it finished has nothing to keep; what is there is whole.
    assert report["traces"] == 1 and report["orphan_tokens"] == 0 and report["short_traces"] == 0
    assert pending(StorageConfig(db)) == []


HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    from pathlib import Path
    con = duckdb.connect(sys.argv[1])
    Path(sys.argv[2]).write_text("locked")
    time.sleep(600)
    """
)


def test_kill_9_while_a_finished_generation_waits_for_the_lock_loses_nothing(tmp_path, model_cache_dir):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    db = tmp_path / "db.duckdb"
    cfg = StorageConfig(db)
    save_trace(cfg, make_record(prompt="kept"))
    marker = tmp_path / "locked"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(marker)], env=_env(tmp))
    try:
        _wait(marker.exists, holder, "the lock holder")
        # A long lock wait: the finished trace is journalled, then the process waits for the file.
        child = _generate(db, tmp, model_cache_dir, "--max-thinking", "24", THINKSCOPE_LOCK_TIMEOUT_S="600")
        _wait(lambda: bool(pending(cfg)), child, "the journal entry")
        _kill(child)
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    assert len(pending(cfg)) == 1
    report = _check(db, tmp)  # the next open stores it
    assert report["traces"] == 2 and report["prompts"] == ["kept", "Count from 1 to 500, one per line."]
    assert report["orphan_tokens"] == 0 and report["short_traces"] == 0 and report["tokens"] > 0
    assert pending(cfg) == [] and not list(journal_dir(cfg).glob(".*.tmp"))
    assert _check(db, tmp)["traces"] == 2  # replayed once only
