"""Annotations on a real DuckDB file: history, stale saves, two reviewers, taxonomy, queue, export."""
import json
import threading

import pytest

from analysis.steps import split_steps
from storage.annotations import (
    AnnotationDraft,
    AnnotationError,
    QueueFilter,
    SpanLabel,
    add_label,
    annotation_history,
    current_annotation,
    current_annotations,
    current_verdicts,
    export_annotations_jsonl,
    list_labels,
    rename_label,
    review_queue,
    save_annotation,
    set_label_retired,
)
from storage.connection import connect
from storage.testing import make_record
from storage.traces import create_run, save_trace

THINKING = "First, 2 + 3. That is 5.\n\nLet me check: 5 - 3 = 2. Yes."


@pytest.fixture
def traces(db_config):
    run_a = create_run(db_config, "m", "greedy")
    run_b = create_run(db_config, "m", "sampling")
    ids = [save_trace(db_config, make_record(thinking_text=THINKING, seed=i), run_id=run_a) for i in range(3)]
    ids.append(save_trace(db_config, make_record(thinking_text=THINKING, seed=9), run_id=run_b))
    return db_config, ids, (run_a, run_b)


def _label(config, name):
    return next(l for l in list_labels(config, include_retired=True) if l.name == name)


def _span(config, step_index=0, label="computation", unit="sentence"):
    step = split_steps(THINKING, unit)[step_index]
    return SpanLabel(step.start, step.end, _label(config, label).label_id, unit, step.text)


def test_the_default_taxonomy_is_seeded(db_config):
    names = [l.name for l in list_labels(db_config)]
    assert names == [
        "problem setup", "plan", "fact retrieval", "computation", "uncertainty management", "self-check",
        "result consolidation", "answer emission", "error", "overthinking",
    ]


def test_every_edit_is_a_new_version_and_current_is_the_latest(traces):
    config, ids, _ = traces
    span = _span(config, 1)
    first = save_annotation(config, AnnotationDraft(ids[0], "alice", "correct", "fine", (span,)), expected_version=0)
    second = save_annotation(config, AnnotationDraft(ids[0], "alice", "overthought", "checks twice"), expected_version=1)
    assert (first.annotation.version, second.annotation.version) == (1, 2)
    assert not first.conflict and not second.conflict

    current = current_annotation(config, ids[0], "alice")
    assert (current.verdict, current.notes, current.spans) == ("overthought", "checks twice", ())
    history = annotation_history(config, ids[0], "alice")
    assert [a.version for a in history] == [2, 1]
    old = history[1]
    assert old.verdict == "correct" and old.notes == "fine"
    assert [(s.start, s.end, s.label, s.text) for s in old.spans] == [(span.start, span.end, "computation", "That is 5.")]
    assert THINKING[old.spans[0].start : old.spans[0].end] == "That is 5."


def test_a_stale_save_is_kept_flagged_and_names_the_newer_version(traces):
    config, ids, _ = traces
    save_annotation(config, AnnotationDraft(ids[0], "alice", "correct"), 0)
    # Two tabs of alice both loaded version 1; tab B saves first.
    tab_b = save_annotation(config, AnnotationDraft(ids[0], "alice", "looping", "tab B"), expected_version=1)
    tab_a = save_annotation(config, AnnotationDraft(ids[0], "alice", "incorrect", "tab A"), expected_version=1)
    assert not tab_b.conflict
    assert tab_a.conflict
    assert (tab_a.annotation.version, tab_a.annotation.based_on, tab_a.annotation.superseded) == (3, 1, 2)
    history = annotation_history(config, ids[0], "alice")
    assert [(a.version, a.notes, a.stale) for a in history] == [(3, "tab A", True), (2, "tab B", False), (1, "", False)]
    # Saving on top of the latest one clears the conflict.
    again = save_annotation(config, AnnotationDraft(ids[0], "alice", "looping", "merged"), expected_version=3)
    assert not again.conflict and again.annotation.version == 4


def test_an_expected_version_from_the_future_is_refused(traces):
    config, ids, _ = traces
    with pytest.raises(AnnotationError, match="does not exist"):
        save_annotation(config, AnnotationDraft(ids[0], "alice", "correct"), expected_version=3)
    assert annotation_history(config, ids[0]) == []


def test_two_reviewers_keep_their_own_rows(traces):
    config, ids, _ = traces
    save_annotation(config, AnnotationDraft(ids[1], "alice", "correct", "a"), 0)
    save_annotation(config, AnnotationDraft(ids[1], "bob", "looping", "b"), 0)  # bob never saw alice's
    current = current_annotations(config, ids[1])
    assert {r: (a.verdict, a.version, a.stale) for r, a in current.items()} == {
        "alice": ("correct", 1, False), "bob": ("looping", 1, False),
    }
    assert current_verdicts(config) == {ids[1]: {"alice": "correct", "bob": "looping"}}


