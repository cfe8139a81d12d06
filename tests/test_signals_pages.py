"""Trace page analysis section and the Signals page, through AppTest with the real embedded model."""
import generation  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

import dataclasses
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.trace_signals import AnalysisSettings
from storage.analyses import get_analysis
from storage.testing import make_record
from storage.traces import save_trace

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app_db(app_db):
    return dataclasses.replace(app_db, seed_path=None)  # keep it small: no sample import


@pytest.fixture(scope="module")
def real_trace(embedded):
    from generation.decoding import SamplingConfig
    from generation.prompting import detect_format
    from generation.streaming import GenerationRequest, generate

    request = GenerationRequest("What is 3 + 4?", SamplingConfig(0.0, 1.0, 16, 6, 0), detect_format(embedded.tokenizer), "7")
    return generate(embedded, request).record


def _trace_page(trace_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["id"] = str(trace_id)
    at.run()
    at.switch_page("pages/trace.py").run()
    assert not at.exception, at.exception
    return at


def test_trace_page_runs_stores_and_reopens_an_analysis(app_db, real_trace, embedded):
    trace_id = save_trace(app_db, real_trace)
    at = _trace_page(trace_id)
    assert any("Not analysed yet" in c.value for c in at.caption)
    at.button(key="an_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(m.label == "MI peaks" for m in at.metric)
    assert any("stored reference answer" in c.value for c in at.caption)  # the UI says which reference
    assert len(at.get("plotly_chart")) >= 2
    assert get_analysis(app_db, trace_id, real_trace.model, AnalysisSettings().key) is not None
    # Reopening shows the stored analysis without running anything.
    again = _trace_page(trace_id)
    assert any(m.label == "DTR" for m in again.metric)
    assert again.button(key="an_run").label == "Re-run analysis"
    again.radio(key="an_colour").set_value("settling depth").run()
    assert not again.exception, again.exception


def test_trace_page_reports_an_unloadable_model_and_a_missing_reference(app_db):
    trace_id = save_trace(app_db, make_record(model="/nonexistent/model", reference_answer=None, extracted_answer=None,
                                              answer_text=""))
    at = _trace_page(trace_id)
    assert at.radio(key="an_reference").value == "self"  # no stored answer: default to the model's own
    at.button(key="an_run").click().run()
    assert "Cannot load '/nonexistent/model'" in at.error[0].value
    at.text_input(key="an_model").input("embedded:SmolLM2-135M-Instruct").run()
    at.button(key="an_run").click().run()
    assert "no final answer" in at.error[0].value
    at.radio(key="an_reference").set_value("typed").run()
    assert "Type a reference" in at.error[0].value


def test_signals_page(app_db, real_trace, embedded):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/signals.py").run()
    assert "No trace has been analysed yet" in at.info[0].value
    from generation.analyze import analyze_trace
    from storage.analyses import save_analysis

    # The same tokens graded once right and once wrong: enough rows for the tables to fill.
    for record in (real_trace, dataclasses.replace(real_trace, correct=False, prompt="y")):
        save_analysis(app_db, save_trace(app_db, record), analyze_trace(embedded, record))
    at.run()
    assert not at.exception, at.exception
    values = [d.value for d in at.dataframe]
    assert any("word" in f.columns and set(f["word"]) == {"So", "Hmm", "Wait", "Therefore"} for f in values)
    corr = next(f for f in values if "signal" in f.columns)
    assert list(corr["signal"])[0] == "DTR" and "length (tokens)" in set(corr["signal"]) and len(corr) == 8
