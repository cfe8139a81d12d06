"""Traces: every stored trace, filterable; selecting a row opens it."""
import streamlit as st

from storage.errors import StorageError
from storage.filters import CORRECT_CHOICES, TraceFilter
from storage.traces import count_traces, list_models, list_traces
from ui.resources import storage_config
from ui.tables import TRACE_COLUMNS, show_table, trace_rows
from ui.results import CORRECT_FILTER_LABELS, grade_labels

PAGE_SIZE = 200

st.title("Traces")
config = storage_config()
try:
    models = list_models(config)
except StorageError as exc:
    st.error(str(exc))
    st.stop()

c1, c2, c3, c4 = st.columns([2, 3, 1.3, 1.7])
chosen_models = c1.multiselect("Model", models, key="filter_models")
contains = c2.text_input("Prompt contains", key="filter_prompt")
correct = c3.selectbox("Correct", CORRECT_CHOICES, format_func=CORRECT_FILTER_LABELS.get, key="filter_correct")
min_len, max_len = c4.slider("Tokens", 0, 4096, (0, 4096), step=16, key="filter_len")
filt = TraceFilter(
    models=tuple(chosen_models),
    prompt_contains=contains.strip(),
    correct=correct,
    min_tokens=min_len or None,
    max_tokens=None if max_len >= 4096 else max_len,
)
total = count_traces(config, filt)
page = st.number_input(f"Page (of {max(1, -(-total // PAGE_SIZE))})", 1, max(1, -(-total // PAGE_SIZE)), 1) - 1
frame = list_traces(config, filt, limit=PAGE_SIZE, offset=page * PAGE_SIZE)
frame["correct"] = grade_labels(frame["correct"])  # ungraded shows "—", not an empty "incorrect" box
st.caption(f"{total} traces · stored in {config.db_path}")
selection = show_table(
    trace_rows(frame), TRACE_COLUMNS, key="trace_table", on_select="rerun", selection_mode="single-row",
    empty="No trace matches these filters." if total or filt != TraceFilter() else
          "No traces stored yet: generate one on the Generate page, or import a file on Import / export.",
)
rows = selection.selection.rows if selection is not None else []
if rows:
    st.switch_page("pages/trace.py", query_params={"id": int(frame.iloc[rows[0]]["trace_id"])})
