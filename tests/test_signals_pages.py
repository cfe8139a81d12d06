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
    at.checkbox(key="an_confirm").check().run()  # a model named only by the trace: the user confirms first
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


def test_no_peaks_says_why_and_shows_the_most_informative_tokens(app_db, real_trace, embedded):
    trace_id = save_trace(app_db, real_trace)
    at = _trace_page(trace_id)
    at.number_input(key="an_tau").set_value(10.0).run()  # τ within reach, outside the parameters expander
    at.button(key="an_run").click().run()
    assert not at.exception, at.exception
    message = next(i.value for i in at.info if "No token passes the IQR peak rule" in i.value)
    assert "largest m_t is" in message and "Q3 + τ·IQR" in message and "τ = 10" in message
    top = next(d.value for d in at.dataframe if "m_t" in d.value.columns)
    assert len(top) == min(10, len(real_trace.tokens)) and top["m_t"].is_monotonic_decreasing
    assert any("a ranking, not IQR peaks" in m.value for m in at.markdown)
    # The Signals page says why its peak-word table is empty instead of showing an empty table.
    at.switch_page("pages/signals.py").run()
    assert not at.exception, at.exception
    assert any("No MI peaks in these 1 analysed traces" in i.value and "τ = 10" in i.value for i in at.info)
    assert not any("share of peaks" in d.value.columns for d in at.dataframe)
    # One trace, graded once: no bins to correlate, and the page says so in place of the bar chart.
    assert any(c.value.startswith("No bar: no signal has a correlation yet") for c in at.caption)


def test_the_analysis_choices_of_one_trace_do_not_carry_over(app_db):
    first = save_trace(app_db, make_record(model="embedded:SmolLM2-135M-Instruct", reference_answer="7"))
    second = save_trace(app_db, make_record(model="/other/model", reference_answer=None, extracted_answer="3", prompt="z"))
    at = _trace_page(first)
    assert at.radio(key="an_reference").value == "stored"
    at.text_input(key="an_model").input("my/analysing-model").run()
    at.radio(key="an_reference").set_value("typed").run()
    at.number_input(key="trace_id").set_value(second).run()
    assert not at.exception, at.exception
    assert at.text_input(key="an_model").value == "/other/model"
    assert at.radio(key="an_reference").value == "self"  # this trace has no stored answer
    at.number_input(key="trace_id").set_value(first).run()
    assert at.text_input(key="an_model").value == "embedded:SmolLM2-135M-Instruct"
    assert at.radio(key="an_reference").value == "stored"


def test_charts_label_the_deep_band_on_an_opaque_box_and_round_the_entropy_ticks():
    import numpy as np

    from analysis.confidence import TokenStats
    from analysis.trace_signals import TraceAnalysis, summarise_signals
    from storage.testing import make_tokens
    from ui.charts import token_signal_figure
    from ui.signal_charts import jsd_heatmap_figure, mi_curve_figure

    rng = np.random.default_rng(0)
    n_layers, n_t = 30, 20
    jsd = np.clip(np.linspace(0.69, 0, n_layers)[:, None] + rng.normal(0, 0.05, (n_layers, n_t)), 0, 0.69)
    jsd[-1] = 0
    stats = TokenStats(rng.uniform(0, 5, n_t), rng.uniform(0, 3, n_t), rng.uniform(0, 3, n_t))
    tokens, summary = summarise_signals(rng.normal(3, 0.1, n_t), jsd, stats, rng.normal(-1, 1, n_t), ["x"] * n_t,
                                        np.arange(n_t), np.zeros(n_t, np.int8), AnalysisSettings())
    analysis = TraceAnalysis("m", AnalysisSettings(), "stored", "7", tokens, summary)
    label = next(a for a in jsd_heatmap_figure(analysis).layout.annotations if "deep band" in a.text)
    assert label.text == "deep band ≥ layer 26" and label.bgcolor and label.xref == "paper"
    top = mi_curve_figure(analysis, np.array([3, 1])).data
    assert any(t.name == "top 2 m_t (not peaks)" and list(t.x) == [3, 1] for t in top)
    assert token_signal_figure(make_tokens(12, 3, 0)).layout.yaxis2.tickmode == "auto"  # not "sync"