def test_two_reviewers_saving_from_threads_lose_nothing(traces):
    config, ids, _ = traces
    errors = []

    def review(name):
        try:
            for i in range(5):
                save_annotation(config, AnnotationDraft(ids[2], name, "correct", f"{name} {i}"), expected_version=i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=review, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = annotation_history(config, ids[2])
    assert sorted((a.reviewer, a.version) for a in history) == [(r, v) for r in ("alice", "bob") for v in range(1, 6)]
    assert not any(a.stale for a in history)


def test_bad_drafts_are_refused_with_a_message(traces):
    config, ids, _ = traces
    with pytest.raises(AnnotationError, match="reviewer name"):
        AnnotationDraft(ids[0], "  ", "correct")
    with pytest.raises(AnnotationError, match="verdict must be one of"):
        AnnotationDraft(ids[0], "alice", "brilliant")
    with pytest.raises(AnnotationError, match="does not exist"):
        save_annotation(config, AnnotationDraft(99_999, "alice", "correct"), 0)
    wrong_text = SpanLabel(0, 5, _label(config, "plan").label_id, "sentence", "Hello")
    with pytest.raises(AnnotationError, match="does not match"):
        save_annotation(config, AnnotationDraft(ids[0], "alice", None, "", (wrong_text,)), 0)
    with pytest.raises(AnnotationError, match="start < end"):
        SpanLabel(5, 5, 1, "sentence", "")
    assert annotation_history(config, ids[0]) == []


def test_taxonomy_add_rename_retire_and_old_spans_stay_readable(traces):
    config, ids, _ = traces
    new_id = add_label(config, "  Arithmetic   slip ", "wrong sum")
    assert _label(config, "Arithmetic slip").label_id == new_id
    assert [l.name for l in list_labels(config)][-1] == "Arithmetic slip"
    with pytest.raises(AnnotationError, match="already exists"):
        add_label(config, "arithmetic SLIP")
    with pytest.raises(AnnotationError, match="already exists"):
        rename_label(config, new_id, "Computation")

    span = _span(config, 0, "Arithmetic slip")
    save_annotation(config, AnnotationDraft(ids[0], "alice", "incorrect", "", (span,)), 0)
    rename_label(config, new_id, "arithmetic error")
    set_label_retired(config, new_id)
    assert "arithmetic error" not in [l.name for l in list_labels(config)]
    (kept,) = current_annotation(config, ids[0], "alice").spans
    assert (kept.label, kept.retired) == ("arithmetic error", True)

    # A retired label may stay on a span it was already on, but goes on no new span.
    save_annotation(config, AnnotationDraft(ids[0], "alice", "incorrect", "still", (span,)), 1)
    with pytest.raises(AnnotationError, match="retired"):
        save_annotation(config, AnnotationDraft(ids[0], "alice", None, "", (_span(config, 2, "arithmetic error"),)), 2)
    set_label_retired(config, new_id, retired=False)
    save_annotation(config, AnnotationDraft(ids[0], "alice", None, "", (_span(config, 2, "arithmetic error"),)), 2)
    with pytest.raises(AnnotationError, match="needs a name"):
        add_label(config, " ")


def test_review_queue_filters_and_progress(traces):
    config, ids, (run_a, run_b) = traces
    save_annotation(config, AnnotationDraft(ids[0], "alice", "looping"), 0)
    save_annotation(config, AnnotationDraft(ids[1], "bob", "correct"), 0)
    # Span labels without a verdict do not count as reviewed.
    save_annotation(config, AnnotationDraft(ids[2], "alice", None, "", (_span(config),)), 0)

    queue = review_queue(config, QueueFilter("alice"))
    assert queue.trace_ids == (ids[1], ids[2], ids[3])
    assert (queue.n_reviewed, queue.n_in_scope) == (1, 4)
    assert review_queue(config, QueueFilter("alice", "reviewed")).trace_ids == (ids[0],)
    assert review_queue(config, QueueFilter("alice", "all")).trace_ids == tuple(ids)
    only_a = review_queue(config, QueueFilter("alice", run_ids=(run_a,)))
    assert only_a.trace_ids == (ids[1], ids[2]) and only_a.n_in_scope == 3
    assert review_queue(config, QueueFilter("alice", "unreviewed", verdicts=("correct",))).trace_ids == (ids[1],)
    assert review_queue(config, QueueFilter("alice", "all", verdicts=("looping", "correct"))).trace_ids == (ids[0], ids[1])
    assert review_queue(config, QueueFilter("carol")).n_reviewed == 0
    with pytest.raises(AnnotationError):
        QueueFilter("alice", verdicts=("great",))


def test_export_writes_one_object_per_version(traces, tmp_path):
    config, ids, _ = traces
    span = _span(config, 1)
    save_annotation(config, AnnotationDraft(ids[0], "alice", "correct", "<b>n</b> é", (span,)), 0)
    save_annotation(config, AnnotationDraft(ids[0], "alice", "looping", ""), 1)
    save_annotation(config, AnnotationDraft(ids[0], "bob", "looping", ""), 0)
    out = tmp_path / "sub" / "annotations.jsonl"
    assert export_annotations_jsonl(config, out) == 3
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(o["reviewer"], o["annotation_version"], o["verdict"]) for o in lines] == [
        ("alice", 1, "correct"), ("alice", 2, "looping"), ("bob", 1, "looping"),
    ]
    first = lines[0]
    assert first["format"] == "thinkscope.annotation" and first["notes"] == "<b>n</b> é"
    assert first["spans"] == [{"start": span.start, "end": span.end, "unit": "sentence", "label_id": span.label_id,
                               "label": "computation", "label_retired": False, "text": "That is 5."}]
    assert not (tmp_path / "sub" / "annotations.jsonl.part").exists()


def test_history_rows_are_never_updated(traces):
    config, ids, _ = traces
    for version in range(3):
        save_annotation(config, AnnotationDraft(ids[0], "alice", "correct", f"v{version}"), version)
    with connect(config, read_only=True) as con:
        notes = [r[0] for r in con.execute("SELECT notes FROM annotations ORDER BY annotation_id").fetchall()]
    assert notes == ["v0", "v1", "v2"]
