"""The Import / export page: its logic functions on a real database, and the page through AppTest.

Uploading a file is not possible in AppTest, so the upload path is tested through store_upload
(what the page calls with the uploaded file) and the page's rendering of its outcome.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from storage import TraceFilter, count_traces, get_trace, save_traces
from storage.config import StorageConfig
from storage.importers import import_file
from storage.testing import make_record
from ui.import_view import ImportOutcome, export_annotations_bytes, export_jsonl_bytes, export_parquet_zip, store_upload

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "import_export.py")
OPENAI_LINE = json.dumps({"model": "m", "choices": [{"message": {"content": "4", "reasoning_content": "2 + 2"}}]})


@pytest.fixture
def page_db(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKSCOPE_DB", str(tmp_path / "page.duckdb"))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield StorageConfig.from_env()  # seeded with the sample traces, like the app's database
    st.cache_resource.clear()


def test_store_upload_imports_and_reports_progress(db_config):
    fractions = []
    upload = io.BytesIO(("\n".join([OPENAI_LINE] * 5) + "\n").encode())
    outcome = store_upload(db_config, upload, "../../etc/chats.jsonl", progress=fractions.append)
    assert outcome.error is None and outcome.result.count == 5 and outcome.result.format == "openai"
    assert outcome.message == "Imported chats.jsonl (OpenAI chat completions (JSON / JSONL)): 5 new, 0 already present."
    assert fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
    record = get_trace(db_config, outcome.result.trace_ids[0]).record
    assert (record.thinking_text, record.answer_text, record.meta["source_file"]) == ("2 + 2", "4", "chats.jsonl")


def test_store_upload_with_a_mapping_and_duplicates(db_config):
    """What the page's mapping field and duplicates checkbox do: records with other field names,
    a second upload counted as present, and stored again when duplicates are allowed."""
    data = b'q,out\n"What is 1 + 1?","<think>one and one</think>2"\n"What is 2 + 2?",4\n'
    first = store_upload(db_config, io.BytesIO(data), "qa.csv", mapping="prompt=q,response=out")
    assert first.error is None and first.message.endswith(": 2 new, 0 already present.")
    assert get_trace(db_config, first.result.trace_ids[0]).record.thinking_text == "one and one"
    again = store_upload(db_config, io.BytesIO(data), "qa.csv", mapping="prompt=q,response=out")
    assert again.message.endswith(": 0 new, 2 already present.")
    forced = store_upload(db_config, io.BytesIO(data), "qa.csv", mapping="prompt=q,response=out", allow_duplicates=True)
    assert forced.message.endswith(": 2 new, 0 already present.") and count_traces(db_config) == 4
    bad = store_upload(db_config, io.BytesIO(data), "qa.csv", mapping="question=q")
    assert bad.result is None and "unknown role 'question'" in bad.message


def test_store_upload_bad_file_names_line_and_field_and_stores_nothing(db_config):
    upload = io.BytesIO((OPENAI_LINE + "\n" + '{"model": "m", "choices": [{"message": {"content": 5}}]}\n').encode())
    outcome = store_upload(db_config, upload, "bad.jsonl", "openai")
    assert outcome.result is None
    assert "bad.jsonl, line 2" in outcome.message and "'choices[0].message.content'" in outcome.message
    assert count_traces(db_config) == 0


def test_jsonl_download_round_trips_the_filtered_traces(db_config, tmp_path):
    save_traces(db_config, [make_record(model="alpha", seed=1), make_record(model="beta", seed=2)])
    data = export_jsonl_bytes(db_config, TraceFilter(models=("beta",)))
    lines = data.decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["trace"]["model"] == "beta"
    path = tmp_path / "download.jsonl"
    path.write_bytes(data)
    other = StorageConfig(tmp_path / "other.duckdb")
    import_file(other, path)
    assert export_jsonl_bytes(other, TraceFilter()) == data


def test_parquet_zip_holds_both_tables(db_config, tmp_path):
    save_traces(db_config, [make_record(n_tokens=5, seed=1), make_record(n_tokens=3, seed=2)])
    archive = zipfile.ZipFile(io.BytesIO(export_parquet_zip(db_config, TraceFilter())))
    assert sorted(archive.namelist()) == ["tokens.parquet", "traces.parquet"]
    archive.extractall(tmp_path)
    assert pq.read_table(tmp_path / "traces.parquet").num_rows == 2
    assert pq.read_table(tmp_path / "tokens.parquet").num_rows == 8


def test_page_renders_with_import_and_export(page_db):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Import / export"
    assert [t.label for t in at.tabs] == ["Import", "Export"]
    assert at.selectbox(key="import_format").options[0] == "Detect from the content"
    assert at.button(key="import_run").disabled  # nothing uploaded yet
    assert at.text_input(key="import_mapping").placeholder == "prompt=question,response=output"
    assert at.checkbox(key="import_duplicates").value is False
    assert "records" in at.selectbox(key="import_format").options[-1].lower()
    downloads = at.get("download_button")
    assert [d.key for d in downloads] == ["export_jsonl", "export_parquet", "export_annotations"]
    assert not any(d.proto.disabled for d in downloads)
    total = count_traces(page_db)
    assert any(f"{total} traces selected" in c.value for c in at.caption)
    at.text_input(key="export_prompt").input("no prompt says this").run()
    assert any("0 traces selected" in c.value for c in at.caption)
    assert [d.proto.disabled for d in at.get("download_button")] == [True, True, False]  # annotations: unfiltered


def test_page_shows_an_import_error_as_text(page_db):
    at = AppTest.from_file(PAGE, default_timeout=60)
    message = "Cannot import x.jsonl, line 3: field 'a': <b>bad</b> ![x](http://127.0.0.1:9/x.png)"
    at.session_state["import_outcome"] = ImportOutcome(None, message, "x.jsonl")
    at.run()
    assert not at.exception, at.exception
    shown = at.error[0].value
    # Every Markdown character escaped: the quoted image is not fetched, the tag is not markup.
    assert "![" not in shown and "](" not in shown and "<b>" not in shown
    assert shown.replace("\\", "") == message


def test_page_shows_success_with_counts_and_a_link_to_the_traces(page_db, tmp_path):
    raw = tmp_path / "out.txt"
    raw.write_text("<think>plan</think>done")
    outcome = store_upload(page_db, io.BytesIO(raw.read_bytes()), "out.txt")
    # Through app.py: page links only resolve inside its navigation.
    at = AppTest.from_file(str(Path(PAGE).parent.parent / "app.py"), default_timeout=60)
    at.session_state["import_outcome"] = outcome
    at.run()
    at.switch_page("pages/import_export.py").run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Imported out.txt (Raw text")
    assert at.success[0].value.endswith(": 1 new, 0 already present.")
    links = [str(link.proto) for link in at.get("page_link")]
    assert len(links) == 1 and 'page: "traces"' in links[0] and "Traces page" in links[0]


def test_annotations_download_and_cli_export_hold_every_version(db_config, tmp_path):
    from cli import main
    from storage.annotations import AnnotationDraft, save_annotation

    (trace_id,) = save_traces(db_config, [make_record()])
    save_annotation(db_config, AnnotationDraft(trace_id, "alice", "correct", "<script>x</script>"), 0)
    save_annotation(db_config, AnnotationDraft(trace_id, "alice", "overthought", ""), 1)
    lines = [json.loads(line) for line in export_annotations_bytes(db_config).decode().splitlines()]
    assert [(o["annotation_version"], o["verdict"]) for o in lines] == [(1, "correct"), (2, "overthought")]
    assert lines[0]["notes"] == "<script>x</script>"  # data, stored and exported as typed
    out = tmp_path / "annotations.jsonl"
    assert main(["--db", str(db_config.db_path), "export", "--format", "annotations", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
