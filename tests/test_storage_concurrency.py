"""Several processes (and threads) sharing one database file through short connections."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from storage import StorageConfig, StorageError, connect, count_traces, get_trace, list_traces, save_trace
from storage.testing import make_record

REPO = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from storage import StorageConfig, count_traces, save_trace
    from storage.testing import make_record

    db, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    cfg = StorageConfig(db, lock_timeout_s=30)
    while not go.exists():  # start both writers at the same moment
        time.sleep(0.005)
    for i in range(n):
        save_trace(cfg, make_record(prompt=f"{tag} prompt {i}", model=tag, n_tokens=40, seed=i))
        count_traces(cfg)  # interleave reads with the other process's writes
    print("done", tag)
    """
)

HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    from pathlib import Path
    con = duckdb.connect(sys.argv[1])
    Path(sys.argv[2]).write_text("locked")
    time.sleep(float(sys.argv[3]))
    con.close()
    """
)


def _spawn(tmp_path: Path, script: str, *args: str) -> subprocess.Popen:
    file = tmp_path / f"script_{abs(hash(script))}.py"
    file.write_text(script, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(file), *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"helper process exited early: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "helper process did not start"
        time.sleep(0.01)


def test_two_processes_write_concurrently(tmp_path):
    db = tmp_path / "shared.duckdb"
    cfg = StorageConfig(db)
    count_traces(cfg)  # create and migrate up front; both writers then only insert
    go = tmp_path / "go"
    procs = [_spawn(tmp_path, WRITER, str(db), tag, "20", str(go)) for tag in ("left", "right")]
    time.sleep(0.2)
    go.write_text("go")
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "done" in out
    assert count_traces(cfg) == 40
    df = list_traces(cfg, limit=100)
    assert sorted(df["prompt"]) == sorted(f"{tag} prompt {i}" for tag in ("left", "right") for i in range(20))
    with connect(cfg, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM tokens").fetchall()[0][0] == 40 * 40


def test_waits_for_a_lock_held_by_another_process(tmp_path):
    db = tmp_path / "db.duckdb"
    cfg = StorageConfig(db, lock_timeout_s=20)
    save_trace(cfg, make_record())
    marker = tmp_path / "locked"
    holder = _spawn(tmp_path, HOLDER, str(db), str(marker), "1.0")
    try:
        _wait_for(marker, holder)
        start = time.monotonic()
        assert save_trace(cfg, make_record(seed=1)) == 2
        waited = time.monotonic() - start
    finally:
        holder.communicate(timeout=30)
    assert holder.returncode == 0
    assert waited > 0.3  # it really had to wait for the other process
    assert count_traces(cfg) == 2


def test_lock_timeout_names_file_and_process(tmp_path):
    db = tmp_path / "db.duckdb"
    count_traces(StorageConfig(db))
    marker = tmp_path / "locked"
    holder = _spawn(tmp_path, HOLDER, str(db), str(marker), "30")
    try:
        _wait_for(marker, holder)
        start = time.monotonic()
        with pytest.raises(StorageError) as info:
            count_traces(StorageConfig(db, lock_timeout_s=0.5))
        elapsed = time.monotonic() - start
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    message = str(info.value)
    assert str(db) in message and f"PID {holder.pid}" in message and "locked for 0.5 s" in message
    assert 0.4 < elapsed < 5


def test_threads_share_the_file_and_deduplicate_prompts(tmp_path):
    cfg = StorageConfig(tmp_path / "db.duckdb")
    count_traces(cfg)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(3):
                # Every thread saves the same new prompts at about the same time, and reads
                # (read-only connections) interleave with the writes.
                trace_id = save_trace(cfg, make_record(prompt=f"shared {i}", seed=seed))
                list_traces(cfg, limit=5)
                assert get_trace(cfg, trace_id).record.meta == {"seed": seed}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert count_traces(cfg) == 12
    with connect(cfg, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM prompts").fetchall()[0][0] == 3


def test_thread_waits_for_another_thread_then_times_out(tmp_path):
    cfg = StorageConfig(tmp_path / "db.duckdb")
    count_traces(cfg)
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        with connect(cfg):
            opened.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert opened.wait(10)
        with pytest.raises(StorageError, match="another thread of this process"):
            count_traces(StorageConfig(cfg.db_path, lock_timeout_s=0.2))
        timer = threading.Timer(0.3, release.set)
        timer.start()
        assert count_traces(cfg) == 0  # waits for the holder instead of failing
    finally:
        release.set()
        holder.join(10)
