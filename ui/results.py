"""What the Generate page shows once a generation has ended (finished, stopped or failed)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.answers import ungraded_reason
from analysis.records import TraceRecord
from generation.streaming import Finished
from storage.errors import StorageError, TraceQueued
from storage.traces import replay_journal, save_trace
from ui.resources import storage_config
from ui.tables import rate_text, seconds_text, token_count_text
from ui.token_view import show_text

# An ungraded trace (stopped, failed, or without a reference) shows "—", never "incorrect".
GRADE_LABELS = {True: "correct", False: "incorrect", None: "—"}
_STOP_REASONS = {
    "eos": "finished",
    "max_tokens": "token limit",
    "stopped": "stopped",
    "error": "failed",
    "imported": "imported",
}


CORRECT_FILTER_LABELS = {"any": "any", "correct": "correct", "incorrect": "incorrect", "unknown": "not graded",
                         "not_finished": "not finished"}


def grade_labels(correct: pd.Series) -> pd.Series:
    """A column of grades (True / False / NA) as text: "correct", "incorrect", "—"."""
    return correct.astype(object).map(lambda v: "—" if v is None or pd.isna(v) else GRADE_LABELS[bool(v)])


def grade_metric(column, record) -> None:
    """The Grade metric: correct / incorrect, or "—" with why it is ungraded (docs/METHODS.md §7)."""
    why = ungraded_reason(record.stop_reason, record.reference_answer, record.meta) if record.correct is None else None
    column.metric("Grade", GRADE_LABELS[record.correct], why, delta_color="off", delta_arrow="off", width="content")


def show_finished(finished: Finished | None, with_text: bool = False) -> None:
    if finished is None:
        return
    record = finished.record
    if with_text:
        with st.expander(f"Thinking ({record.n_thinking_tokens} tokens)", expanded=False):
            show_text(record.thinking_text or "(none)")
        st.markdown("**Answer**")
        show_text(record.answer_text or "(no answer)")
    if record.stop_reason == "stopped":
        st.warning(f"Stopped after {len(record.tokens)} tokens, {record.latency_s:.1f} s. "
                   "The partial trace is kept, marked as stopped.")
    record_metrics(record, with_model=False)
    if finished.error:
        st.error(finished.error)
    trace_id = finished.stored
    if isinstance(trace_id, TraceQueued):
        trace_id = _queued(trace_id)
    elif trace_id is None:
        trace_id = _offer_retry(record)
    if isinstance(trace_id, int):
        st.page_link("pages/trace.py", label=f"Saved as trace #{trace_id}: open it", icon=":material/search:",
                     query_params={"id": trace_id})


def record_metrics(record: TraceRecord, with_model: bool = True) -> None:
    """A trace's figures in one wrapping row, each as wide as its value (a fixed grid of columns
    cut "SmolLM2-135M-Instruct" to "SmolL…"). Unknown figures (imported text) read "—"."""
    row = st.container(horizontal=True, gap="medium")
    if with_model:
        row.metric("Model", record.model.split("/")[-1].replace("embedded:", ""), width="content")
    reference = record.reference_answer or "—"
    row.metric("Answer", _clip(record.extracted_answer or "—"), f"reference: {_clip(reference)}", delta_color="off",
               delta_arrow="off", width="content")
    grade_metric(row, record)
    row.metric("Tokens", token_count_text(record.n_thinking_tokens, record.n_answer_tokens, record.n_forced_tokens,
                                          len(record.tokens)),
               help="Forced tokens were injected by budget forcing (the forced end of thinking, \"Wait\"), "
                    "not sampled; they do not count as thinking.", width="content")
    row.metric("Time", seconds_text(record.latency_s), width="content")
    row.metric("Speed", rate_text(len(record.tokens), record.latency_s), width="content")
    row.metric("Ended", _STOP_REASONS.get(record.stop_reason, record.stop_reason), width="content")


def _clip(text: str, n: int = 24) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _offer_retry(record) -> int | None:
    """Storing failed (locked or unwritable database): the record is still in memory, so offer to try again."""
    saved = st.session_state.setdefault("retried_saves", {})
    if id(record) in saved:
        return saved[id(record)]
    if not st.button("Retry saving the trace", key="retry_save"):
        return None
    try:
        saved[id(record)] = save_trace(storage_config(), record)
    except StorageError as exc:
        st.error(str(exc))
    return saved.get(id(record))


def _queued(queued: TraceQueued) -> None:
    """The database stayed locked: the trace waits in the journal (not lost) and is stored on the
    next open; a button stores it now once the other program is done."""
    st.info(f"Queued, not yet stored: {queued}", icon=":material/schedule:")
    if st.button("Store queued traces now", key="replay_journal"):
        try:
            left = replay_journal(storage_config())
        except StorageError as exc:
            st.error(str(exc))
            return None
        if left:
            st.warning(f"{left} journal entries could not be stored yet.")
        else:
            st.success("Stored: the trace is in the Traces list.")
    return None
