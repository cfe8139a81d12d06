"""Where the database lives and how long to wait for it."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from storage.errors import ConfigError

ENV_DB = "THINKSCOPE_DB"
ENV_MEMORY_MB = "THINKSCOPE_DB_MEMORY_MB"
ENV_LOCK_TIMEOUT_S = "THINKSCOPE_LOCK_TIMEOUT_S"
_MIN_MEMORY_MB = 64
DB_FILENAME = "thinkscope.duckdb"
# Resolved from this file rather than the working directory so that the app, the CLI and tests
# started from anywhere seed from the same sample.
SEED_PATH = Path(__file__).resolve().parent.parent / "sample_data" / "traces.jsonl"


@dataclass(frozen=True)
class StorageConfig:
    """Settings of the storage layer; every query function takes one.

    lock_timeout_s: how long to keep retrying while another process holds the DuckDB file lock
    ($THINKSCOPE_LOCK_TIMEOUT_S). A finished generation that still finds the file locked then is
    kept in the journal beside the database (storage/journal.py) and stored on a later open.
    seed_path: JSONL file imported into a freshly created database; None (or a missing file)
    means start empty.
    memory_limit_mb: DuckDB's memory limit for this process. Beyond it DuckDB spills to a temporary
    directory, which is what keeps a one-transaction import of a huge file bounded (without a
    limit the uncommitted rows of a 400,000-trace import took 600 MiB; BENCHMARKS.md, issue 5).
    """

    db_path: Path
    lock_timeout_s: float = 15.0
    seed_path: Path | None = None
    memory_limit_mb: int = 512

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__; accepting str keeps call sites short.
        if isinstance(self.db_path, str):
            if not self.db_path.strip():
                raise ConfigError("StorageConfig.db_path must not be empty")
            object.__setattr__(self, "db_path", Path(self.db_path))
        if not isinstance(self.db_path, Path):
            raise ConfigError(f"StorageConfig.db_path must be a path, got {type(self.db_path).__name__}")
        if str(self.db_path) == ":memory:":
            # Every operation opens its own connection, so an in-memory database would vanish
            # between calls.
            raise ConfigError("StorageConfig.db_path must be a file; ':memory:' is not supported")
        object.__setattr__(self, "db_path", self.db_path.expanduser())

        if isinstance(self.seed_path, str):
            object.__setattr__(self, "seed_path", Path(self.seed_path))
        if self.seed_path is not None:
            if not isinstance(self.seed_path, Path):
                raise ConfigError(f"StorageConfig.seed_path must be a path or None, got {type(self.seed_path).__name__}")
            object.__setattr__(self, "seed_path", self.seed_path.expanduser())

        timeout = self.lock_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout < 0:
            raise ConfigError(f"StorageConfig.lock_timeout_s must be a finite number of seconds >= 0, got {timeout!r}")
        object.__setattr__(self, "lock_timeout_s", float(timeout))
        limit = self.memory_limit_mb
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < _MIN_MEMORY_MB:
            raise ConfigError(f"StorageConfig.memory_limit_mb must be an integer >= {_MIN_MEMORY_MB}, got {limit!r}")

    @classmethod
    def from_env(cls, db: str | os.PathLike | None = None) -> "StorageConfig":
        """Pick the database file: explicit `db` > $THINKSCOPE_DB > the user's data directory."""
        chosen = db if db not in (None, "") else os.environ.get(ENV_DB) or None
        path = Path(chosen) if chosen is not None else default_db_path()
        extra: dict = {}
        memory = os.environ.get(ENV_MEMORY_MB, "").strip()
        if memory:
            if not memory.isdigit():
                raise ConfigError(f"${ENV_MEMORY_MB} must be a whole number of MiB, got {memory!r}")
            extra["memory_limit_mb"] = int(memory)
        timeout = os.environ.get(ENV_LOCK_TIMEOUT_S, "").strip()
        if timeout:
            try:
                extra["lock_timeout_s"] = float(timeout)
            except ValueError:
                raise ConfigError(f"${ENV_LOCK_TIMEOUT_S} must be a number of seconds, got {timeout!r}") from None
            if not math.isfinite(extra["lock_timeout_s"]) or extra["lock_timeout_s"] < 0:
                raise ConfigError(f"${ENV_LOCK_TIMEOUT_S} must be a finite number of seconds >= 0, got {timeout!r}")
        return cls(db_path=path, seed_path=SEED_PATH, **extra)


def default_db_path() -> Path:
    # XDG says relative values of XDG_DATA_HOME are invalid and must be ignored.
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "thinkscope" / DB_FILENAME
