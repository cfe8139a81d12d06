"""JSONL export/import: exact round trip, all-or-nothing import with named errors, seeding."""
from __future__ import annotations

import json
import logging

import pytest

import storage.ingest
from storage import (
    StorageConfig,
    TraceImportError,
    connect,
    count_traces,
    create_run,
    export_jsonl,
    get_trace,
    import_jsonl,
    save_trace,
    save_traces,
)
from storage.connection import forget_migrated
from storage.testing import make_record


def table_counts(cfg) -> dict[str, int]:
    with connect(cfg, read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("prompts", "runs", "traces", "tokens")}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A database with varied traces (two runs, NaNs, unicode, K=0, no tokens) and its export.

    Module scope: tests only read the database and copy the file before changing it.
    """
    tmp_path = tmp_path_factory.mktemp("source")
    cfg = StorageConfig(tmp_path / "src.duckdb")
    run = create_run(cfg, "model-a", "self_consistency", {"n": 3, "temperature": 0.8}, note="sc run")
    save_traces(cfg, [make_record(model="model-a", seed=i, n_tokens=6 + i) for i in range(3)], run)
    save_trace(cfg, make_record(model="model-b", prompt="Caf\u00e9 \U0001f914 \"quoted\"\nline", correct=None,
                                reference_answer=None, extracted_answer=None, n_tokens=5, k=0,
                                stop_reason="max_tokens", meta={"forced_end": 3, "x": [1.5, None]}))  # fmt: skip
    save_trace(cfg, make_record(model="model-b", n_tokens=0, k=0, stop_reason="error", latency_s=0.0))
    path = tmp_path / "export.jsonl"
    assert export_jsonl(cfg, path) == 5
    return cfg, path


def test_round_trip_is_exact(source, tmp_path):
    src_cfg, path = source
    dst = StorageConfig(tmp_path / "dst.duckdb")
    ids = import_jsonl(dst, path)
    assert len(ids) == 5
    again = tmp_path / "again.jsonl"
    assert export_jsonl(dst, again) == 5
    assert again.read_bytes() == path.read_bytes()

    # The traces of one run stay in one run; the rest get their own.
    runs = [get_trace(dst, i).run_id for i in ids]
    assert runs[0] == runs[1] == runs[2] and len(set(runs)) == 3
    original = get_trace(src_cfg, 1).record
    copy = get_trace(dst, ids[0]).record
    assert copy.strategy == "self_consistency" and copy.settings == original.settings
    assert copy.tokens.text == original.tokens.text


def test_line_format(source):
    _, path = source
    lines = path.read_text(encoding="utf-8").splitlines()
    obj = json.loads(lines[0])
    assert obj["format"] == "thinkscope.trace" and obj["version"] == 1
    assert set(obj) == {"format", "version", "prompt", "run", "trace", "tokens"}
    assert obj["run"]["ref"] == 1 and obj["run"]["note"] == "sc run"
    assert obj["tokens"]["logprob"][1] is None  # NaN is written as null
    assert len(obj["tokens"]["top_ids"]) == len(obj["tokens"]["text"]) == 6
    assert json.loads(lines[3])["run"]["ref"] == 2


def test_export_selected_ids(source, tmp_path):
    cfg, _ = source
    path = tmp_path / "some.jsonl"
    assert export_jsonl(cfg, path, trace_ids=[4, 2, 99]) == 2
    texts = [json.loads(line)["prompt"]["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert texts[1].startswith("Caf\u00e9")


def test_progress_and_blank_lines(source, tmp_path):
    _, path = source
    padded = tmp_path / "padded.jsonl"
    padded.write_bytes(b"\n" + path.read_bytes() + b"\n\n")
    seen = []
    cfg = StorageConfig(tmp_path / "p.duckdb")
    assert len(import_jsonl(cfg, padded, progress=lambda done, total: seen.append((done, total)))) == 5
    assert seen[-1] == (8, 8)
    assert all(done <= total for done, total in seen)


def test_import_without_run_groups_by_model_and_strategy(source, tmp_path):
    _, path = source
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    stripped = tmp_path / "norun.jsonl"
    stripped.write_text("".join(json.dumps({k: v for k, v in o.items() if k != "run"}) + "\n" for o in lines), encoding="utf-8")
    cfg = StorageConfig(tmp_path / "n.duckdb")
    ids = import_jsonl(cfg, stripped)
    runs = [get_trace(cfg, i).run_id for i in ids]
    assert runs[0] == runs[1] == runs[2] and runs[3] == runs[4] != runs[0]


def _corrupt(obj: dict, how: str) -> dict:
    if how == "missing_field":
        del obj["trace"]["model"]
    elif how == "missing_tokens":
        del obj["tokens"]
    elif how == "wrong_type":
        obj["tokens"]["logprob"][2] = "low"
    elif how == "bool_as_int":
        obj["tokens"]["token_id"][0] = True
    elif how == "correct_as_int":
        obj["trace"]["correct"] = 1
    elif how == "length_mismatch":
        obj["tokens"]["entropy"].pop()
    elif how == "ragged_top_k":
        obj["tokens"]["top_ids"][1].append(7)
    elif how == "bad_phase":
        obj["tokens"]["phase"][0] = 7  # 0, 1 and 2 (forced) are phases
    elif how == "bad_stop_reason":
        obj["trace"]["stop_reason"] = "tired"
    elif how == "newer_version":
        obj["version"] = 99
    elif how == "wrong_format":
        obj["format"] = "other.tool"
    elif how == "bad_time":
        obj["trace"]["created_at"] = "yesterday"
    return obj


@pytest.mark.parametrize(
    "how,field",
    [
        ("missing_field", "trace.model"),
        ("missing_tokens", "tokens"),
        ("wrong_type", "tokens.logprob[2]"),
        ("bool_as_int", "tokens.token_id[0]"),
        ("correct_as_int", "trace.correct"),
        ("length_mismatch", "tokens.entropy"),
        ("ragged_top_k", "tokens.top_ids[1]"),
        ("bad_phase", "tokens.phase[0]"),
        ("bad_stop_reason", "trace.stop_reason"),
        ("newer_version", "version"),
        ("wrong_format", "format"),
        ("bad_time", "trace.created_at"),
    ],
)
def test_malformed_field_imports_nothing(source, tmp_path, monkeypatch, how, field):
    _, path = source
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = json.dumps(_corrupt(json.loads(lines[2]), how))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _expect_nothing_imported(tmp_path, bad, monkeypatch, line=3, field=field)


@pytest.mark.parametrize(
    "raw,phrase",
    [
        (b'{"format": "thinkscope.trace", "version": 1, "prompt": {', "invalid JSON"),
        (b"[1, 2, 3]", "expected a JSON object"),
        (b'{"format": "thinkscope.trace", "version": 1, "prompt": {"text": "caf\xe9"}}', "not valid UTF-8"),
        (b"\xff\xfe garbage", "not valid UTF-8"),
    ],
)
def test_malformed_line_imports_nothing(source, tmp_path, monkeypatch, raw, phrase):
    _, path = source
    lines = path.read_bytes().splitlines()
    lines.insert(2, raw)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    error = _expect_nothing_imported(tmp_path, bad, monkeypatch, line=3, field=None)
    assert phrase in str(error)


def _expect_nothing_imported(tmp_path, bad, monkeypatch, line, field):
    # Insert line by line so that the good lines before the bad one are already written inside
    # the transaction: the test then proves the rollback, not just early validation.
    monkeypatch.setattr(storage.ingest, "_IMPORT_BATCH", 1)  # the batching lives in ingest.py
    cfg = StorageConfig(tmp_path / "target.duckdb")
    save_trace(cfg, make_record(prompt="already there"))
    before = table_counts(cfg)
    with pytest.raises(TraceImportError) as info:
        import_jsonl(cfg, bad)
    message = str(info.value)
    assert f"line {line}" in message and info.value.line == line
    assert "bad.jsonl" in message and "Nothing from this file was stored" in message
    if field is not None:
        assert info.value.field == field and f"'{field}'" in message
    assert table_counts(cfg) == before
    return info.value


def test_missing_file(tmp_path):
    with pytest.raises(TraceImportError, match="cannot read the file"):
        import_jsonl(StorageConfig(tmp_path / "db.duckdb"), tmp_path / "absent.jsonl")


def test_seeding_a_fresh_database(source, tmp_path):
    _, seed = source
    cfg = StorageConfig(tmp_path / "fresh" / "db.duckdb", seed_path=seed)
    assert count_traces(cfg) == 5
    rows = table_counts(cfg)
    # A database that exists already is never seeded again, even by a new process.
    forget_migrated()
    assert count_traces(cfg) == 5 and table_counts(cfg) == rows
    # Nor is a database created without a seed and opened later with one.
    plain = StorageConfig(tmp_path / "plain.duckdb")
    assert count_traces(plain) == 0
    forget_migrated()
    assert count_traces(StorageConfig(plain.db_path, seed_path=seed)) == 0


def test_missing_seed_file_means_empty(tmp_path):
    assert count_traces(StorageConfig(tmp_path / "db.duckdb", seed_path=tmp_path / "none.jsonl")) == 0


def test_broken_seed_leaves_a_usable_empty_database(tmp_path, caplog):
    seed = tmp_path / "seed.jsonl"
    seed.write_text("{not json\n", encoding="utf-8")
    cfg = StorageConfig(tmp_path / "db.duckdb", seed_path=seed)
    with caplog.at_level(logging.WARNING, logger="storage.connection"):
        assert count_traces(cfg) == 0
    assert "seed.jsonl" in caplog.text and "line 1" in caplog.text
    save_trace(cfg, make_record())
    assert count_traces(cfg) == 1
