"""StorageConfig: validation and where the database file is chosen from."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from storage import ConfigError, StorageConfig, StorageError
from storage.config import SEED_PATH, default_db_path


def test_valid_config_normalises_types(tmp_path):
    cfg = StorageConfig(str(tmp_path / "a.duckdb"), lock_timeout_s=3, seed_path=str(tmp_path / "s.jsonl"))
    assert cfg.db_path == tmp_path / "a.duckdb"
    assert cfg.lock_timeout_s == 3.0 and isinstance(cfg.lock_timeout_s, float)
    assert cfg.seed_path == tmp_path / "s.jsonl"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"db_path": ""},
        {"db_path": ":memory:"},
        {"db_path": 42},
        {"db_path": "x.duckdb", "lock_timeout_s": -1},
        {"db_path": "x.duckdb", "lock_timeout_s": float("nan")},
        {"db_path": "x.duckdb", "lock_timeout_s": "5"},
        {"db_path": "x.duckdb", "lock_timeout_s": True},
        {"db_path": "x.duckdb", "seed_path": 3},
    ],
)
def test_invalid_config_is_rejected(kwargs):
    with pytest.raises(ConfigError) as info:
        StorageConfig(**kwargs)
    assert isinstance(info.value, StorageError) and isinstance(info.value, ValueError)


def test_config_is_frozen(tmp_path):
    cfg = StorageConfig(tmp_path / "a.duckdb")
    with pytest.raises(AttributeError):
        cfg.lock_timeout_s = 1.0  # type: ignore[misc]


def test_from_env_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKSCOPE_DB", str(tmp_path / "env.duckdb"))
    assert StorageConfig.from_env(str(tmp_path / "arg.duckdb")).db_path == tmp_path / "arg.duckdb"
    assert StorageConfig.from_env().db_path == tmp_path / "env.duckdb"
    monkeypatch.setenv("THINKSCOPE_DB", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert StorageConfig.from_env().db_path == tmp_path / "xdg" / "thinkscope" / "thinkscope.duckdb"


def test_default_path_without_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("THINKSCOPE_DB", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_db_path() == tmp_path / ".local" / "share" / "thinkscope" / "thinkscope.duckdb"
    # XDG requires ignoring a relative XDG_DATA_HOME.
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    assert default_db_path() == tmp_path / ".local" / "share" / "thinkscope" / "thinkscope.duckdb"


def test_from_env_seeds_from_repo_sample():
    cfg = StorageConfig.from_env("somewhere.duckdb")
    assert cfg.seed_path == SEED_PATH
    assert SEED_PATH == Path(__file__).resolve().parent.parent / "sample_data" / "traces.jsonl"


def test_memory_limit_is_validated_read_from_the_environment_and_applied(tmp_path, monkeypatch):
    from storage.connection import connect

    for bad in (0, 63, 100.5, True, "512"):
        with pytest.raises(ConfigError, match="memory_limit_mb"):
            StorageConfig(db_path=tmp_path / "x.duckdb", memory_limit_mb=bad)
    monkeypatch.setenv("THINKSCOPE_DB_MEMORY_MB", "lots")
    with pytest.raises(ConfigError, match="THINKSCOPE_DB_MEMORY_MB"):
        StorageConfig.from_env(tmp_path / "x.duckdb")
    monkeypatch.setenv("THINKSCOPE_DB_MEMORY_MB", "96")
    config = dataclasses.replace(StorageConfig.from_env(tmp_path / "x.duckdb"), seed_path=None)
    assert config.memory_limit_mb == 96
    with connect(config, read_only=True) as con:
        limit, spill = con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]
    assert limit.startswith("91") and "thinkscope-duckdb" in spill  # 96 MB = 91.5 MiB, as DuckDB prints it


def test_lock_timeout_is_read_from_the_environment_and_validated(tmp_path, monkeypatch):
    # Issue 11, item 2: how long a writer waits for the lock is a setting.
    monkeypatch.delenv("THINKSCOPE_LOCK_TIMEOUT_S", raising=False)
    assert StorageConfig.from_env(tmp_path / "x.duckdb").lock_timeout_s == 15.0
    monkeypatch.setenv("THINKSCOPE_LOCK_TIMEOUT_S", "2.5")
    assert StorageConfig.from_env(tmp_path / "x.duckdb").lock_timeout_s == 2.5
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("THINKSCOPE_LOCK_TIMEOUT_S", bad)
        with pytest.raises(ConfigError, match="THINKSCOPE_LOCK_TIMEOUT_S"):
            StorageConfig.from_env(tmp_path / "x.duckdb")
