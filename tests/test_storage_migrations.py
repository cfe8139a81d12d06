"""Migration runner: order, once-only application, rollback; and migrations on first connect."""
from __future__ import annotations

import duckdb
import pytest

from storage import MigrationError, StorageConfig, apply_migrations, connect
from storage import connection as connection_module
from storage.migrate import MIGRATIONS_DIR, migration_files


def _write(dirpath, name, sql):
    (dirpath / name).write_text(sql, encoding="utf-8")


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "m.duckdb"))
    yield c
    c.close()


def test_applies_in_numeric_order_once(tmp_path, con):
    mig = tmp_path / "migrations"
    mig.mkdir()
    # 10 must run after 2 although "10_" sorts before "2_" as text.
    _write(mig, "10_third.sql", "INSERT INTO log VALUES ('third');")
    _write(mig, "2_second.sql", "INSERT INTO log VALUES ('second');")
    _write(mig, "001_first.sql", "CREATE TABLE log (step VARCHAR); INSERT INTO log VALUES ('first');")

    assert apply_migrations(con, mig) == ["001_first.sql", "2_second.sql", "10_third.sql"]
    assert [r[0] for r in con.execute("SELECT step FROM log").fetchall()] == ["first", "second", "third"]

    # A second run applies nothing: the INSERTs would otherwise duplicate rows.
    assert apply_migrations(con, mig) == []
    assert con.execute("SELECT count(*) FROM log").fetchall()[0][0] == 3
    names = [r[0] for r in con.execute("SELECT name FROM schema_migrations ORDER BY applied_at, name").fetchall()]
    assert sorted(names) == ["001_first.sql", "10_third.sql", "2_second.sql"]

    # Adding a file later applies only that one.
    _write(mig, "011_fourth.sql", "INSERT INTO log VALUES ('fourth');")
    assert apply_migrations(con, mig) == ["011_fourth.sql"]
    assert con.execute("SELECT count(*) FROM log").fetchall()[0][0] == 4


def test_failing_migration_rolls_back_entirely(tmp_path, con):
    mig = tmp_path / "migrations"
    mig.mkdir()
    _write(mig, "001_ok.sql", "CREATE TABLE a (x INTEGER);")
    _write(mig, "002_bad.sql", "CREATE TABLE b (x INTEGER); INSERT INTO a VALUES (1); SELECT * FROM no_such_table;")
    _write(mig, "003_after.sql", "CREATE TABLE c (x INTEGER);")

    with pytest.raises(MigrationError) as info:
        apply_migrations(con, mig)
    assert "002_bad.sql" in str(info.value) and info.value.name == "002_bad.sql"

    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "a" in tables and "b" not in tables and "c" not in tables
    assert con.execute("SELECT count(*) FROM a").fetchall()[0][0] == 0
    assert [r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()] == ["001_ok.sql"]

    # Fixing the file lets the runner continue where it stopped.
    _write(mig, "002_bad.sql", "CREATE TABLE b (x INTEGER);")
    assert apply_migrations(con, mig) == ["002_bad.sql", "003_after.sql"]


def test_bad_file_names_are_rejected(tmp_path, con):
    mig = tmp_path / "migrations"
    mig.mkdir()
    _write(mig, "001_a.sql", "SELECT 1;")
    _write(mig, "01_b.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="01_b.sql|001_a.sql"):
        apply_migrations(con, mig)
    (mig / "01_b.sql").unlink()
    _write(mig, "initial.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="initial.sql"):
        apply_migrations(con, mig)


def test_shipped_migrations_are_numbered_and_start_with_initial():
    files = migration_files(MIGRATIONS_DIR)
    assert files[0].name == "001_initial.sql"
    numbers = [int(f.name.split("_")[0]) for f in files]
    assert numbers == list(range(1, len(files) + 1))


def test_first_connect_migrates_once_per_process(tmp_path, monkeypatch):
    calls = []
    real = connection_module.apply_migrations
    monkeypatch.setattr(connection_module, "apply_migrations", lambda con: calls.append(1) or real(con))
    cfg = StorageConfig(tmp_path / "sub" / "dir" / "db.duckdb")
    for _ in range(3):
        with connect(cfg) as con:
            tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert len(calls) == 1
    assert {"prompts", "runs", "traces", "tokens", "schema_migrations"} <= tables
    with connect(cfg, read_only=True) as con:
        names = [r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()]
    assert names == [f.name for f in migration_files()]


def test_recreated_file_is_migrated_again(tmp_path):
    cfg = StorageConfig(tmp_path / "db.duckdb")
    with connect(cfg):
        pass
    cfg.db_path.unlink()
    with connect(cfg, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM traces").fetchall()[0][0] == 0
