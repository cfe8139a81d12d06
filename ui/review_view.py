"""The Review page's parts: queue filters and keyboard navigation, the annotation editor, history.

Optimistic concurrency: the editor remembers which version it loaded (session state, per trace and
reviewer) and saves against it, so a save from a stale tab is stored, flagged and reported rather
than silently replacing a newer one. Saves run in button callbacks, before the page redraws.
"""
from __future__ import annotations

import streamlit as st

from analysis.agreement import VERDICTS
from analysis.steps import STEP_UNITS, split_steps
from storage.annotations import (
    Annotation,
    AnnotationDraft,
    QueueFilter,
    ReviewQueue,
    SpanLabel,
    annotation_history,
    current_annotation,
    list_labels,
    save_annotation,
)
from storage.config import StorageConfig
from storage.errors import StorageError
from storage.runs import list_runs
from storage.traces import StoredTrace
from ui.annotation_widgets import thinking_html
from ui.results import GRADE_LABELS
from ui.tables import Col, show_table
from ui.token_view import show_text

CURRENT_KEY = "review_trace_id"
NEXT_SHORTCUT, PREVIOUS_SHORTCUT = "J", "K"
_FILTER_KEY = "review_filter_seen"
_STATUS_LABELS = {"unreviewed": "Not yet reviewed by me", "reviewed": "Reviewed by me", "all": "All traces"}


# --- queue --------------------------------------------------------------------------------------


def queue_filter(config: StorageConfig, reviewer: str) -> QueueFilter:
    runs = list_runs(config, limit=500)
    names = {int(r.run_id): f"#{r.run_id} · {r.strategy} · {str(r.model).split('/')[-1]} ({r.n_traces})" for r in runs.itertuples()}
    c1, c2, c3 = st.columns([3, 2.5, 3])
    run_ids = c1.multiselect("Runs", list(names), format_func=names.get, key="review_runs", placeholder="All runs")
    status = c2.selectbox("Queue", list(_STATUS_LABELS), format_func=_STATUS_LABELS.get, key="review_status")
    verdicts = c3.multiselect("Verdict (any reviewer)", VERDICTS, key="review_verdicts", placeholder="Any verdict")
    return QueueFilter(reviewer, status, tuple(run_ids), tuple(verdicts))


def queue_navigation(queue: ReviewQueue, filt: QueueFilter) -> int | None:
    """Progress, Previous/Next (keys K/J) and the trace to show; kept in ?trace= so a reload keeps it."""
    ids = queue.trace_ids
    if CURRENT_KEY not in st.session_state:
        raw = st.query_params.get("trace", "")
        st.session_state[CURRENT_KEY] = int(raw) if raw.isdigit() else (ids[0] if ids else None)
    elif st.session_state.get(_FILTER_KEY) not in (None, filt) and st.session_state[CURRENT_KEY] not in ids:
        # New filters: move into the new queue. A trace that only just left it (reviewed) stays.
        _go(ids[0] if ids else None, allow_none=True)
    st.session_state[_FILTER_KEY] = filt
    current = st.session_state[CURRENT_KEY]
    if current is None and ids:
        current = st.session_state[CURRENT_KEY] = ids[0]

    done, total = queue.n_reviewed, queue.n_in_scope
    st.progress(done / total if total else 0.0, text=f"{done} of {total} reviewed by {filt.reviewer}")
    previous = max((i for i in ids if current is not None and i < current), default=None)
    following = min((i for i in ids if current is None or i > current), default=None)
    row = st.container(horizontal=True, vertical_alignment="center")
    row.button("Previous", key="review_prev", shortcut=PREVIOUS_SHORTCUT, disabled=previous is None,
              on_click=_go, args=(previous,), icon=":material/arrow_back:")
    row.button("Next", key="review_next", shortcut=NEXT_SHORTCUT, disabled=following is None,
              on_click=_go, args=(following,), icon=":material/arrow_forward:")
    if current is None:
        st.info("The queue is empty: every trace here is reviewed, or the filters match nothing.")
        return None
    where = f"{ids.index(current) + 1} of {len(ids)} in this queue" if current in ids else "not in this queue"
    row.caption(f"Trace #{current} · {where} · keys: {NEXT_SHORTCUT} next, {PREVIOUS_SHORTCUT} previous")
    if st.query_params.get("trace") != str(current):
        st.query_params["trace"] = str(current)
    return current


def _go(trace_id: int | None, allow_none: bool = False) -> None:
    if trace_id is None and not allow_none:
        return
    st.session_state[CURRENT_KEY] = trace_id
    # A trace opened again starts from its newest version, not from what this tab loaded before.
    for key in [k for k in st.session_state if str(k).startswith("review_base::")]:
        del st.session_state[key]


