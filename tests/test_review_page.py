"""The Review page through AppTest on a real DuckDB file: queue, span labels, verdicts, conflicts, agreement."""
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.steps import split_steps
from storage.annotations import annotation_history, current_annotation, list_labels
from storage.config import StorageConfig
from storage.testing import make_record
from storage.traces import create_run, save_trace

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "review.py")
THINKING = "First, 2 + 3. That is 5.\n\nLet me check: 5 - 3 = 2. <script>alert('x')</script> Yes."


@pytest.fixture
def review_db(tmp_path, monkeypatch):
    db = tmp_path / "review.duckdb"
    config = StorageConfig(db_path=db, seed_path=None)  # created here, so the app does not seed it
    run = create_run(config, "m", "greedy")
    ids = [save_trace(config, make_record(thinking_text=THINKING, seed=i), run_id=run) for i in range(3)]
    monkeypatch.setenv("THINKSCOPE_DB", str(db))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield config, ids
    st.cache_resource.clear()
    st.cache_data.clear()


def _open(reviewer: str | None = "alice", trace: int | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if reviewer:
        at.query_params["reviewer"] = reviewer
    if trace:
        at.query_params["trace"] = str(trace)
    at.run()
    assert not at.exception, at.exception
    return at


def _rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def _click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click()
    return _rerun(at)


def _html(at: AppTest) -> str:
    return " ".join(str(h.proto) for h in at.get("html")) + " ".join(m.value for m in at.markdown)


def _progress(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def test_without_a_name_the_page_asks_for_one(review_db):
    at = _open(reviewer=None)
    assert "Type your name" in at.info[0].value
    at.text_input(key="review_reviewer_input").input("dana").run()
    assert not at.exception
    assert _progress(at) == "0 of 3 reviewed by dana"
    assert at.query_params["reviewer"] == ["dana"] or at.query_params["reviewer"] == "dana"


def test_label_a_step_then_save_a_verdict_and_move_on(review_db):
    config, ids = review_db
    at = _open()
    assert _progress(at) == "0 of 3 reviewed by alice"
    assert f"Trace #{ids[0]} · 1 of 3 in this queue" in at.caption[0].value

    step = split_steps(THINKING, "sentence")[1]
    at.selectbox(key=f"review_step::{ids[0]}::sentence").set_value(1)
    computation = next(l.label_id for l in list_labels(config) if l.name == "computation")
    at.selectbox(key="review_label").set_value(computation)
    _click(at, "review_add_span")
    assert at.success[0].value == "Saved as version 1."
    (span,) = current_annotation(config, ids[0], "alice").spans
    assert (span.start, span.end, span.text, span.label) == (step.start, step.end, "That is 5.", "computation")
    assert "ts-badge" in _html(at) and ">computation</span>" in _html(at)
    # Trace text is escaped wherever it is shown.
    assert "&lt;script&gt;" in _html(at) and "<script>alert" not in _html(at)

    at.radio(key=f"review_verdict::{ids[0]}::alice").set_value("overthought")
    at.text_area(key=f"review_notes::{ids[0]}::alice").input("checks 5 - 3 for no reason")
    _click(at, "review_save")
    current = current_annotation(config, ids[0], "alice")
    assert (current.version, current.verdict, len(current.spans)) == (2, "overthought", 1)
    assert _progress(at) == "1 of 3 reviewed by alice"
    assert f"Trace #{ids[0]} · not in this queue" in at.caption[0].value  # stays until Next

    _click(at, "review_next")
    assert f"Trace #{ids[1]} · 1 of 2 in this queue" in at.caption[0].value
    assert at.query_params["trace"] in ([str(ids[1])], str(ids[1]))
    assert at.button(key="review_prev").disabled  # the reviewed trace left the queue: nothing before
    _click(at, "review_next")
    _click(at, "review_prev")
    assert f"Trace #{ids[1]} · 1 of 2 in this queue" in at.caption[0].value

    # A fresh session (a reload) opens the same trace and shows the stored label.
    again = _open(trace=ids[0])
    assert ">computation</span>" in _html(again)
    assert again.radio(key=f"review_verdict::{ids[0]}::alice").value == "overthought"


def test_a_stale_tab_is_warned_and_its_save_is_kept_as_a_conflict(review_db):
    config, ids = review_db
    tab_a = _open(trace=ids[0])
    tab_b = _open(trace=ids[0])
    tab_b.radio(key=f"review_verdict::{ids[0]}::alice").set_value("correct")
    _click(tab_b, "review_save")

    tab_a.radio(key=f"review_verdict::{ids[0]}::alice").set_value("looping")
    _rerun(tab_a)
    assert any("Version 1 was saved" in w.value for w in tab_a.warning)  # told before saving
    _click(tab_a, "review_save")
    assert any("but version 1 had been saved" in w.value for w in tab_a.warning)
    assert any(e.label.startswith("Version 1 — the one your save did not include") for e in tab_a.expander)
    history = annotation_history(config, ids[0], "alice")
    assert [(a.version, a.verdict, a.stale) for a in history] == [(2, "looping", True), (1, "correct", False)]

    # Restoring version 1 from the history makes it current again, as version 3.
    tab_a.selectbox(key=f"review_restore::{ids[0]}").set_value(1)
    _click(tab_a, "review_restore_go")
    current = current_annotation(config, ids[0], "alice")
    assert (current.version, current.verdict, current.stale) == (3, "correct", False)


def test_two_reviewers_and_their_agreement(review_db):
    config, ids = review_db
    for name, verdicts in (("alice", ["correct", "looping"]), ("bob", ["correct", "incorrect"])):
        at = _open(reviewer=name)
        for trace_id, verdict in zip(ids, verdicts):
            at.radio(key=f"review_verdict::{trace_id}::{name}").set_value(verdict)
            _click(at, "review_save")
            _click(at, "review_next")
    at = _open(reviewer="bob", trace=ids[1])
    assert any(e.label == "Reviewers disagree (2)" for e in at.expander)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Percent agreement"] == "50.0 %"
    assert metrics["Traces with two or more verdicts"] == "2"
    assert current_annotation(config, ids[1], "alice").verdict == "looping"  # bob's save did not touch alice's


def test_queue_filters_by_verdict(review_db):
    _, ids = review_db
    at = _open()
    at.radio(key=f"review_verdict::{ids[0]}::alice").set_value("looping")
    _click(at, "review_save")
    at.selectbox(key="review_status").set_value("reviewed")
    _rerun(at)
    assert f"Trace #{ids[0]} · 1 of 1 in this queue" in at.caption[0].value
    at.multiselect(key="review_verdicts").set_value(["correct"])
    _rerun(at)
    assert "The queue is empty" in at.info[0].value


def test_taxonomy_editor_adds_and_retires(review_db):
    config, _ = review_db
    at = _open()
    at.text_input(key="taxonomy_new_name").input("<b>guess</b>")
    at.button(key="FormSubmitter:taxonomy_add-Add label").click()
    _rerun(at)
    added = next(l for l in list_labels(config) if l.name == "<b>guess</b>")
    at.selectbox(key="taxonomy_pick").set_value(added.label_id)
    _click(at, "taxonomy_retire_go")
    assert at.success[0].value == "Retired."
    assert added.label_id not in [l.label_id for l in list_labels(config)]
    assert added.label_id not in at.selectbox(key="review_label").options


def test_thinking_html_escapes_and_shows_labels_of_any_unit():
    from storage.annotations import SpanLabel
    from ui.annotation_widgets import thinking_html

    text = "A <b>bold</b> start. Then more.\n\nNew & last paragraph."
    sentences = split_steps(text, "sentence")
    paragraph = split_steps(text, "paragraph")[0]
    spans = (SpanLabel(paragraph.start, paragraph.end, 3, "paragraph", paragraph.text, "plan <i>x</i>"),
             SpanLabel(sentences[1].start, sentences[1].end, 4, "sentence", sentences[1].text, "computation"))
    out = thinking_html(text, sentences, spans, selected=0)
    assert "&lt;b&gt;bold&lt;/b&gt;" in out and "New &amp; last" in out and "<b>" not in out
    assert "plan &lt;i&gt;x&lt;/i&gt;</span>" in out and "computation</span>" in out
    # Every character of the text is shown once, in order.
    import html
    import re
    shown = html.unescape(re.sub(r'<span class="ts-(step-n|badge)[^"]*"[^>]*>[^<]*</span>|<[^>]+>', "", out.split('<div class="ts-steps">')[1]))
    assert shown == text
    assert out.count('class="ts-selected"') == 1 and out.count('class="ts-step-n"') == len(sentences)
