"""Short-lived access to the one DuckDB database file.

DuckDB locks the file against every other process for as long as it is open (even read-only
blocks writers). The app and a CLI therefore share the file by opening it only for one operation,
and by retrying briefly when the other side has it.

Opening a file with duckdb.connect costs 20-40 ms, nearly all of it building a fresh DuckDB
instance. So each process keeps one in-memory DuckDB instance and per operation ATTACHes the file
(taking the file lock, about 1 ms) and DETACHes it afterwards (releasing the lock). Within the
process, operations on one file take turns (a re-entrant lock per path): that keeps attach and
detach simple, rules out commit conflicts between threads, and each operation takes milliseconds.

An open that may write first stores what waits in the journal beside the file (storage/journal.py);
a process waiting for the lock leaves a marker (<db>.waiting/) so that long exports let it in
between their chunks (yield_to_writers).
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb

from storage.config import StorageConfig
from storage import journal
from storage.errors import DatabaseBusy, MigrationError, StorageError
from storage.files import pid_alive, remove_stale
from storage.migrate import FIRST_MIGRATION, applied_migrations, apply_migrations, migration_files
from storage.seed import seed_new_database
from storage.writes import transaction  # noqa: F401 (part of this module's API)

log = logging.getLogger(__name__)

T = TypeVar("T")

SPILL_PREFIX = "thinkscope-duckdb-"  # + pid: DuckDB's temporary (spill) folder of one process
_LOCK_MARKERS = ("Could not set lock", "Conflicting lock")
_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")

# A failed attach costs little, but the cap keeps the file from sitting idle while a waiting
# process sleeps after the holder is done.
_FIRST_DELAY_S = 0.005
_MAX_DELAY_S = 0.05


@dataclass
class _FileState:
    """This process's view of one database file; fields change only under `lock`."""

    alias: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0  # nested connect() calls of the thread holding `lock`
    read_only: bool = False


_files: dict[str, _FileState] = {}
_files_guard = threading.Lock()
_host: duckdb.DuckDBPyConnection | None = None
_host_pid = -1
_host_memory_mb: int | None = None

# Files already migrated by this process, keyed by path and inode so that a database file that
# is deleted and recreated while the app runs gets migrated again. Guarded by the path's lock.
_migrated: set[tuple[str, int, int]] = set()