# --- the editor ---------------------------------------------------------------------------------


def trace_summary(stored: StoredTrace) -> None:
    record = stored.record
    st.markdown("**Prompt**")
    show_text(record.prompt)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Answer", _clip(record.extracted_answer or "—", 24), f"reference: {_clip(record.reference_answer or '—', 24)}",
              delta_color="off", delta_arrow="off")
    c2.metric("Grade", GRADE_LABELS[record.correct])
    c3.metric("Thinking tokens", record.n_thinking_tokens if len(record.tokens) else "—",
              f"+ {record.n_forced_tokens} forced" if record.n_forced_tokens else None, delta_color="off",
              delta_arrow="off")
    c4.metric("Run", f"#{stored.run_id}")
    with st.expander("Answer text"):
        show_text(record.answer_text or "(none)")


def review_editor(config: StorageConfig, stored: StoredTrace, reviewer: str) -> None:
    """Span labels on the thinking steps, verdict and notes, saved as a new version each time."""
    keys = _Keys(stored.trace_id, reviewer)
    latest = current_annotation(config, stored.trace_id, reviewer)
    if keys.base not in st.session_state:
        _load(keys, latest)
    base: Annotation | None = st.session_state[keys.base]
    _show_flash(config, keys)
    if latest is not None and latest.version > _version(base):
        _newer_version_notice(keys, base, latest)

    thinking = stored.record.thinking_text
    spans = base.spans if base else ()
    st.markdown("**Thinking** — pick a step, then a label")
    if thinking.strip():
        unit = st.radio("Step unit", STEP_UNITS, horizontal=True, key="review_unit")
        steps = split_steps(thinking, unit)
        c1, c2, c3 = st.columns([5, 3, 1.2], vertical_alignment="bottom")
        chosen = c1.selectbox(
            "Step", range(len(steps)), key=keys.step(unit),
            format_func=lambda i: f"{i + 1}: {_clip(steps[i].text, 90)}",
        )
        labels = list_labels(config)
        label_id = c2.selectbox("Label", [l.label_id for l in labels], key="review_label",
                                format_func={l.label_id: l.name for l in labels}.get)
        c3.button("Add label", key="review_add_span", disabled=chosen is None or label_id is None,
                  on_click=_add_span, args=(config, keys, thinking, unit))
        st.html(thinking_html(thinking, steps, spans, chosen))
    else:
        st.info("This trace has no thinking text to label; a verdict and notes still apply.")
    _span_list(config, keys, spans)

    st.radio("Verdict", VERDICTS, index=None, horizontal=True, key=keys.verdict)
    st.text_area("Notes", key=keys.notes, height=100)
    st.button("Save review", type="primary", key="review_save", on_click=_save, args=(config, keys, spans))
    st.caption(f"Editing on top of version {_version(base)}." if base else "No saved review yet.")


def history_section(config: StorageConfig, trace_id: int, reviewer: str) -> None:
    """Every version of every reviewer, newest first; own versions can be restored."""
    history = annotation_history(config, trace_id)
    with st.expander(f"History ({len(history)} versions)"):
        if not history:
            st.caption("Nothing saved for this trace yet.")
            return
        show_table([_history_row(a) for a in history], HISTORY_COLUMNS, empty="Nothing saved for this trace yet.")
        own = [a for a in history if a.reviewer == reviewer]
        if own:
            pick = st.selectbox("Restore one of my versions", [a.version for a in own], key=f"review_restore::{trace_id}",
                                format_func=lambda v: f"version {v}")
            keys = _Keys(trace_id, reviewer)
            chosen = next(a for a in own if a.version == pick)
            st.button("Restore as a new version", key="review_restore_go", on_click=_restore, args=(config, keys, chosen))


class _Keys:
    """Session-state keys of one (trace, reviewer) editor."""

    def __init__(self, trace_id: int, reviewer: str) -> None:
        self.trace_id, self.reviewer = trace_id, reviewer
        suffix = f"{trace_id}::{reviewer}"
        self.base, self.verdict, self.notes = f"review_base::{suffix}", f"review_verdict::{suffix}", f"review_notes::{suffix}"
        self.flash = f"review_flash::{suffix}"

    def step(self, unit: str) -> str:
        return f"review_step::{self.trace_id}::{unit}"


def _load(keys: _Keys, annotation: Annotation | None) -> None:
    st.session_state[keys.base] = annotation
    st.session_state[keys.verdict] = annotation.verdict if annotation else None
    st.session_state[keys.notes] = annotation.notes if annotation else ""


def _version(annotation: Annotation | None) -> int:
    return annotation.version if annotation else 0


