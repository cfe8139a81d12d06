"""What the Generate page shows once a generation has ended (finished, stopped or failed)."""
from __future__ import annotations

import streamlit as st

from generation.streaming import Finished
from storage.errors import StorageError
from storage.traces import save_trace
from ui.resources import storage_config
from ui.token_view import TOKEN_CSS, text_html

GRADE_LABELS = {True: "correct", False: "incorrect", None: "ungraded"}
_STOP_REASONS = {
    "eos": "finished",
    "max_tokens": "token limit",
    "stopped": "stopped",
    "error": "failed",
}


def show_finished(finished: Finished | None, with_text: bool = False) -> None:
    if finished is None:
        return
    record = finished.record
    if with_text:
        st.html(TOKEN_CSS)
        with st.expander(f"Thinking ({record.n_thinking_tokens} tokens)", expanded=False):
            st.markdown(text_html(record.thinking_text or "(none)"), unsafe_allow_html=True)
        st.markdown("**Answer**")
        st.markdown(text_html(record.answer_text or "(no answer)"), unsafe_allow_html=True)
    if record.stop_reason == "stopped":
        st.warning(f"Stopped after {len(record.tokens)} tokens. The partial trace is kept, marked as stopped.")
    cols = st.columns(6)
    cols[0].metric("Extracted answer", record.extracted_answer or "—")
    cols[1].metric("Grade", GRADE_LABELS[record.correct])
    cols[2].metric("Thinking + answer", f"{record.n_thinking_tokens} + {record.n_answer_tokens}")
    cols[3].metric("Time", f"{record.latency_s:.1f} s")
    cols[4].metric("Speed", f"{record.tokens_per_s:.1f} tok/s")
    cols[5].metric("Ended", _STOP_REASONS.get(record.stop_reason, record.stop_reason))
    if finished.error:
        st.error(finished.error)
    trace_id = finished.stored
    if trace_id is None:
        trace_id = _offer_retry(record)
    if isinstance(trace_id, int):
        st.page_link("pages/trace.py", label=f"Saved as trace #{trace_id}: open it", icon=":material/search:",
                     query_params={"id": trace_id})


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
