"""Review: a queue of traces to judge, span labels on thinking steps, history and agreement."""
import streamlit as st

from storage.annotations import review_queue
from storage.errors import StorageError
from ui.annotation_widgets import agreement_section, reviewer_name, taxonomy_editor
from ui.resources import cached_trace, storage_config
from ui.review_view import history_section, queue_filter, queue_navigation, review_editor, trace_summary

st.title("Review")
config = storage_config()
reviewer = reviewer_name()
if reviewer is None:
    st.info("Type your name to start reviewing; it goes on every verdict and label you save.")
    st.stop()

try:
    filt = queue_filter(config, reviewer)
    queue = review_queue(config, filt)
    trace_id = queue_navigation(queue, filt)
    stored = cached_trace(config, trace_id) if trace_id is not None else None
except StorageError as exc:
    st.error(str(exc))
    st.stop()

if trace_id is not None and stored is None:
    st.warning(f"No trace #{trace_id}; use Next or Previous to move on.")
elif stored is not None:
    trace_summary(stored)
    review_editor(config, stored, reviewer)
    history_section(config, stored.trace_id, reviewer)
    agreement_section(config, stored.trace_id, filt.run_ids)

with st.expander("Span label taxonomy"):
    taxonomy_editor(config)
