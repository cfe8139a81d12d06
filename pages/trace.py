"""Trace: one stored trace, its tokens coloured by a per-token signal, and its summary figures."""
import numpy as np
import streamlit as st

from storage.errors import StorageError
from ui.anchor_view import anchor_section, branch_banner, branch_section
from ui.charts import token_signal_figure
from ui.resources import cached_trace, storage_config
from ui.live import backend_notes
from ui.loop_view import loop_section
from ui.results import record_metrics
from ui.signal_view import analysis_section
from ui.token_view import FORCED_LEGEND, SIGNALS, show_text, tokens_html

st.title("Trace")
raw_id = st.query_params.get("id", "")
# A keyed widget fed from the URL only when the URL changed: passing the id as `value` would make a new
# widget on every change, and the next typed id would be lost to that new widget's default.
if raw_id.isdigit() and (st.session_state.get("trace_url_id") != raw_id or "trace_id" not in st.session_state):
    st.session_state["trace_id"] = int(raw_id)
    st.session_state["trace_url_id"] = raw_id
trace_id = st.number_input("Trace id", min_value=1, step=1, key="trace_id")
if str(trace_id) != raw_id:
    st.query_params["id"] = str(trace_id)
    st.session_state["trace_url_id"] = str(trace_id)
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
show_text(record.prompt)
record_metrics(record)
backend_notes(record.meta)
branch_banner(config, int(trace_id))

tokens = record.tokens
if len(tokens) == 0:
    st.info("This trace has no per-token data (imported as text).")
    st.markdown("**Thinking**")
    show_text(record.thinking_text or "(none)")
    st.markdown("**Answer**")
    show_text(record.answer_text or "(none)")
else:
    with st.expander("Tokens as generated (stored log-probabilities)", expanded=True):
        signal = st.radio("Colour tokens by", list(SIGNALS), horizontal=True, key="trace_signal")
        st.caption("Redder = less confident. Hover a token for its value and the top alternatives."
                   + (" " + FORCED_LEGEND if record.n_forced_tokens else ""))
        st.html(tokens_html(tokens, signal))
        if np.isfinite(tokens.logprob).any() or np.isfinite(tokens.entropy).any():
            st.plotly_chart(token_signal_figure(tokens), width="stretch")
        else:
            st.caption("No per-token chart: this trace carries no log-probabilities (its server did not send them).")

analysis_section(config, int(trace_id), record)
loop_section(config, int(trace_id), record)
anchor_section(config, int(trace_id), record)
branch_section(config, int(trace_id), record)
with st.expander("Settings and metadata"):
    st.json({"settings": record.settings, "meta": {k: v for k, v in record.meta.items() if k != "raw_text"}})
