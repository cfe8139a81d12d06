"""Short-lived access to the one DuckDB database file.

DuckDB locks the file against every other process for as long as it is open (even read-only
blocks writers). The app and a CLI therefore share the file by opening it only for one operation,
and by retrying briefly when the other side has it.

Opening a file with duckdb.connect costs 20-40 ms, nearly all of it building a fresh DuckDB
instance. So each process keeps one in-memory DuckDB instance and per operation ATTACHes the file
(taking the file lock, about 1 ms) and DETACHes it afterwards (releasing the lock). Within the
process, operations on one file take turns (a re-entrant lock per path): that keeps attach and
detach simple, rules out commit conflicts between threads, and each operation takes milliseconds.
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
from storage.errors import StorageError
from storage.migrate import FIRST_MIGRATION, apply_migrations

log = logging.getLogger(__name__)

T = TypeVar("T")

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
        raise StorageError(
            f"The database {path} stayed busy in another thread of this process for "
            f"{config.lock_timeout_s:g} s; a long import or export may be running."
        )
    try:
        if state.depth == 0:
            _ensure_migrated(config, path, state, deadline)
            _attach(config, path, state, read_only, deadline)
        elif state.read_only and not read_only:
            raise StorageError(f"Cannot write to {path} inside a read-only connect() of the same thread.")
        state.depth += 1
        try:
            con = _host_connection(config).cursor()
            try:
                con.execute(f"USE {state.alias}")
                yield con
            except duckdb.Error as exc:
                raise StorageError(f"Database error in {path}: {exc}") from exc
            finally:
                con.close()  # also rolls back a transaction the block left open
        finally:
            state.depth -= 1
            if state.depth == 0:
                _detach(path, state)
    finally:
        state.lock.release()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK when the block raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the failed statement may already have ended the transaction
        raise
    con.execute("COMMIT")


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
            _host = duckdb.connect(":memory:")
            _host_pid = os.getpid()
            _host_memory_mb = None
            # An in-memory instance has no temporary directory, so it could never spill; give it one.
            spill = Path(tempfile.gettempdir()) / f"thinkscope-duckdb-{os.getpid()}"
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
                raise StorageError(_lock_timeout(config, path, message)) from exc
            # Jitter so that two waiting processes do not retry in lockstep.
            time.sleep(min(remaining, random.uniform(0.5, 1.0) * delay))
            delay = min(_MAX_DELAY_S, delay * 2)
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
    if "not a valid DuckDB database" in message:
        return f"The file {path} exists but is not a DuckDB database. Move it away or choose another path."
    return f"Cannot open the database {path}: {message}"


def _lock_timeout(config: StorageConfig, path: Path, message: str) -> str:
    match = _HOLDER.search(message)
    holder = f"{match.group(1)} (PID {match.group(2)})" if match else "another process"
    return (
        f"The database {path} is in use by {holder} and stayed locked for {config.lock_timeout_s:g} s. "
        "DuckDB allows one process at a time; close the other ThinkScope app or command, "
        "or raise lock_timeout_s."
    )


def _ensure_migrated(config: StorageConfig, path: Path, state: _FileState, deadline: float) -> None:
    key = _cache_key(path)
    if key is not None and key in _migrated:
        return
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
                _seed(con, config)
        finally:
            con.close()
    finally:
        _detach(path, state)
    key = _cache_key(path)
    if key is not None:
        _migrated.add(key)


def _cache_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_dev, st.st_ino)


def _seed(con: duckdb.DuckDBPyConnection, config: StorageConfig) -> None:
    seed = config.seed_path
    if seed is None or not seed.is_file():
        return
    # Imported here: jsonl builds on this module, and seeding is the only way back.
    from storage.jsonl import import_into

    try:
        ids = import_into(con, seed, note="sample data")
    except (StorageError, duckdb.Error) as exc:
        # A broken sample must not keep the app from starting on an empty database.
        log.warning("could not seed %s from %s: %s", config.db_path, seed, exc)
        return
    log.info("seeded %s with %d traces from %s", config.db_path, len(ids), seed)


def forget_migrated() -> None:
    """Make the next connect() check migrations again (tests; a long-lived process after restore)."""
    _migrated.clear()
