"""The command line as a user runs it: a subprocess per command, real database files, real model."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage.config import StorageConfig
from storage.traces import count_traces

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, db: Path, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "THINKSCOPE_DB": str(db), "THINKSCOPE_CACHE": str(cache)}
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "cli.duckdb"


def _count(db: Path) -> int:
    return count_traces(StorageConfig.from_env(db))  # seeded on first use, like the CLI's database


def test_generate_streams_and_stores(db, model_cache_dir, embedded):
    result = run_cli("generate", "--prompt", "What is 3 + 4?", "--answer", "7", "--max-thinking", "24",
                     "--max-answer", "8", db=db, cache=model_cache_dir)
    assert result.returncode == 0, result.stderr
    assert "── thinking ──" in result.stdout
    assert "stored as trace" in result.stdout
    assert f"in {db}" in result.stdout


def test_empty_prompt_is_a_usage_error(db, model_cache_dir):
    result = run_cli("generate", "--prompt", "  ", db=db, cache=model_cache_dir)
    assert result.returncode == 2
    assert "prompt is empty" in result.stderr


def test_malformed_jsonl_names_the_line_and_imports_nothing(db, model_cache_dir, tmp_path):
    good = REPO / "sample_data" / "traces.jsonl"
    lines = good.read_text().splitlines()[:3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    before = _count(db)
    result = run_cli("import", str(bad), db=db, cache=model_cache_dir)
    assert result.returncode == 1
    assert "line 3" in result.stderr
    assert "Nothing from" in result.stderr
    assert _count(db) == before


def test_export_then_import_round_trips(db, model_cache_dir, tmp_path):
    before = _count(db)  # seeded from the sample data
    assert before > 0
    out = tmp_path / "out.jsonl"
    assert run_cli("export", str(out), db=db, cache=model_cache_dir).returncode == 0
    assert len(out.read_text().splitlines()) == before
    other = tmp_path / "other.duckdb"
    result = run_cli("import", str(out), db=other, cache=model_cache_dir)
    assert result.returncode == 0, result.stderr
    # `other` was seeded from the same sample data: every exported trace is already there.
    assert _count(other) == before
    assert f"0 new, {before} already present" in result.stdout + result.stderr
    forced = run_cli("import", str(out), "--allow-duplicates", db=other, cache=model_cache_dir)
    assert forced.returncode == 0, forced.stderr
    assert _count(other) == 2 * before  # seeded once, plus the import
    assert json.loads(out.read_text().splitlines()[0])["format"] == "thinkscope.trace"


def test_unwritable_database_is_a_clear_error(tmp_path, model_cache_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("export", str(tmp_path / "o.jsonl"), db=blocker / "db.duckdb", cache=model_cache_dir)
    assert result.returncode == 1
    assert str(blocker) in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_generate_while_another_process_reads_the_database(db, model_cache_dir, embedded, tmp_path):
    """The app reads the file over and over while a CLI run writes to it: both finish, no lock errors."""
    reader = tmp_path / "reader.py"
    reader.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from storage.config import StorageConfig
        from storage.traces import count_traces, list_traces
        config = StorageConfig(db_path={str(db)!r})
        end = time.monotonic() + 8
        reads = 0
        while time.monotonic() < end:
            list_traces(config); count_traces(config); reads += 1
        print(reads)
    """))
    _count(db)  # create and seed first, so both sides start from the same file
    app_like = subprocess.Popen([sys.executable, str(reader)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = run_cli("generate", "--prompt", "What is 1 + 1?", "--max-thinking", "16", "--max-answer", "4",
                     db=db, cache=model_cache_dir)
    out, err = app_like.communicate(timeout=120)
    assert result.returncode == 0, result.stderr
    assert app_like.returncode == 0, err
    assert int(out.strip()) > 10
