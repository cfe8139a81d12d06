"""Exceptions raised by the storage layer.

Callers (the UI, the CLI) show `str(error)` to a person, so every message must say what went
wrong and where without needing the traceback.
"""
from __future__ import annotations

from pathlib import Path


class StorageError(Exception):
    """The database could not be opened, read or written."""


class ConfigError(StorageError, ValueError):
    """A StorageConfig was built from invalid values.

    Also a ValueError so that code treating bad settings generically still catches it.
    """


class MigrationError(StorageError):
    """A schema migration failed; it was rolled back and the database is as before."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"Migration {name} failed and was rolled back: {reason}")


class TraceImportError(StorageError):
    """A trace file could not be imported; nothing from it was stored."""

    def __init__(self, path: Path | str, line: int | None, message: str, field: str | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        where = f"{self.path.name}, line {line}" if line is not None else self.path.name
        what = f"field '{field}': {message}" if field else message
        super().__init__(f"Cannot import {where}: {what}. Nothing from this file was stored.")


class DatabaseBusy(StorageError):
    """Another process (or thread) held the database for longer than lock_timeout_s."""


class TraceQueued(StorageError):
    """The database stayed locked, so finished traces wait in the journal beside it
    (storage/journal.py); they are stored the next time ThinkScope opens the database."""

    def __init__(self, busy: str, journal: Path, count: int) -> None:
        self.journal = Path(journal)
        self.count = count
        what = "The trace is" if count == 1 else f"The {count} traces are"
        super().__init__(
            f"{busy} {what} safe in the journal {self.journal} and will be stored the next time "
            "ThinkScope opens the database (any command or page that writes)."
        )
