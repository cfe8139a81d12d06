"""Schema migrations: numbered SQL files in storage/migrations/, applied once each, in order.

Files are append-only: a released migration is never edited, a change is a new file. Each file
runs in its own transaction together with its row in schema_migrations, so a database is always
at a whole-migration boundary.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from storage.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FIRST_MIGRATION = "001_initial.sql"
_NAME = re.compile(r"^(\d+)_[A-Za-z0-9_\-]+\.sql$")

log = logging.getLogger(__name__)


def migration_files(migrations_dir: Path = MIGRATIONS_DIR) -> list[Path]:
    """Migration files sorted by their number (numerically: 10 comes after 9)."""
    numbered: dict[int, Path] = {}
    for path in migrations_dir.glob("*.sql"):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(path.name, "file name must look like 001_description.sql")
        number = int(match.group(1))
        if number in numbered:
            raise MigrationError(path.name, f"number {number} is also used by {numbered[number].name}")
        numbered[number] = path
    return [numbered[n] for n in sorted(numbered)]


def applied_migrations(con: duckdb.DuckDBPyConnection) -> set[str]:
    exists = con.execute(
        # current_database(): the connection may see other attached databases too.
        "SELECT count(*) FROM information_schema.tables"
        " WHERE table_catalog = current_database() AND table_name = 'schema_migrations'"
    ).fetchall()[0][0]
    if not exists:
        return set()
    return {row[0] for row in con.execute("SELECT name FROM schema_migrations").fetchall()}


def apply_migrations(con: duckdb.DuckDBPyConnection, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied now (empty when up to date)."""
    files = migration_files(migrations_dir)
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
    )
    done = applied_migrations(con)
    unknown = done - {f.name for f in files}
    if unknown:
        # A newer ThinkScope migrated this file. Migrations only add, so older code can usually
        # still work with it; say so instead of refusing to start.
        log.warning("database has migrations this version does not know: %s", ", ".join(sorted(unknown)))

    applied_now = []
    for path in files:
        if path.name in done:
            continue
        try:
            sql = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationError(path.name, f"cannot read the file: {exc}") from exc
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                [path.name, datetime.now(timezone.utc).replace(tzinfo=None)],
            )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(con)
            raise MigrationError(path.name, str(exc)) from exc
        except BaseException:
            _rollback(con)
            raise
        applied_now.append(path.name)
    return applied_now


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # a failed COMMIT has already ended the transaction
