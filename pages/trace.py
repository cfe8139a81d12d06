"""Trace: one stored trace, its tokens coloured by a per-token signal, and its summary figures."""
import streamlit as st

from storage.errors import StorageError
from ui.charts import token_signal_figure
from ui.resources import cached_trace, storage_config
from ui.live import backend_notes
from ui.loop_view import loop_section
from ui.results import GRADE_LABELS
from ui.signal_view import analysis_section
from ui.token_view import SIGNALS, text_html, tokens_html

st.title("Trace")
raw_id = st.query_params.get("id", "")
trace_id = st.number_input("Trace id", min_value=1, value=int(raw_id) if raw_id.isdigit() else 1, step=1)
if str(trace_id) != raw_id:
    st.query_params["id"] = str(trace_id)
try:
    stored = cached_trace(config := storage_config(), int(trace_id))
except StorageError as exc:
    st.error(str(exc))
    st.stop()
if stored is None:
    st.warning(f"No trace #{trace_id}. Pick one on the Traces page.")
    st.page_link("pages/traces.py", label="Browse traces", icon=":material/table_rows:")
    st.stop()

record = stored.record
st.markdown("**Prompt**")
st.markdown(text_html(record.prompt), unsafe_allow_html=True)
cols = st.columns(6)
cols[0].metric("Model", record.model.split("/")[-1].replace("embedded:", ""))
cols[1].metric("Answer", record.extracted_answer or "—", f"reference: {record.reference_answer or '—'}", delta_color="off")
cols[2].metric("Grade", GRADE_LABELS[record.correct])
cols[3].metric("Thinking / answer tokens", f"{record.n_thinking_tokens} / {record.n_answer_tokens}")
cols[4].metric("Speed", f"{record.tokens_per_s:.1f} tok/s", f"{record.latency_s:.1f} s", delta_color="off")
cols[5].metric("Ended", record.stop_reason)
backend_notes(record.meta)

tokens = record.tokens
if len(tokens) == 0:
    st.info("This trace has no per-token data (imported as text).")
    st.markdown("**Thinking**")
    st.markdown(text_html(record.thinking_text or "(none)"), unsafe_allow_html=True)
    st.markdown("**Answer**")
    st.markdown(text_html(record.answer_text or "(none)"), unsafe_allow_html=True)
else:
    with st.expander("Tokens as generated (stored log-probabilities)", expanded=True):
        signal = st.radio("Colour tokens by", list(SIGNALS), horizontal=True, key="trace_signal")
        st.caption("Redder = less confident. Hover a token for its value and the top alternatives.")
        st.html(tokens_html(tokens, signal))
        st.plotly_chart(token_signal_figure(tokens), use_container_width=True)

analysis_section(config, int(trace_id), record)
loop_section(config, int(trace_id), record)
with st.expander("Settings and metadata"):
    st.json({"settings": record.settings, "meta": {k: v for k, v in record.meta.items() if k != "raw_text"}})
