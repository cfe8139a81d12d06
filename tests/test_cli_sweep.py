"""`cli.py sweep` and `cli.py run`: JSON summary, resume, bad input."""
import json

import cli


def _json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sweep_prints_json_and_resumes(embedded, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("THINKSCOPE_DB", str(tmp_path / "cli.duckdb"))
    argv = ["sweep", "--prompt", "What is 2 + 6?", "--answer", "8", "--budgets", "6,12", "--samples", "2",
            "--max-answer", "6", "--json"]
    assert cli.main(argv) == 0
    first = _json(capsys)
    assert first["generated"] == 4 and first["missing"] == 0
    assert [r["budget"] for r in first["rows"]] == [6, 12] and all(r["n"] == 2 for r in first["rows"])
    assert cli.main(argv) == 0
    again = _json(capsys)
    assert again["generated"] == 0 and again["run_id"] is None and again["rows"] == first["rows"]
    # The plain table too.
    assert cli.main(argv[:-1]) == 0
    out = capsys.readouterr().out
    assert "budget" in out and "accuracy" in out and "generated: 0" in out


def test_sweep_without_answer_says_accuracy_is_unknown(embedded, tmp_path, capsys):
    db = str(tmp_path / "cli.duckdb")
    assert cli.main(["--db", db, "sweep", "--prompt", "Hi", "--budgets", "4", "--samples", "1", "--max-answer", "2",
                     "--json"]) == 0
    out = _json(capsys)
    assert out["note"] == "no reference answer: accuracy is unknown"
    assert out["rows"][0]["accuracy"] == "unknown"


def test_sweep_bad_input(tmp_path, capsys):
    db = str(tmp_path / "cli.duckdb")
    for budgets, message in (("", "empty"), ("64,32", "increasing"), ("a,b", "whole numbers")):
        assert cli.main(["--db", db, "sweep", "--prompt", "x", "--budgets", budgets]) == cli.EXIT_USAGE
        assert message in capsys.readouterr().err
    assert cli.main(["--db", db, "sweep", "--prompt", "x", "--budgets", "8", "--samples", "0"]) == cli.EXIT_USAGE
    assert "N must be at least 1" in capsys.readouterr().err


def test_run_strategy_over_a_prompt_file(embedded, tmp_path, capsys):
    db = str(tmp_path / "cli.duckdb")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "What is 2 + 6?", "answer": "8"}\n{"prompt": "What is 1 + 1?"}\n')
    assert cli.main(["--db", db, "run", "--strategy", "self_consistency", "--prompts", str(prompts), "--n", "2",
                     "--max-thinking", "8", "--max-answer", "6", "--price", "1.5", "--json"]) == 0
    out = _json(capsys)
    assert out["strategy"] == "self_consistency" and len(out["rows"]) == 2
    assert out["rows"][1]["correct"] is None and out["cost_usd"] > 0
    assert cli.main(["--db", db, "run", "--strategy", "nope", "--prompts", str(prompts)]) == cli.EXIT_USAGE
    assert "unknown strategy" in capsys.readouterr().err
    assert cli.main(["--db", db, "run", "--strategy", "greedy", "--prompts", str(prompts), "--n", "0"]) == cli.EXIT_USAGE
