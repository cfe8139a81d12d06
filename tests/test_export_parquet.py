"""Parquet export of traces and tokens, read back with pyarrow and DuckDB and compared with storage."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from storage import TraceFilter, get_trace, save_traces
from storage.errors import StorageError
from storage.parquet_export import TOKENS_FILE, TRACES_FILE, export_parquet
from storage.testing import make_record

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def stored(db_config):
    records = [
        make_record(prompt="What is 2 + 3?", model="alpha", n_tokens=7, seed=1),
        make_record(prompt="Caf\u00e9 \U0001f914 <b>?</b>", model="beta", n_tokens=4, k=2, seed=2, correct=False,
                    extracted_answer="6", meta={"note": "x", "nested": [1, None]}),
        make_record(prompt="No tokens", model="alpha", n_tokens=0, seed=3, correct=None, reference_answer=None),
    ]
    return db_config, save_traces(db_config, records)


def test_every_trace_and_token_comes_back(stored, tmp_path):
    cfg, ids = stored
    done = export_parquet(cfg, tmp_path / "out")
    assert (done.n_traces, done.n_tokens) == (3, 11)
    traces = pq.read_table(done.traces_path).to_pylist()
    tokens = pq.read_table(done.tokens_path)
    assert [t["trace_id"] for t in traces] == ids
    for row in traces:
        record = get_trace(cfg, row["trace_id"]).record
        assert row["prompt"] == record.prompt and row["model"] == record.model
        assert row["thinking_text"] == record.thinking_text and row["answer_text"] == record.answer_text
        assert row["correct"] == record.correct and row["reference_answer"] == record.reference_answer
        assert json.loads(row["meta"]) == record.meta and json.loads(row["settings"]) == record.settings
        assert row["n_tokens"] == len(record.tokens) and row["strategy"] == record.strategy
        mine = tokens.filter(tokens["trace_id"].to_numpy() == row["trace_id"])
        cols = record.tokens
        assert mine["position"].to_pylist() == list(range(len(cols)))
        assert mine["text"].to_pylist() == cols.text
        np.testing.assert_array_equal(mine["token_id"].to_numpy(), cols.token_id)
        np.testing.assert_array_equal(mine["logprob"].to_numpy(zero_copy_only=False), cols.logprob)  # NaN kept
        assert mine["top_texts"].to_pylist() == cols.top_texts
        got_top = [[v for v in row] for row in mine["top_logprobs"].to_pylist()]
        np.testing.assert_array_equal(np.array(got_top, np.float32).reshape(cols.top_logprobs.shape), cols.top_logprobs)
        np.testing.assert_array_equal(mine["phase"].to_numpy(), cols.phase)
    assert math.isnan(tokens["logprob"].to_pylist()[1])


def test_duckdb_reads_the_files_and_joins_them(stored, tmp_path):
    cfg, _ = stored
    done = export_parquet(cfg, tmp_path)
    rows = duckdb.sql(
        f"SELECT t.model, count(k.trace_id) FROM '{done.traces_path}' t "
        f"LEFT JOIN '{done.tokens_path}' k USING (trace_id) GROUP BY t.model ORDER BY t.model"
    ).fetchall()
    assert rows == [("alpha", 7), ("beta", 4)]


def test_filtered_export(stored, tmp_path):
    cfg, ids = stored
    done = export_parquet(cfg, tmp_path, TraceFilter(models=("beta",)))
    assert pq.read_table(done.traces_path)["trace_id"].to_pylist() == [ids[1]]
    assert set(pq.read_table(done.tokens_path)["trace_id"].to_pylist()) == {ids[1]}
    done = export_parquet(cfg, tmp_path, trace_ids=[ids[0], 999])
    assert (done.n_traces, done.n_tokens) == (1, 7)


def test_empty_selection_writes_empty_files_with_the_schema(stored, tmp_path):
    cfg, _ = stored
    done = export_parquet(cfg, tmp_path, TraceFilter(prompt_contains="nothing matches"))
    assert done.n_traces == 0
    assert pq.read_table(done.traces_path).num_rows == 0
    assert "top_logprobs" in pq.read_table(done.tokens_path).column_names


def test_unwritable_target_is_a_clear_error_and_leaves_nothing(stored, tmp_path):
    cfg, _ = stored
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="Cannot write to"):
        export_parquet(cfg, blocker / "out")
    out = tmp_path / "out"
    export_parquet(cfg, out)
    assert sorted(p.name for p in out.iterdir()) == [TOKENS_FILE, TRACES_FILE]  # no temporary directory left


def test_cli_export_parquet_and_import_formats(tmp_path):
    db = tmp_path / "cli.duckdb"
    env = {"THINKSCOPE_DB": str(db), "PATH": "/usr/bin:/bin"}
    raw = tmp_path / "out.txt"
    raw.write_text("<think>plan</think>done")

    def cli(*args):
        return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)

    result = cli("import", str(raw), "--format", "raw")
    assert result.returncode == 0, result.stderr
    assert "imported 1 new, 0 already present (raw)" in result.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    result = cli("import", str(bad))
    assert result.returncode == 1 and "cannot tell which format" in result.stderr and "Nothing from" in result.stderr
    result = cli("export", "--format", "parquet", str(tmp_path / "pq"))
    assert result.returncode == 0, result.stderr
    texts = pq.read_table(tmp_path / "pq" / TRACES_FILE)["answer_text"].to_pylist()
    assert "done" in texts  # seeded sample traces plus the import
