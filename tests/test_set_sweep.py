"""Sweeps over a prompt set (cli.py sweep --prompts) and the oracle on top (cli.py budget oracle)."""
import json
import threading

import numpy as np

import cli
from analysis.budget_oracle import frontier_accuracy_at, FrontierPoint
from analysis.reasoning import ReasoningFormat
from generation.sweep import SetSweepSettings, run_set_sweep, set_sweep_table
from storage.config import StorageConfig
from storage.runs import get_run


def _json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _prompts(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "What is 2 + 6?", "answer": "8"}, {"prompt": "What is 3 + 4?", "answer": "7"},
        {"prompt": "What is 5 + 5?", "answer": "10"}]) + "\n")
    return path


def test_set_sweep_then_oracle_frontier_dominates_fixed_budgets(embedded, tmp_path, capsys):
    db = str(tmp_path / "set.duckdb")
    argv = ["--db", db, "sweep", "--prompts", str(_prompts(tmp_path)), "--budgets", "6,24", "--samples", "2",
            "--max-answer", "8", "--json"]
    assert cli.main(argv) == 0
    first = _json(capsys)
    assert first["prompts"] == 3 and first["missing_cells"] == 0
    assert len(first["per_prompt_accuracy"]) == 3 and all(len(row) == 2 for row in first["per_prompt_accuracy"])
    assert [r["budget"] for r in first["rows"]] == [6, 24]
    # Again: the same set sweep, nothing generated twice.
    assert cli.main(argv) == 0
    again = _json(capsys)
    assert again["sweep_id"] == first["sweep_id"] and again["per_prompt_accuracy"] == first["per_prompt_accuracy"]

    assert cli.main(["--db", db, "budget", "oracle", "--sweep", str(first["sweep_id"]), "--bootstrap", "50",
                     "--json"]) == 0
    oracle = _json(capsys)
    frontier = [FrontierPoint(r["mean_thinking_tokens"], r["accuracy"], ()) for r in oracle["rows"]]
    for fixed in oracle["fixed_budgets"]:
        assert frontier_accuracy_at(frontier, fixed["mean_thinking_tokens"]) >= fixed["accuracy"] - 1e-12
    # the per-prompt accuracy the sweep printed is what the oracle's best fixed budget averages
    acc = np.array(first["per_prompt_accuracy"], dtype=float)
    assert oracle["best_fixed_accuracy"] == max(acc.mean(axis=0))
    assert 0.0 <= oracle["fraction_saved"] <= 1.0


def test_stopped_set_sweep_resumes_into_the_same_run(embedded, tmp_path):
    config = StorageConfig(tmp_path / "stop.duckdb")
    settings = SetSweepSettings((("What is 2 + 6?", "8"), ("What is 3 + 4?", "7")), (4, 8), 1,
                                max_answer_tokens=4)
    fmt = ReasoningFormat()
    stop = threading.Event()

    def progress(done, total, tokens):
        if done >= 2:  # the first prompt's cells are stored: stop before the second prompt
            stop.set()

    first = run_set_sweep(config, embedded, fmt, settings, progress, stop)
    assert first.stopped and first.missing == 2
    assert get_run(config, first.run_id)["status"] == "interrupted"
    second = run_set_sweep(config, embedded, fmt, settings)
    assert second.run_id == first.run_id and second.missing == 0 and not second.stopped
    assert get_run(config, first.run_id)["status"] == "complete"
    table = set_sweep_table(config, first.run_id)
    assert table.n_graded.tolist() == [[1, 1], [1, 1]]
    assert all(len(ids) == 1 for row in table.trace_ids for ids in row)


def test_oracle_on_a_run_that_is_not_a_set_sweep(tmp_path, capsys):
    db = str(tmp_path / "empty.duckdb")
    assert cli.main(["--db", db, "budget", "oracle", "--sweep", "999"]) == cli.EXIT_USAGE
    assert "run 999 is not a sweep over a prompt set (no such run)" in capsys.readouterr().err
