"""Generate: type a prompt, watch the model think live, and keep the trace."""
import streamlit as st

from generation.models import LoadedModel
from generation.streaming import GenerationRequest, LiveGeneration
from storage.traces import save_trace
from ui.live import stream_to_page
from ui.resources import storage_config
from ui.results import show_finished
from ui.signal_view import live_analysis, show_analysis
from ui.widgets import model_and_format, sampling_settings

st.title("Generate")
loaded, fmt = model_and_format()
sampling = sampling_settings()
prompt = st.text_area("Prompt", key="prompt", placeholder="What is 17 + 26?", height=100)
reference = st.text_input("Reference answer (optional, used to grade the answer)", key="reference")

go_col, stop_col, _ = st.columns([1, 1, 6])
go = go_col.button("Generate", type="primary", disabled=fmt is None or sampling is None)
# A click reruns this script; the rerun interrupts the stream below and its `with` stops the worker.
stop_col.button("Stop")

if go:
    if not prompt.strip():
        st.error("The prompt is empty: type a question first.")
        st.stop()
    request = GenerationRequest(prompt.strip(), sampling, fmt, reference.strip() or None)
    config = storage_config()
    with LiveGeneration(loaded, request, on_finish=lambda record: save_trace(config, record)) as live:
        st.session_state["last_generation"] = live
        stream_to_page(live)
    show_finished(live.finished)
    # A server's model may not exist here (or be huge): its traces are re-scored on the Trace page.
    local = isinstance(loaded, LoadedModel)
    st.session_state["last_analysis"] = live_analysis(config, live.finished) if local else None
elif (last := st.session_state.get("last_generation")) is not None and last.finished is not None:
    show_finished(last.finished, with_text=True)
    if (analysis := st.session_state.get("last_analysis")) is not None:
        show_analysis(analysis, key="live", full=False)