def _save(config: StorageConfig, keys: _Keys, spans: tuple[SpanLabel, ...]) -> None:
    base = st.session_state.get(keys.base)
    try:
        draft = AnnotationDraft(keys.trace_id, keys.reviewer, st.session_state.get(keys.verdict),
                                st.session_state.get(keys.notes) or "", tuple(spans))
        result = save_annotation(config, draft, _version(base))
    except StorageError as exc:
        st.session_state[keys.flash] = ("error", str(exc), None)
        return
    saved = result.annotation
    st.session_state[keys.base] = saved
    if result.conflict:
        message = (f"Saved as version {saved.version}, but version {saved.superseded} had been saved (another tab?) "
                   f"after this view loaded version {saved.based_on}, and your save did not include it. Both are in "
                   "the history; yours is now the current one.")
        st.session_state[keys.flash] = ("conflict", message, saved.superseded)
    else:
        st.session_state[keys.flash] = ("success", f"Saved as version {saved.version}.", None)


def _add_span(config: StorageConfig, keys: _Keys, thinking: str, unit: str) -> None:
    # Read the pickers at click time: the button's args date from the previous run.
    steps = split_steps(thinking, unit)
    index, label_id = st.session_state.get(keys.step(unit)), st.session_state.get("review_label")
    if index is None or label_id is None or index >= len(steps):
        return
    step = steps[index]
    base = st.session_state.get(keys.base)
    spans = base.spans if base else ()
    _save(config, keys, (*spans, SpanLabel(step.start, step.end, int(label_id), unit, step.text)))


def _restore(config: StorageConfig, keys: _Keys, old: Annotation) -> None:
    _load(keys, st.session_state.get(keys.base))  # keep the base; replace the form with the old values
    st.session_state[keys.verdict], st.session_state[keys.notes] = old.verdict, old.notes
    _save(config, keys, old.spans)


def _show_flash(config: StorageConfig, keys: _Keys) -> None:
    flash = st.session_state.pop(keys.flash, None)
    if flash is None:
        return
    kind, message, other = flash
    if kind == "success":
        st.success(message, icon=":material/check:")
    elif kind == "error":
        st.error(message)
    else:
        st.warning(message, icon=":material/warning:")
        other_version = next((a for a in annotation_history(config, keys.trace_id, keys.reviewer) if a.version == other), None)
        if other_version is not None:
            with st.expander(f"Version {other} — the one your save did not include", expanded=True):
                _show_version(other_version)


def _newer_version_notice(keys: _Keys, base: Annotation | None, latest: Annotation) -> None:
    st.warning(
        f"Version {latest.version} was saved at {latest.created_at:%H:%M:%S} UTC (another tab?) after this view "
        f"loaded version {_version(base)}. Load it, or save here to store yours on top (both stay in the history).",
        icon=":material/sync_problem:",
    )
    with st.expander(f"Version {latest.version}"):
        _show_version(latest)
    st.button(f"Load version {latest.version}", key="review_load_newest", on_click=_load, args=(keys, latest))


def _show_version(a: Annotation) -> None:
    st.markdown(f"**Verdict:** {a.verdict or '—'}")
    st.markdown("**Notes:**")
    show_text(a.notes or "(none)")
    st.markdown("**Labels:**")
    show_text(", ".join(f"{s.label} ({_clip(s.text, 40)})" for s in a.spans) or "none")


def _span_list(config: StorageConfig, keys: _Keys, spans: tuple[SpanLabel, ...]) -> None:
    if not spans:
        st.caption("No span labels yet.")
        return
    for i, span in enumerate(spans):
        c1, c2 = st.columns([6, 1], vertical_alignment="center")
        retired = " (retired)" if span.retired else ""
        show_text(f"{span.label}{retired} · {_clip(span.text, 120)}", c1)
        rest = spans[:i] + spans[i + 1 :]
        c2.button("Remove", key=f"review_remove_span::{i}", on_click=_save, args=(config, keys, rest))


HISTORY_COLUMNS = (
    Col("version", "version", "int", width=65), Col("reviewer", "reviewer", width=110),
    Col("verdict", "verdict", width=100), Col("saved (UTC)", "saved (UTC)", "datetime", width=130),
    Col("labels", "labels", width=260), Col("notes", "notes", width=220), Col("conflict", "conflict", width=200),
)


def _history_row(a: Annotation) -> dict:
    state = f"stale: based on v{a.based_on}, v{a.superseded} was newer" if a.stale else ""
    return {
        "reviewer": a.reviewer, "version": a.version, "saved (UTC)": a.created_at, "verdict": a.verdict or "",
        "labels": "; ".join(f"{s.label}: {_clip(s.text, 40)}" for s in a.spans), "notes": a.notes, "conflict": state,
    }


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
