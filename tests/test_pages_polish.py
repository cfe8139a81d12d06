"""What a new user tripped on (issue 10 §5), page by page through AppTest against real DuckDB files:
trace text shown as text, figures that read "—" when unknown, forced tokens counted apart, tables
with the columns people look for first, formatted, without empty columns, and a sentence where a
table or chart is empty."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.records import ANSWER, FORCED, THINKING, TokenColumns, TraceRecord
from storage.config import StorageConfig
from storage.traces import count_traces, get_trace, save_trace

REPO = Path(__file__).resolve().parent.parent
PAGES = REPO / "pages"
# Markdown that must stay text: an image the browser would fetch, a live link, HTML, colour syntax.
HOSTILE = "![pixel](http://127.0.0.1:9/pixel.png) [click me](http://127.0.0.1:9/evil) <b>bold</b> :red[red] $x^2$"


@pytest.fixture
def page_db(tmp_path, monkeypatch) -> StorageConfig:
    """An empty database (no sample seed) that the pages open through THINKSCOPE_DB."""
    config = StorageConfig(db_path=tmp_path / "polish.duckdb", seed_path=None)
    count_traces(config)  # creates and migrates it; an existing file is never seeded
    monkeypatch.setenv("THINKSCOPE_DB", str(config.db_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield config
    st.cache_resource.clear()
    st.cache_data.clear()


def record(prompt="What is 2 + 2?", phases=(THINKING,) * 3 + (ANSWER,) * 2, latency_s=1.0, answer="4",
           thinking="two and two", reference="4", texts=None) -> TraceRecord:
    n = len(phases)
    texts = list(texts) if texts is not None else [f"t{i} " for i in range(n)]
    tokens = TokenColumns(
        token_id=np.arange(n, dtype=np.int64), text=texts, logprob=np.full(n, -0.5, np.float32),
        entropy=np.full(n, 1.0, np.float32), top_ids=np.zeros((n, 1), np.int64), top_texts=[["x"]] * n,
        top_logprobs=np.zeros((n, 1), np.float32), phase=np.asarray(phases, np.int8),
    )
    return TraceRecord(prompt=prompt, model="embedded:SmolLM2-135M-Instruct", thinking_text=thinking,
                       answer_text=answer, tokens=tokens, stop_reason="eos", latency_s=latency_s,
                       reference_answer=reference, extracted_answer=answer, correct=answer == reference)


def text_only(prompt=HOSTILE) -> TraceRecord:
    """An imported trace that came as text: no tokens, no timing."""
    return TraceRecord(prompt=prompt, model="imported", thinking_text=f"thinking {HOSTILE}", answer_text=f"answer {HOSTILE}",
                       tokens=TokenColumns.empty(), stop_reason="imported", latency_s=0.0, reference_answer="4",
                       extracted_answer="4", correct=True)


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def shown_text(at: AppTest) -> tuple[str, str]:
    """(everything drawn as Markdown, everything drawn as raw HTML) on the page."""
    markdown = "\n".join(e.value for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error])
    return markdown, "\n".join(h.proto.body for h in at.get("html"))


def dataframe_spec(at: AppTest, first_column: str) -> tuple[list[str], dict]:
    """(column order, column config by column) of the st.dataframe whose first shown column is this."""
    frame = next(d for d in at.dataframe if list(d.proto.column_order)[:1] == [first_column])
    return list(frame.proto.column_order), json.loads(frame.proto.columns)


# --- trace text is text ---------------------------------------------------------------------------


def test_trace_page_shows_prompt_thinking_and_answer_as_text_never_markdown(page_db):
    trace_id = save_trace(page_db, text_only())
    at = page("trace", id=str(trace_id))
    markdown, html = shown_text(at)
    assert "pixel.png" not in markdown and "click me" not in markdown  # nothing of it went through Markdown
    assert html.count("![pixel](http://127.0.0.1:9/pixel.png)") == 3  # prompt, thinking, answer: literal text
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html


def test_review_page_shows_trace_text_and_labels_as_text(page_db):
    trace_id = save_trace(page_db, record(prompt=HOSTILE, answer=f"4 {HOSTILE}"))
    at = page("review", reviewer="ana", trace=str(trace_id))
    markdown, html = shown_text(at)
    assert "pixel.png" not in markdown
    assert "![pixel](http://127.0.0.1:9/pixel.png)" in html


# --- unknown figures read "—"; forced tokens apart ------------------------------------------------


def test_text_only_import_shows_dashes_not_zero_speed(page_db):
    trace_id = save_trace(page_db, text_only(prompt="What is 2 + 2?"))
    shown = metrics(page("trace", id=str(trace_id)))
    assert shown["Tokens"] == "—"
    assert shown["Time"] == "—"
    assert shown["Speed"] == "—"
    assert "SmolL…" not in shown.values()


def test_forced_tokens_are_counted_apart_and_marked(page_db):
    phases = (THINKING,) * 8 + (FORCED,) * 4 + (ANSWER,) * 3
    texts = [f"w{i} " for i in range(8)] + ["Final", " Answer", ":", " "] + ["4", ".", ""]
    trace_id = save_trace(page_db, record(phases=phases, texts=texts))
    stored = get_trace(page_db, trace_id).record
    assert (stored.n_thinking_tokens, stored.n_forced_tokens, stored.n_answer_tokens) == (8, 4, 3)
    at = page("trace", id=str(trace_id))
    assert metrics(at)["Tokens"] == "8 thinking + 4 forced + 3 answer"
    _, html = shown_text(at)
    assert html.count('class="ts-forced"') == 4
    assert "forced: injected by budget forcing" in html
    assert any("Dashed outline = forced" in c.value for c in at.caption)


def test_with_forced_marks_only_the_given_positions():
    cols = record().tokens.with_forced([1, 2, 99])  # 99: beyond the trace, ignored
    assert cols.phase.tolist() == [THINKING, FORCED, FORCED, ANSWER, ANSWER]
    assert record().tokens.with_forced([]).phase.tolist() == [THINKING] * 3 + [ANSWER] * 2


def test_token_count_text():
    from ui.tables import rate_text, seconds_text, token_count_text

    assert token_count_text(128, 20, 4, 152) == "128 thinking + 4 forced + 20 answer"
    assert token_count_text(10, 2, 0, 12) == "10 thinking + 2 answer"
    assert token_count_text(0, 0, 0, 0) == "—"
    assert (seconds_text(0.0), rate_text(0, 0.0), rate_text(10, 0.0)) == ("—", "—", "—")
    assert (seconds_text(2.04), rate_text(41, 2.0)) == ("2.0 s", "20.5 tok/s")


# --- tables ----------------------------------------------------------------------------------------


def test_traces_table_puts_grade_and_stop_reason_first_formats_and_drops_empty_columns(page_db):
    save_trace(page_db, record(reference=None, answer="4"))  # reference and forced: no value anywhere
    save_trace(page_db, record(phases=(THINKING, FORCED, ANSWER), latency_s=3.0, reference=None))
    at = page("traces")
    order, config = dataframe_spec(at, "trace_id")
    assert order[:4] == ["trace_id", "correct", "prompt", "extracted_answer"]
    assert "reference_answer" not in order  # all None
    assert order.index("stop_reason") < order.index("model")
    assert config["tokens_per_s"]["type_config"]["format"] == "%.1f"
    # Everything up to the speed fits the main column of a 1,400 px window (about 940 px).
    from ui.tables import TRACE_COLUMNS

    widths = {c.name: c.width for c in TRACE_COLUMNS}
    assert sum(widths[c] for c in order[: order.index("tokens_per_s") + 1]) <= 940


def test_traces_page_says_why_the_table_is_empty(page_db):
    at = page("traces")
    assert any("No traces stored yet" in i.value for i in at.info)
    at.text_input(key="filter_prompt").input("no such prompt").run()
    assert any("No trace matches these filters" in i.value for i in at.info)


def test_show_table_drops_empty_columns_and_orders():
    from ui.tables import Col, shown_columns

    frame = pd.DataFrame({"a": [1, 2], "b": [None, None], "c": ["", " "], "d": [0.3333, None]})
    cols = [Col("d", "d", "percent"), Col("a", "a", "int"), Col("b", "b"), Col("c", "c"), Col("zz", "missing")]
    assert [c.name for c in shown_columns(frame, cols)] == ["d", "a"]
    with pytest.raises(ValueError, match="kind"):
        Col("x", "x", "money")


# --- empty pages say why ----------------------------------------------------------------------------


def test_compare_page_without_runs_says_why(page_db):
    at = page("compare")
    assert any("No stored runs yet" in i.value for i in at.info)


def test_review_page_with_an_empty_queue_says_why(page_db):
    at = page("review", reviewer="ana")
    assert any("queue is empty" in i.value.lower() for i in at.info)


# --- the server configuration -----------------------------------------------------------------------


def test_streamlit_config_does_not_watch_the_tree():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"


def test_no_deprecated_use_container_width_anywhere():
    offenders = [str(p.relative_to(REPO)) for d in ("pages", "ui") for p in (REPO / d).glob("*.py")
                 if "use_container_width" in p.read_text()]
    offenders += ["app.py"] if "use_container_width" in (REPO / "app.py").read_text() else []
    assert offenders == []


# --- charts ----------------------------------------------------------------------------------------


def _point(label, tokens, correct, n=10):
    from analysis.length_curve import CurvePoint
    from analysis.run_metrics import wilson_interval

    low, high = wilson_interval(correct, n)
    return CurvePoint(label, tokens, int(tokens), int(tokens), n, correct, correct / n, low, high, ())


def test_sweep_chart_labels_best_and_decline_off_their_markers():
    from analysis.length_curve import LengthCurve
    from ui.curve_charts import LABEL_OFFSET_PX, length_curve_figure

    points = (_point("32", 30, 6), _point("64", 60, 10), _point("128", 120, 2))
    curve = LengthCurve("budget", points, 0, ())
    assert (curve.best.label, curve.decline.label) == ("64", "128")
    fig = length_curve_figure(curve, LengthCurve("quantile", (), 0, ()))
    marks = [t for t in fig.data if t.name in ("best", "decline")]
    assert [t.mode for t in marks] == ["markers", "markers"]  # no text drawn on top of the markers
    notes = {a.text: a for a in fig.layout.annotations}
    best, decline = notes["best: 64"], notes["decline: 128"]
    assert best.showarrow and decline.showarrow
    assert best.ax < 0 < decline.ax  # best to the left, decline to the right: they never overlap
    assert min(abs(best.ax), abs(best.ay), abs(decline.ax), abs(decline.ay)) >= LABEL_OFFSET_PX
    assert best.ay > 0  # near the top (accuracy 1.0), so below its point, inside the plot


def test_token_chart_hover_escapes_token_text():
    from ui.charts import token_signal_figure

    cols = record(texts=['<a href="http://x">', "b", "c", "d", "e"]).tokens
    hover = token_signal_figure(cols).data[0].customdata
    assert "<a" not in hover[0] and "&lt;a href=" in hover[0]


# --- Compare and Strategies tables ----------------------------------------------------------------


@pytest.fixture
def two_runs(page_db):
    from tests.test_compare_page import _strategy_run

    a = _strategy_run(page_db, "self_consistency", {"What is 2 + 3?": ["5", "5"], "What is 4 + 4?": [HOSTILE, HOSTILE]})
    b = _strategy_run(page_db, "greedy", {"What is 2 + 3?": ["5"], "What is 4 + 4?": ["9"]})
    return a, b


def test_compare_table_leads_with_accuracy_e3_ockscore_cost_and_shows_answers_as_text(two_runs):
    at = page("compare")
    at.multiselect(key="cmp_runs").set_value(list(two_runs)).run()
    assert not at.exception, at.exception
    order, config = dataframe_spec(at, "run")
    assert order[:5] == ["run", "accuracy", "e3", "ock_score", "cost_usd"]
    assert "repeated_steps" not in order  # no loop marks yet: an all-empty column
    assert config["accuracy"]["type_config"]["format"] == "percent"
    assert config["cost_usd"]["type_config"]["format"] == "$%.6f"
    from ui.compare_view import METRIC_COLUMNS

    assert sum(c.width for c in METRIC_COLUMNS if c.name in order[:8]) <= 940
    markdown, html = shown_text(at)
    assert "pixel.png" not in markdown
    assert "![pixel](http://127.0.0.1:9/pixel.png)" in html  # the hostile answer, as literal text


def test_strategy_runs_table_is_formatted_and_ordered(page_db, two_runs):
    from storage.runs import save_run_metrics

    for run_id in two_runs:
        save_run_metrics(page_db, run_id, {
            "metrics_version": 2, "accuracy": 0.5, "selection_accuracy": 0.5, "sample_accuracy": 0.3333,
            "n_queries": 2, "total_tokens_per_query": 53.8889, "mean_thinking_tokens": 20.25, "mean_answer_tokens": 3.0,
            "mean_latency_s": 1.234, "tokens_per_s": 18.2, "outcome_efficiency": 0.4, "e3": 0.0046, "ock_score": 49.7,
            "total_tokens": 107.78, "n_ties": None, "n_not_finished": None,
        })

    def script():
        from ui.resources import storage_config
        from ui.strategy_view import runs_table

        runs_table(storage_config(), 0.6)

    at = AppTest.from_function(script, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    order, config = dataframe_spec(at, "run_id")
    assert order[:6] == ["run_id", "strategy", "accuracy", "e3", "ock_score", "cost (USD at 0.6/M)"]
    assert config["accuracy"]["type_config"]["format"] == "percent"
    assert config["mean_latency_s"]["type_config"]["format"] == "%.2f s"
    assert config["total_tokens_per_query"]["type_config"]["format"] == "%.1f"  # 53.9, not 53.8889
    assert "n_ties" not in order  # None in every run


def test_import_export_page_with_nothing_to_export_says_why(page_db):
    at = page("import_export")
    assert any("Nothing to download yet" in i.value for i in at.info)


def test_md_text_escapes_every_markdown_character():
    from ui.tables import md_text

    escaped = md_text(HOSTILE)
    assert "![" not in escaped and "](" not in escaped and ":red[" not in escaped and "\\$x" in escaped
    assert escaped.replace("\\", "") == HOSTILE
