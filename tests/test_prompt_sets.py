"""Prompt sets: presets from local files with each benchmark's real schema, field mappings, bad
files, the offline hub error, storing sets in DuckDB, and `cli.py run/sweep --prompts`."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cli
from generation.prompt_sets import PRESETS, PromptSetError, PromptSource, load_prompt_set, parse_hub_spec
from storage.errors import StorageError
from storage.prompt_sets import PromptRow, PromptSetExists, get_prompt_set, list_prompt_sets, save_prompt_set

GSM8K_ROWS = [  # openai/gsm8k main: question, answer ("... #### N")
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "A shop sells 1,000 pens a day for 2 days. How many pens?", "answer": "1000*2=2000\n#### 2,000"},
    {"question": "Third?", "answer": "#### 3"},
]
MATH500_ROWS = [  # HuggingFaceH4/MATH-500: problem, solution, answer, subject, level, unique_id
    {"problem": "Compute $\\dfrac{7}{14}$.", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "answer": "\\frac{1}{2}",
     "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "What is $\\sqrt{8}$?", "solution": "$\\boxed{2\\sqrt{2}}$", "answer": "2\\sqrt{2}",
     "subject": "Algebra", "level": 2, "unique_id": "test/algebra/2.json"},
]
AIME2024_ROWS = [  # HuggingFaceH4/aime_2024: id, problem, solution, answer (string), url, year
    {"id": 60, "problem": "Every morning Aya goes for a 9-kilometer-long walk ...", "solution": "...",
     "answer": "204", "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1",
     "year": "2024"},
]
AIME2025_ROWS = [  # MathArena/aime_2025: problem_idx, problem, answer (int64)
    {"problem_idx": 1, "problem": "Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b$.",
     "answer": 70},
    {"problem_idx": 2, "problem": "On $\\triangle ABC$ points ...", "answer": 588},
]


def _parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gsm8k_preset_from_parquet(tmp_path):
    loaded = load_prompt_set(PromptSource(str(_parquet(tmp_path / "gsm8k.parquet", GSM8K_ROWS)), "gsm8k"))
    assert [r.reference_answer for r in loaded.rows] == ["72", "2000", "3"]  # after ####, no separators
    first = loaded.rows[0].prompt
    assert first.startswith("Natalia sold clips") and first.endswith(PRESETS["gsm8k"].instruction)
    assert loaded.fields == {"prompt": "question", "answer": "answer"} and loaded.source.startswith("file:")
    assert loaded.name == "gsm8k" and loaded.preset.answer_format == "number"
    assert len(load_prompt_set(PromptSource(str(tmp_path / "gsm8k.parquet"), "gsm8k", limit=2)).rows) == 2


def test_math500_preset_from_jsonl(tmp_path):
    loaded = load_prompt_set(PromptSource(str(_jsonl(tmp_path / "math.jsonl", MATH500_ROWS)), "math500"))
    assert [r.reference_answer for r in loaded.rows] == ["\\frac{1}{2}", "2\\sqrt{2}"]
    assert loaded.rows[0].meta == {"unique_id": "test/prealgebra/1.json", "level": 1, "subject": "Prealgebra"}
    assert "\\boxed{}" in loaded.rows[0].prompt and "\\boxed{}" in loaded.preset.system_prompt


@pytest.mark.parametrize("preset, rows, expected", [
    ("aime2024", AIME2024_ROWS, ["204"]),
    ("aime2025", AIME2025_ROWS, ["70", "588"]),  # int64 answers become text
])
def test_aime_presets_from_parquet(tmp_path, preset, rows, expected):
    loaded = load_prompt_set(PromptSource(str(_parquet(tmp_path / f"{preset}.parquet", rows)), preset))
    assert [r.reference_answer for r in loaded.rows] == expected
    assert loaded.preset.answer_format == "boxed" and loaded.fields["prompt"] == "problem"


def test_preset_grading():
    gsm, math = PRESETS["gsm8k"], PRESETS["math500"]
    assert gsm.grade_response("So she sold 72 clips.\nAnswer: 72", "", "72") is True
    assert gsm.grade_response("The total is 2,000 pens.", "", "2000") is True  # a final number
    assert gsm.grade_response("Answer: 71", "", "72") is False
    assert math.grade_response("Thus $\\boxed{\\frac{2}{4}}$.", "", "\\frac{1}{2}") is True  # by equivalence
    assert math.grade_response("so the value is 0.5", "", "\\frac{1}{2}") is False  # no \boxed{}, no marker
    assert PRESETS["aime2025"].grade_response("\\boxed{070}", "", "70") is True
    assert gsm.grade_response("Answer: 5", "", None) is None  # no reference: ungraded


def test_csv_and_field_mapping(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("id,q,gold\n1,What is 2+2?,4\n2,What is 3+3?,\n", encoding="utf-8")
    loaded = load_prompt_set(PromptSource(str(path), field="q", answer_field="gold"))
    assert [(r.prompt, r.reference_answer) for r in loaded.rows] == [("What is 2+2?", "4"), ("What is 3+3?", None)]
    assert loaded.preset is None and loaded.rows[0].meta == {"id": "1"}
    with pytest.raises(PromptSetError, match=r"no prompt field .*fields are id, q, gold.*--field"):
        load_prompt_set(PromptSource(str(path)))
    with pytest.raises(PromptSetError, match="no field 'answer_text'"):
        load_prompt_set(PromptSource(str(path), field="q", answer_field="answer_text"))
    # The old sample file still loads (prompt / answer fields).
    sample = load_prompt_set(PromptSource("sample_data/prompts.jsonl"))
    assert sample.rows and all(r.prompt for r in sample.rows)


def test_bad_files_say_where(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"bad\.jsonl, line 2: invalid JSON"):
        load_prompt_set(PromptSource(str(bad)))
    bad.write_text('{"prompt": "ok"}\n["a list"]\n', encoding="utf-8")
    with pytest.raises(PromptSetError, match="line 2: each line must be a JSON object"):
        load_prompt_set(PromptSource(str(bad)))
    bad.write_text('{"prompt": "ok"}\n{"prompt": "  "}\n', encoding="utf-8")
    with pytest.raises(PromptSetError, match="line 2: each row needs a non-empty 'prompt'"):
        load_prompt_set(PromptSource(str(bad)))
    gsm = _jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "answer": "no hashes here"}])
    with pytest.raises(PromptSetError, match=r"holds no answer after ####"):
        load_prompt_set(PromptSource(str(gsm), "gsm8k"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(PromptSetError, match="unknown prompt file type '.txt'"):
        load_prompt_set(PromptSource(str(tmp_path / "x.txt")))
    with pytest.raises(PromptSetError, match="no such file"):
        load_prompt_set(PromptSource(str(tmp_path / "missing.parquet")))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PromptSetError, match="cannot read it"):
        load_prompt_set(PromptSource(str(tmp_path / "broken.parquet")))
    with pytest.raises(PromptSetError, match="Unknown preset"):
        PromptSource("x.jsonl", preset="gsm9k")
    with pytest.raises(PromptSetError, match="--limit must be at least 1"):
        PromptSource("x.jsonl", limit=0)


def test_hub_specs():
    assert parse_hub_spec("hf:openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    assert parse_hub_spec("hf:HuggingFaceH4/MATH-500") == ("HuggingFaceH4/MATH-500", None, None)
    assert parse_hub_spec("hf:org/set::validation") == ("org/set", None, "validation")
    for bad in ("hf:", "hf:a/b:c:d:e", "hf:../etc/passwd"):
        with pytest.raises(PromptSetError):
            parse_hub_spec(bad)


@pytest.mark.parametrize("env", ["1", None])
def test_hub_id_without_network_is_a_clear_error(monkeypatch, env):
    """HF_HUB_OFFLINE=1, or the hub unreachable (this machine): refused before datasets is asked."""
    import datasets

    def never(*args, **kwargs):
        raise AssertionError("load_dataset must not be called without the hub")

    monkeypatch.setattr(datasets, "load_dataset", never)
    if env:
        monkeypatch.setenv("HF_HUB_OFFLINE", env)
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        import generation.models

        monkeypatch.setattr(generation.models, "_hub_reachable", lambda: False)
    for spec in ("hf:openai/gsm8k:main:test", "gsm8k"):
        with pytest.raises(PromptSetError, match=r"'openai/gsm8k' cannot be loaded: the Hugging Face hub cannot be "
                                                 r"reached.*--prompts set\.parquet"):
            load_prompt_set(PromptSource(spec))


def test_store_list_replace(db_config):
    rows = [PromptRow("Q1?", "1", {"id": 1}), PromptRow("Q2?", None)]
    set_id = save_prompt_set(db_config, "gsm8k-test", "hf:openai/gsm8k:main:test", rows, "gsm8k",
                             {"prompt": "question", "answer": "answer"})
    info, back = get_prompt_set(db_config, "gsm8k-test")
    assert info.set_id == set_id and info.n_items == 2 and info.preset == "gsm8k"
    assert info.fields == {"prompt": "question", "answer": "answer"} and back == rows
    assert get_prompt_set(db_config, "gsm8k-test", limit=1)[1] == rows[:1]
    with pytest.raises(PromptSetExists, match="already exists .2 prompts from hf:openai/gsm8k:main:test"):
        save_prompt_set(db_config, "gsm8k-test", "file:/x.parquet", rows[:1])
    assert get_prompt_set(db_config, "gsm8k-test")[1] == rows  # refused: nothing changed
    assert save_prompt_set(db_config, "gsm8k-test", "file:/x.parquet", rows[:1], replace=True) == set_id
    assert [(i.name, i.n_items, i.source) for i in list_prompt_sets(db_config)] == [("gsm8k-test", 1, "file:/x.parquet")]
    assert get_prompt_set(db_config, "nope") is None
    with pytest.raises(StorageError, match="no prompts"):
        save_prompt_set(db_config, "empty", "file:/e", [])
    with pytest.raises(StorageError, match="name has at most"):
        save_prompt_set(db_config, "a/b;drop", "file:/e", rows)
    with pytest.raises(StorageError, match="item 1: the prompt is empty"):
        save_prompt_set(db_config, "blank", "file:/e", [PromptRow("ok"), PromptRow(" ")])


def test_cli_hub_prompts_offline_fail_fast(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = cli.main(["--db", str(tmp_path / "c.duckdb"), "run", "--strategy", "self_consistency", "--prompts",
                     "hf:openai/gsm8k:main:test", "--limit", "200", "--n", "8"])
    assert code == cli.EXIT_USAGE
    assert "'openai/gsm8k' cannot be loaded: the Hugging Face hub cannot be reached" in capsys.readouterr().err
    code = cli.main(["--db", str(tmp_path / "c.duckdb"), "run", "--strategy", "greedy", "--prompts", "set:none"])
    assert code == cli.EXIT_USAGE and "no stored prompt set 'none'" in capsys.readouterr().err


def test_cli_run_with_a_preset_file_stores_the_set(embedded, tmp_path, capsys):
    db = tmp_path / "c.duckdb"
    data = _parquet(tmp_path / "data.parquet", GSM8K_ROWS)
    argv = ["--db", str(db), "run", "--strategy", "greedy", "--prompts", str(data), "--preset", "gsm8k",
            "--limit", "2", "--max-thinking", "6", "--max-answer", "4", "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["reference"] for r in out["rows"]] == ["72", "2000"]
    from storage.config import StorageConfig

    config = StorageConfig(db_path=db, seed_path=None)
    info, rows = get_prompt_set(config, "data")
    assert info.preset == "gsm8k" and info.n_items == 2 and info.source == f"file:{data.resolve()}"
    # Run again from the stored set, without the file.
    data.unlink()
    assert cli.main(["--db", str(db), "run", "--strategy", "greedy", "--prompts", "set:data", "--limit", "1",
                     "--max-thinking", "6", "--max-answer", "4", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["reference"] for r in again["rows"]] == ["72"]
    # A sweep takes one prompt of a set.
    assert cli.main(["--db", str(db), "sweep", "--prompts", "set:data", "--index", "1", "--budgets", "4",
                     "--samples", "1", "--max-answer", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stored_cells"] == 1
    assert cli.main(["--db", str(db), "sweep", "--prompts", "set:data", "--index", "5", "--budgets", "4"]) == 2
    assert "--index 5 is outside the set's 2 prompts" in capsys.readouterr().err


def _picker_app():
    import streamlit as st

    from ui.prompt_set_picker import prompt_set_picker

    picked = prompt_set_picker()
    if picked is not None:
        rows, preset, label = picked
        st.write(f"picked {label}: {len(rows)} prompts, preset {preset.name if preset else None}, "
                 f"first reference {rows[0].reference_answer}")


def test_picker_loads_stores_and_picks_a_set(tmp_path, monkeypatch):
    """The app's picker: a new set from a file path with a preset, stored, then picked (AppTest, no model)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("THINKSCOPE_DB", str(tmp_path / "app.duckdb"))
    st.cache_resource.clear()
    data = _parquet(tmp_path / "aime.parquet", AIME2025_ROWS)
    at = AppTest.from_function(_picker_app, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="prompt_set::choice").value == "Load a new prompt set…"
    at.text_input(key="prompt_set::source").input(str(tmp_path / "missing.parquet"))
    at.button[0].click().run()  # the form's submit button
    assert not at.exception and "no such file" in at.error[0].value
    at.text_input(key="prompt_set::source").input(str(data))
    at.selectbox(key="prompt_set::preset").select("aime2025")
    at.button[0].click().run()
    assert not at.exception
    assert at.selectbox(key="prompt_set::choice").value == "aime"
    assert "picked set:aime: 2 prompts, preset aime2025, first reference 70" in at.markdown[-1].value
    st.cache_resource.clear()
