"""Every page through Streamlit's AppTest, against real DuckDB files and the real embedded model."""
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.records import ANSWER, THINKING, TokenColumns, TraceRecord
from storage.traces import count_traces, save_trace

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _hostile_record() -> TraceRecord:
    texts = ["<script>alert('x')</script>", " & then", "\nAnswer:", ' <img src=x onerror="boom()">']
    n = len(texts)
    tokens = TokenColumns(
        token_id=np.arange(n, dtype=np.int64), text=texts,
        logprob=np.full(n, -0.5, np.float32), entropy=np.full(n, 1.0, np.float32),
        top_ids=np.zeros((n, 1), np.int64), top_texts=[["<b>alt</b>"]] * n,
        top_logprobs=np.zeros((n, 1), np.float32),
        phase=np.array([THINKING, THINKING, THINKING, ANSWER], np.int8),
    )
    return TraceRecord(prompt="<h1>prompt</h1>", model="m", thinking_text="".join(texts[:2]), answer_text=texts[3],
                       tokens=tokens, stop_reason="eos", latency_s=1.0)


def test_generate_page_streams_and_stores_a_trace(app_db):
    before = count_traces(app_db)
    at = _app()
    at.text_area(key="prompt").input("What is 2 + 3?")
    at.text_input(key="reference").input("5")
    at.number_input(key="max_thinking").set_value(12)
    at.number_input(key="max_answer").set_value(6)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert count_traces(app_db) == before + 1
    labels = [s.label for s in at.expander] + [s.label for s in at.get("status")]
    assert any(label.startswith("Thought for") for label in labels), labels
    assert any("Saved as trace" in str(link.proto) for link in at.get("page_link"))


def test_generate_page_refuses_an_empty_prompt(app_db):
    before = count_traces(app_db)
    at = _app()
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["The prompt is empty: type a question first."]
    assert count_traces(app_db) == before


def test_generate_page_reports_an_unknown_model(app_db):
    at = _app()
    at.selectbox(key="model_choice").set_value(at.selectbox(key="model_choice").options[1]).run()
    at.text_input(key="model_other").input(str(Path("/nonexistent/model"))).run()
    assert "No model directory" in at.error[0].value


def test_traces_page_lists_the_seeded_examples(app_db):
    at = _app("pages/traces.py")
    frame = at.dataframe[0].value
    assert len(frame) > 0, "a new database is seeded from sample_data/traces.jsonl"
    assert {"trace_id", "model", "prompt", "correct"} <= set(frame.columns)
    at.text_input(key="filter_prompt").input("no prompt says this").run()
    assert not at.dataframe and any("No trace matches these filters" in i.value for i in at.info)


def test_trace_page_escapes_untrusted_text(app_db):
    trace_id = save_trace(app_db, _hostile_record())
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["id"] = str(trace_id)
    at.run()
    at.switch_page("pages/trace.py").run()
    assert not at.exception, at.exception
    html = " ".join(str(h.proto) for h in at.get("html")) + " ".join(m.value for m in at.markdown)
    assert "&lt;script&gt;" in html and "&lt;h1&gt;prompt" in html
    assert "<script>alert" not in html and "<img src=x" not in html and "<h1>" not in html


def test_trace_page_unknown_id_says_so(app_db):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["id"] = "999999"
    at.run()
    at.switch_page("pages/trace.py").run()
    assert "No trace #999999" in at.warning[0].value


def test_unwritable_database_gives_a_clear_error(tmp_path, monkeypatch, model_cache_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("THINKSCOPE_DB", str(blocker / "db.duckdb"))
    st.cache_resource.clear()
    at = _app("pages/traces.py")
    assert at.error and str(blocker) in at.error[0].value
    st.cache_resource.clear()


def test_generate_page_keeps_the_trace_when_the_database_is_unwritable(tmp_path, monkeypatch, model_cache_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("THINKSCOPE_DB", str(blocker / "db.duckdb"))
    st.cache_resource.clear()
    at = _app()
    at.text_area(key="prompt").input("What is 1 + 1?")
    at.number_input(key="max_thinking").set_value(4)
    at.number_input(key="max_answer").set_value(2)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("could not be stored" in e.value and str(blocker) in e.value for e in at.error)
    assert any(b.label == "Retry saving the trace" for b in at.button)
    st.cache_resource.clear()