@contextmanager
def connect(config: StorageConfig, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection whose default database is the file, for one operation.

    Waits at most config.lock_timeout_s in total for other threads and processes. The first call
    per process and file creates the parent directory, applies pending migrations and seeds a
    brand-new database. DuckDB errors inside the block come out as StorageError. Nested calls in
    one thread share the outer attachment (a read-write one serves nested reads).
    """
    path = _checked_path(config)
    state = _state(path)
    deadline = time.monotonic() + config.lock_timeout_s
    if not state.lock.acquire(timeout=config.lock_timeout_s):
        raise DatabaseBusy(
            f"The database {path} stayed busy in another thread of this process for "
            f"{config.lock_timeout_s:g} s; a long import or export may be running."
        )
    try:
        if state.depth == 0:
            _ensure_migrated(config, path, state, deadline, read_only)
            # Traces waiting in the journal are stored by the next open that may write, reads included.
            replay = bool(journal.pending(config)) and (not read_only or _writable(path))
            _attach(config, path, state, read_only and not replay, deadline)
            if replay:
                _replay_journal(config, state)
        elif state.read_only and not read_only:
            raise StorageError(f"Cannot write to {path} inside a read-only connect() of the same thread.")
        state.depth += 1
        failed = False
        try:
            con = _host_connection(config).cursor()
            try:
                con.execute(f"USE {state.alias}")
                yield con
            except duckdb.Error as exc:
                failed = True
                raise StorageError(f"Database error in {path}: {exc}") from exc
            except BaseException:
                failed = True
                raise
            finally:
                con.close()  # also rolls back a transaction the block left open
        finally:
            state.depth -= 1
            if state.depth == 0:
                if failed and not state.read_only:
                    _reclaim(state)
                _detach(path, state)
    finally:
        state.lock.release()


def write(config: StorageConfig, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """Run `work` in one read-write transaction."""
    with connect(config) as con, transaction(con):
        return work(con)


def _state(path: Path) -> _FileState:
    with _files_guard:
        state = _files.get(str(path))
        if state is None:
            alias = "thinkscope_" + hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:12]
            state = _files[str(path)] = _FileState(alias)
        return state


def _host_connection(config: StorageConfig | None = None) -> duckdb.DuckDBPyConnection:
    global _host, _host_pid, _host_memory_mb
    with _files_guard:
        # A forked child must not use its parent's instance.
        if _host is None or _host_pid != os.getpid():
            # No extension is ever loaded or downloaded behind our back: ATTACHing a SQLite (or other
            # foreign) file would otherwise fetch a scanner extension from the network.
            _host = duckdb.connect(":memory:", config={"autoload_known_extensions": False,
                                                       "autoinstall_known_extensions": False})
            _host_pid = os.getpid()
            _host_memory_mb = None
            # An in-memory instance has no temporary directory, so it could never spill; give it one.
            spill = Path(tempfile.gettempdir()) / f"{SPILL_PREFIX}{os.getpid()}"
            # Spill folders of processes killed mid-query (kill -9) are never removed by DuckDB.
            remove_stale(Path(tempfile.gettempdir()), SPILL_PREFIX)
            _host.execute(f"SET temp_directory = '{sql_literal(str(spill))}'")
        if config is not None and config.memory_limit_mb != _host_memory_mb:
            _host.execute(f"SET memory_limit = '{int(config.memory_limit_mb)}MB'")
            _host_memory_mb = config.memory_limit_mb
        return _host


def sql_literal(text: str) -> str:
    """text inside a single-quoted SQL literal, for the statements that take no parameters."""
    return text.replace("'", "''")


def _checked_path(config: StorageConfig) -> Path:
    path = config.db_path.absolute()
    if path.is_dir():
        raise StorageError(f"The database path {path} is a directory; expected a DuckDB file (e.g. {path / 'thinkscope.duckdb'}).")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StorageError(f"Cannot create the directory {path.parent} for the database {path.name}: {reason}.") from exc
    return path


def _attach(config: StorageConfig, path: Path, state: _FileState, read_only: bool, deadline: float) -> None:
    """ATTACH the file, retrying while another process holds its lock."""
    quoted = sql_literal(str(path))  # ATTACH takes no parameters; the path is a literal
    sql = f"ATTACH '{quoted}' AS {state.alias}" + (" (READ_ONLY)" if read_only else "")
    host = _host_connection()
    delay = _FIRST_DELAY_S
    waiting: Path | None = None
    try:
        while True:
            con = host.cursor()
            try:
                # Left over only if an earlier DETACH failed; attaching again would clash with it.
                con.execute(f"DETACH DATABASE IF EXISTS {state.alias}")
                con.execute(sql)
                state.read_only = read_only
                return
            except duckdb.Error as exc:
                message = str(exc)
                if not any(marker in message for marker in _LOCK_MARKERS):
                    raise StorageError(_open_failure(path, message)) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DatabaseBusy(_lock_timeout(config, path, message)) from exc
                if waiting is None:
                    waiting = _mark_waiting(path)
                # Jitter so that two waiting processes do not retry in lockstep.
                time.sleep(min(remaining, random.uniform(0.5, 1.0) * delay))
                delay = min(_MAX_DELAY_S, delay * 2)
            finally:
                con.close()
    finally:
        if waiting is not None:
            waiting.unlink(missing_ok=True)


def _reclaim(state: _FileState) -> None:
    """Give back the space a rolled-back write (a failed import) left in the file.

    DuckDB writes the blocks of a big uncommitted transaction into the file and, after ROLLBACK,
    keeps the file that long until a checkpoint writes something; a CHECKPOINT alone does not
    truncate it (measured: a failed 127 MB import left a 4.7 MB database at 20.7 MB). A throwaway
    table makes the checkpoint write, which truncates the free tail. Best effort: never raises.
    """
    con = _host_connection().cursor()
    try:
        con.execute(f"USE {state.alias}")
        con.execute("CREATE OR REPLACE TABLE thinkscope_reclaim AS SELECT 1 AS x")
        con.execute("DROP TABLE thinkscope_reclaim")
        con.execute("CHECKPOINT")
    except duckdb.Error as exc:
        log.info("could not reclaim space after a failed write: %s", exc)
    finally:
        con.close()


def _detach(path: Path, state: _FileState) -> None:
    con = _host_connection().cursor()
    try:
        con.execute(f"DETACH DATABASE IF EXISTS {state.alias}")
    except duckdb.Error as exc:
        raise StorageError(f"Could not close the database {path}: {exc}") from exc
    finally:
        con.close()


def _open_failure(path: Path, message: str) -> str:
    if "Permission denied" in message:
        return f"Cannot open the database {path}: permission denied. Choose a writable location (THINKSCOPE_DB)."
    if "Extension" in message and ("sqlite" in message or "scanner" in message):
        return f"The file {path} is not a DuckDB database (it looks like another database format, e.g. SQLite). Move it away or choose another path."
    if "not a valid DuckDB database" in message:
        return f"The file {path} exists but is not a DuckDB database. Move it away or choose another path."
    return f"Cannot open the database {path}: {message}"


def _lock_timeout(config: StorageConfig, path: Path, message: str) -> str:
    match = _HOLDER.search(message)
    holder = f"{match.group(1)} (PID {match.group(2)})" if match else "another process"
    return (
        f"The database {path} is in use by {holder} and stayed locked for {config.lock_timeout_s:g} s. "
        "DuckDB allows one process at a time; close the other ThinkScope app or command, "
        "or wait longer with THINKSCOPE_LOCK_TIMEOUT_S."
    )


def _ensure_migrated(config: StorageConfig, path: Path, state: _FileState, deadline: float, read_only: bool) -> None:
    """Apply pending migrations (and seed a new file) on the first open per process and file.

    An existing file is checked through a read-only attachment first, so a read-only command on
    an up-to-date database that the user may not write (a shared copy, a read-only mount) works;
    when it does need migrating and cannot be written, the error says so.
    """
    key = _cache_key(path)
    if key is not None and key in _migrated:
        return
    todo = _pending_migrations(config, path, state, deadline) if key is not None else ["(new database)"]
    writable = _writable(path)
    if key is not None and todo and read_only and not writable:
        raise MigrationError(
            todo[0],
            f"the database {path} was written by an older ThinkScope and needs the migrations "
            f"{', '.join(todo)} before this version can read it, but it is read-only here. Open it once "
            "with write access (or work on a writable copy); nothing was changed",
        )
    if todo or (writable and journal.pending(config)):
        _attach(config, path, state, read_only=False, deadline=deadline)
        try:
            con = _host_connection().cursor()
            try:
                con.execute(f"USE {state.alias}")
                try:
                    applied = apply_migrations(con)
                except duckdb.Error as exc:
                    raise StorageError(f"Cannot prepare the database {path}: {exc}") from exc
                if FIRST_MIGRATION in applied:
                    seed_new_database(con, config)
                # The next open after a crash or a long lock: traces left in the journal are stored now.
                journal.replay_into(con, config)
            finally:
                con.close()
        finally:
            _detach(path, state)
    key = _cache_key(path)
    if key is not None:
        _migrated.add(key)


def _pending_migrations(config: StorageConfig, path: Path, state: _FileState, deadline: float) -> list[str]:
    """Names of the migrations an existing file lacks, read through a read-only attachment."""
    _attach(config, path, state, read_only=True, deadline=deadline)
    try:
        con = _host_connection().cursor()
        try:
            con.execute(f"USE {state.alias}")
            done = applied_migrations(con)
        except duckdb.Error as exc:
            raise StorageError(f"Cannot read the database {path}: {exc}") from exc
        finally:
            con.close()
    finally:
        _detach(path, state)
    return [f.name for f in migration_files() if f.name not in done]


def _writable(path: Path) -> bool:
    # DuckDB also writes a .wal file beside the database, so the folder must be writable too.
    target = path if path.exists() else path.parent
    return os.access(target, os.W_OK) and os.access(path.parent, os.W_OK)


def _replay_journal(config: StorageConfig, state: _FileState) -> None:
    con = _host_connection().cursor()
    try:
        con.execute(f"USE {state.alias}")
        journal.replay_into(con, config)
    finally:
        con.close()


def _waiting_dir(path: Path) -> Path:
    return path.with_name(path.name + ".waiting")


def _mark_waiting(path: Path) -> Path | None:
    """A file that tells long readers (exports) of other processes that this one waits for the lock."""
    folder = _waiting_dir(path)
    marker = folder / f"{os.getpid()}-{threading.get_ident()}"
    try:
        folder.mkdir(exist_ok=True)
        marker.touch()
    except OSError:
        return None  # only a courtesy: waiting still works, just less fairly
    return marker


def yield_to_writers(config: StorageConfig) -> None:
    """Between two chunks of a long read: wait while another live process waits for the lock.

    A long export re-attaches the file for every chunk; without this its next attach would
    usually win against a writer that is sleeping between retries, and the writer would starve.
    Bounded by lock_timeout_s; markers of dead processes are ignored (and removed).
    """
    folder = _waiting_dir(config.db_path.absolute())
    deadline = time.monotonic() + config.lock_timeout_s
    while time.monotonic() < deadline:
        try:
            names = os.listdir(folder)
        except OSError:
            return
        waiting = False
        for name in names:
            pid = name.split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            if pid_alive(int(pid)):
                waiting = True
            else:
                (folder / name).unlink(missing_ok=True)
        if not waiting:
            return
        time.sleep(_MAX_DELAY_S)


def _cache_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_dev, st.st_ino)


def forget_migrated() -> None:
    """Make the next connect() check migrations again (tests; a long-lived process after restore)."""
    _migrated.clear()
