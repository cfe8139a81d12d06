"""The records format (issue 10 §4): flat prompt/response rows in JSONL, JSON arrays, CSV and
Parquet, detected from the content, with --map for other field names; the OpenAI prompt next to
`choices`; idempotent imports by content."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.answers import extract_answer, stored_grade
from analysis.records import TraceRecord
from storage import get_trace, save_traces
from storage.connection import connect
from storage.content import CONTENT_HASH_SQL, record_hash
from storage.errors import TraceImportError
from storage.importers import detect_format, import_file
from storage.importers.common import UNKNOWN_PROMPT
from storage.jsonl import export_jsonl
from storage.testing import make_record
from storage.traces import count_traces

ROWS = [
    {"question": "What is 2 + 2?", "response": "<think>2 plus 2 is 4.</think>The answer is 4.", "gold": "4",
     "model": "qwen", "id": "a1", "difficulty": 1},
    {"question": "What is 3 + 5?", "response": "<think>3 and 5 make 9.</think>The answer is 9.", "gold": "8",
     "model": "qwen", "id": "a2", "difficulty": 1},
    {"question": "Name a colour.", "response": "Blue.", "model": "qwen", "id": "a3"},
]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _records(cfg, result) -> list[TraceRecord]:
    return [get_trace(cfg, i).record for i in result.trace_ids]


def _check_rows(cfg, result):
    assert result.format == "records" and result.count == 3 and result.present == 0
    first, second, third = _records(cfg, result)
    assert (first.prompt, first.thinking_text, first.answer_text) == ("What is 2 + 2?", "2 plus 2 is 4.", "The answer is 4.")
    assert first.model == "qwen" and first.reference_answer == "4" and first.stop_reason == "imported"
    # graded on import like a generated trace: right, wrong, and no reference = ungraded
    assert (first.correct, second.correct, third.correct) == (True, False, None)
    assert (third.thinking_text, third.answer_text) == ("", "Blue.")
    assert first.meta["fields"]["id"] == "a1" and first.meta["source_format"] == "records"
    return first


def test_jsonl_records_are_detected_split_and_graded(db_config, tmp_path):
    path = _jsonl(tmp_path / "qa.jsonl", ROWS)
    assert detect_format(path) == "records"
    first = _check_rows(db_config, import_file(db_config, path))
    assert first.meta["fields"] == {"id": "a1", "difficulty": 1}  # every other field, typed


def test_json_array_of_records(db_config, tmp_path):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(ROWS, indent=2))
    assert detect_format(path) == "records"
    _check_rows(db_config, import_file(db_config, path))


def test_csv_records_with_multiline_cells_and_empty_cells(db_config, tmp_path):
    path = tmp_path / "qa.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["question", "response", "gold", "model", "id", "difficulty"])
        writer.writeheader()
        writer.writerows(ROWS)
    assert detect_format(path) == "records"
    first = _check_rows(db_config, import_file(db_config, path))
    assert first.meta["fields"] == {"id": "a1", "difficulty": "1"}  # CSV cells are text


def test_csv_detected_by_its_header_without_the_suffix(db_config, tmp_path):
    path = tmp_path / "export.txt"
    path.write_text('prompt,output\n"What is 1 + 1?","<think>one and one</think>2"\n', encoding="utf-8")
    assert detect_format(path) == "records"
    (record,) = _records(db_config, import_file(db_config, path))
    assert (record.prompt, record.thinking_text, record.answer_text) == ("What is 1 + 1?", "one and one", "2")


def test_csv_error_names_the_line_of_the_row(db_config, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('prompt,response\n"a","multi\nline"\nq,r,extra\n', encoding="utf-8")
    with pytest.raises(TraceImportError, match=r"bad.csv, line 4: the row has 3 cells, the header 2"):
        import_file(db_config, path)
    assert count_traces(db_config) == 0


def test_parquet_records(db_config, tmp_path):
    path = tmp_path / "qa.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert detect_format(path) == "records"
    result = import_file(db_config, path)
    first = _check_rows(db_config, result)
    assert first.meta["source_record"] == 1


def test_separate_thinking_and_answer_fields(db_config, tmp_path):
    rows = [
        {"prompt": "What is 6 * 7?", "thinking": "six sevens", "answer": "42", "reference_answer": 42},
        {"instruction": "What is 1 + 2?", "reasoning_content": "one plus two", "content": "3", "model_name": "r1"},
        {"problem": "What is 9 - 1?", "reasoning": "nine minus one", "final_answer": "8", "ground_truth": "7"},
    ]
    result = import_file(db_config, _jsonl(tmp_path / "split.jsonl", rows))
    a, b, c = _records(db_config, result)
    assert (a.thinking_text, a.answer_text, a.reference_answer, a.correct) == ("six sevens", "42", "42", True)
    assert (b.prompt, b.thinking_text, b.answer_text, b.model) == ("What is 1 + 2?", "one plus two", "3", "r1")
    assert (c.thinking_text, c.answer_text, c.correct) == ("nine minus one", "8", False)


@pytest.mark.parametrize(
    ("response", "thinking", "answer"),
    [
        ("<thinking>plan it</thinking>\n\nDone: 5", "plan it", "Done: 5"),
        ("the template opened it</think>\n5", "the template opened it", "5"),  # pre-opened <think>
        ("no tags at all: 5", "", "no tags at all: 5"),
    ],
    ids=["thinking-tags", "pre-opened", "no-tags"],
)
def test_response_split_like_raw_text(db_config, tmp_path, response, thinking, answer):
    (record,) = _records(db_config, import_file(db_config, _jsonl(tmp_path / "r.jsonl", [{"prompt": "q", "response": response}])))
    assert (record.thinking_text, record.answer_text) == (thinking, answer)
    assert record.meta["raw_text"] == response


def test_imported_reference_grades_like_a_generated_trace(db_config, tmp_path):
    """The same thinking/answer/reference gives the same stored grade through import as through save."""
    answer, reference = r"So the result is \boxed{2\sqrt{2}}.", r"\sqrt{8}"
    generated = make_record(prompt="root", answer_text=answer, thinking_text="think")
    generated.reference_answer, generated.extracted_answer = reference, extract_answer(answer, "think")
    (gen_id,) = save_traces(db_config, [generated])
    row = {"prompt": "root", "response": f"<think>think</think>{answer}", "reference": reference}
    (imported,) = _records(db_config, import_file(db_config, _jsonl(tmp_path / "g.jsonl", [row])))
    assert imported.extracted_answer == get_trace(db_config, gen_id).record.extracted_answer
    assert imported.correct == get_trace(db_config, gen_id).record.correct == stored_grade(generated)


def test_mapping_names_other_fields(db_config, tmp_path):
    rows = [{"q": "What is 4 + 4?", "out": "<think>four and four</think>8", "truth": "8", "llm": "m1", "extra": [1, 2]}]
    path = _jsonl(tmp_path / "custom.jsonl", rows)
    with pytest.raises(TraceImportError, match="cannot tell which format"):
        import_file(db_config, path)  # without a mapping the fields mean nothing
    result = import_file(db_config, path, mapping="prompt=q, response=out,reference=truth,model=llm")
    (record,) = _records(db_config, result)
    assert (record.prompt, record.thinking_text, record.answer_text, record.model) == ("What is 4 + 4?", "four and four", "8", "m1")
    assert record.correct is True and record.meta["fields"] == {"extra": [1, 2]}


def test_cli_import_with_map_and_duplicates(db_config, tmp_path, capsys):
    from cli import main

    path = _jsonl(tmp_path / "custom.jsonl", [{"question": "q1", "output": "a1"}, {"question": "q2", "output": "a2"}])
    db = ["--db", str(db_config.db_path)]
    assert main([*db, "import", str(path), "--map", "prompt=question,response=output"]) == 0
    assert "imported 2 new, 0 already present (records)" in capsys.readouterr().out
    base = count_traces(db_config)  # the CLI seeds a new database with the sample traces
    assert main([*db, "import", str(path), "--map", "prompt=question,response=output"]) == 0
    assert "imported 0 new, 2 already present (records)" in capsys.readouterr().out
    assert main([*db, "import", str(path), "--map", "prompt=question,response=output", "--allow-duplicates"]) == 0
    assert "imported 2 new, 0 already present" in capsys.readouterr().out
    assert count_traces(db_config) == base + 2
    assert main([*db, "import", str(path), "--map", "prompt=question,answr=output"]) == 1
    err = capsys.readouterr().err
    assert "unknown role 'answr'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("mapping", "rows", "phrase"),
    [
        ("prompt", [{"prompt": "q", "response": "r"}], "must look like role=field"),
        ("prompt=a,prompt=b", [{"prompt": "q", "response": "r"}], "names the role 'prompt' twice"),
        ("response=out", [{"prompt": "q", "response": "r"}], "line 1: field 'out': is missing (the mapping reads response"),
    ],
    ids=["no-equals", "twice", "mapped-field-missing"],
)
def test_bad_mappings_are_explained(db_config, tmp_path, mapping, rows, phrase):
    with pytest.raises(TraceImportError) as info:
        import_file(db_config, _jsonl(tmp_path / "m.jsonl", rows), mapping=mapping)
    assert phrase in str(info.value)
    assert count_traces(db_config) == 0


def test_record_without_output_names_the_line(db_config, tmp_path):
    rows = [{"prompt": "q", "response": "r"}, {"prompt": "q2", "response": 5}]
    with pytest.raises(TraceImportError, match=r"line 2: field 'response': must be a string, got the number 5"):
        import_file(db_config, _jsonl(tmp_path / "bad.jsonl", rows))
    with pytest.raises(TraceImportError, match=r"line 1: has no output field .*response=FIELD"):
        import_file(db_config, _jsonl(tmp_path / "none.jsonl", [{"prompt": "q", "label": "x"}]), fmt="records")
    assert count_traces(db_config) == 0


def test_openai_messages_beside_choices_give_the_prompt(db_config, tmp_path):
    obj = {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
                                      {"role": "assistant", "content": "ok"}, {"role": "user", "content": "What is 2 + 3?"}],
           "choices": [{"message": {"role": "assistant", "content": "5", "reasoning_content": "two and three"}}]}
    result = import_file(db_config, _jsonl(tmp_path / "logged.jsonl", [obj]))
    (record,) = _records(db_config, result)
    assert result.format == "openai" and record.prompt == "What is 2 + 3?" and record.prompt != UNKNOWN_PROMPT
    assert (record.thinking_text, record.answer_text) == ("two and three", "5")


# --- idempotent imports ------------------------------------------------------------------------

def test_importing_the_same_file_twice_stores_nothing_new(db_config, tmp_path):
    path = _jsonl(tmp_path / "qa.jsonl", ROWS)
    first = import_file(db_config, path)
    runs_before = _count(db_config, "runs")
    again = import_file(db_config, path)
    assert (first.count, first.present) == (3, 0)
    assert (again.count, again.present, again.summary()) == (0, 3, "0 new, 3 already present")
    assert count_traces(db_config) == 3 and _count(db_config, "runs") == runs_before  # no empty run either
    forced = import_file(db_config, path, allow_duplicates=True)
    assert (forced.count, forced.present) == (3, 0) and count_traces(db_config) == 6


def test_copies_inside_a_file_are_kept_and_counted(db_config, tmp_path):
    line = {"prompt": "q", "response": "same"}
    path = _jsonl(tmp_path / "copies.jsonl", [line, line, {"prompt": "q", "response": "other"}])
    assert import_file(db_config, path).count == 3  # the file holds three traces
    grown = _jsonl(tmp_path / "grown.jsonl", [line, line, line, {"prompt": "new", "response": "x"}])
    result = import_file(db_config, grown)
    assert (result.count, result.present) == (2, 2)  # the third copy and the new prompt


def test_export_imported_into_the_same_database_is_all_present(db_config, tmp_path):
    save_traces(db_config, [make_record(prompt=f"p{i}", seed=i) for i in range(3)])
    out = tmp_path / "all.jsonl"
    export_jsonl(db_config, out)
    result = import_file(db_config, out)
    assert (result.count, result.present) == (0, 3)


def test_duplicates_across_more_than_one_insert_batch(db_config, tmp_path):
    rows = [{"prompt": f"q{i % 700}", "response": "r"} for i in range(2100)]  # each line three times
    path = _jsonl(tmp_path / "big.jsonl", rows)
    assert import_file(db_config, path).count == 2100
    result = import_file(db_config, path)
    assert (result.count, result.present) == (0, 2100)


def test_content_hash_in_python_equals_the_migration_sql(db_config):
    records = [make_record(prompt="naïve ∑ 😀", answer_text="a|b", thinking_text="S3:x"),
               make_record(prompt="p", answer_text="", thinking_text="")]
    records[1].reference_answer = "ref"
    ids = save_traces(db_config, records)
    with connect(db_config) as con:
        stored = dict(con.execute("SELECT trace_id, content_hash FROM traces WHERE trace_id IN (?, ?)", ids).fetchall())
        recomputed = dict(con.execute(
            f"SELECT t.trace_id, {CONTENT_HASH_SQL} FROM traces t JOIN prompts p ON p.prompt_id = t.prompt_id "
            "WHERE t.trace_id IN (?, ?)", ids).fetchall())
    assert stored == recomputed == {i: record_hash(r) for i, r in zip(ids, records)}
    migration = (Path(__file__).resolve().parent.parent / "storage/migrations/007_trace_content_hash.sql").read_text()
    for column in ("p.text", "p.reference_answer", "t.model", "t.thinking_text", "t.answer_text", "t.stop_reason"):
        assert f"WHEN {column} IS NULL THEN 'N' ELSE 'S' || strlen({column}) || ':' || {column} END" in migration


def test_migration_007_back_fills_existing_rows(tmp_path):
    """A database made before 007 gets hashes for its traces, equal to what new saves compute."""
    from storage.config import StorageConfig
    from storage.migrate import apply_migrations, migration_files

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
    older = [f for f in migration_files() if int(f.name[:3]) < 7]
    for f in older:
        con.execute(f.read_text())
        con.execute("INSERT INTO schema_migrations VALUES (?, now())", [f.name])
    con.execute("INSERT INTO prompts (prompt_key, text, source, created_at) VALUES ('k', 'What?', 'user', now())")
    con.execute("INSERT INTO runs (model, strategy, created_at) VALUES ('m', 'single', now())")
    con.execute("INSERT INTO traces (run_id, prompt_id, model, thinking_text, answer_text, n_thinking_tokens, "
                "n_answer_tokens, n_tokens, latency_s, tokens_per_s, stop_reason, created_at) "
                "VALUES (1, 1, 'm', 'hmm', '42', 0, 0, 0, 0, 0, 'eos', now())")
    apply_migrations(con)
    (digest,) = con.execute("SELECT content_hash FROM traces").fetchall()[0]
    con.close()
    from storage.content import content_hash

    assert digest == content_hash("What?", None, "m", "hmm", "42", "eos")
    cfg = StorageConfig(db, seed_path=None)
    line = {"prompt": "What?", "response": "<think>hmm</think>42"}  # same text, imported: another stop reason
    assert import_file(cfg, _jsonl(tmp_path / "x.jsonl", [line])).count == 1


def _count(cfg, table: str) -> int:
    with connect(cfg) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
