"""`cli.py anchors` and `cli.py branch` as a user runs them: subprocesses, a real database, the real model."""
import json
import os
import subprocess
import sys
from pathlib import Path

from analysis.records import TokenColumns, TraceRecord
from generation.models import EMBEDDED_MODEL
from storage.anchors import branch_of
from storage.config import StorageConfig
from storage.traces import get_trace, save_trace

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, db: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "THINKSCOPE_DB": str(db), "THINKSCOPE_CACHE": str(cache)}
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def _trace(db: Path) -> int:
    return save_trace(StorageConfig(db_path=db, seed_path=None), TraceRecord(
        prompt="What is 2 + 2?", model=EMBEDDED_MODEL, thinking_text="Two plus two is four. Done.",
        answer_text="4", tokens=TokenColumns.empty(), stop_reason="imported", reference_answer="4"))


def test_anchors_json_then_branch(tmp_path, model_cache_dir):
    db = tmp_path / "a.duckdb"
    tid = _trace(db)
    result = run_cli("anchors", "--trace", str(tid), "--samples", "2", "--max-tokens", "4", "--answer-tokens", "4",
                     "--no-forced", "--json", db=db, cache=model_cache_dir)
    assert result.returncode == 0, result.stderr
    assert "estimate: 2 sentences" in result.stderr
    out = json.loads(result.stdout)
    assert (out["generated"], out["stored"], out["total"], out["stopped"]) == (6, 6, 6, False)
    assert [s["text"] for s in out["sentences"]] == ["Two plus two is four.", "Done."]
    assert all(s["resampling_kl"] is not None and s["resampling_kl"] >= 0 for s in out["sentences"])
    again = run_cli("anchors", "--trace", str(tid), "--samples", "2", "--max-tokens", "4", "--answer-tokens", "4",
                    "--no-forced", db=db, cache=model_cache_dir)
    assert again.returncode == 0 and "0 rollouts generated, 6/6 stored" in again.stdout  # resumes: nothing left

    branched = run_cli("branch", "--trace", str(tid), "--sentence", "1", "--replace", "Wait, check it.",
                       "--samples", "2", "--max-tokens", "4", "--json", db=db, cache=model_cache_dir)
    assert branched.returncode == 0, branched.stderr
    ids = json.loads(branched.stdout)["child_trace_ids"]
    config = StorageConfig(db_path=db, seed_path=None)
    assert len(ids) == 2 and all(branch_of(config, i).replacement == "Wait, check it." for i in ids)
    assert get_trace(config, ids[0]).record.thinking_text.startswith("Two plus two is four. Wait, check it.")


def test_bad_requests_are_usage_errors(tmp_path, model_cache_dir):
    db = tmp_path / "b.duckdb"
    tid = _trace(db)
    missing = run_cli("anchors", "--trace", "99", db=db, cache=model_cache_dir)
    assert missing.returncode == 2 and "no trace 99" in missing.stderr
    out_of_range = run_cli("branch", "--trace", str(tid), "--sentence", "5", "--delete", db=db, cache=model_cache_dir)
    assert out_of_range.returncode == 2 and "sentences 0 to 1" in out_of_range.stderr
    both = run_cli("branch", "--trace", str(tid), "--sentence", "0", "--delete", "--replace", "x", db=db,
                   cache=model_cache_dir)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    zero = run_cli("anchors", "--trace", str(tid), "--samples", "0", db=db, cache=model_cache_dir)
    assert zero.returncode == 2 and "samples" in zero.stderr
