"""Accuracy vs length: thinking budgets x samples for one prompt, the curve, and its traces."""
import streamlit as st

from generation.models import ModelLoadError
from generation.prompting import detect_format
from ui.resources import cached_model, storage_config
from ui.sweep_view import run_with_progress, show_result, sweep_inputs
from ui.widgets import format_settings, model_picker

st.title("Accuracy vs length")
st.caption("Forced thinking budgets (s1) and free-running samples binned by length, with Wilson 95% intervals.")
name, trust = model_picker()
if name is None:
    st.info("Type a Hugging Face model id or a local model directory.")
    st.stop()
try:
    loaded = cached_model(name, trust)
except ModelLoadError as exc:
    st.error(str(exc))
    st.stop()
fmt = format_settings(detect_format(loaded.tokenizer), model_key=name)
settings = sweep_inputs()

go_col, stop_col, _ = st.columns([1, 1, 6])
go = go_col.button("Run", type="primary", key="sweep_run", disabled=settings is None or fmt is None)
# A click reruns the page, which interrupts the running batch; finished batches are kept.
stop_col.button("Stop", key="sweep_stop")

if go and settings is not None and fmt is not None:
    result = run_with_progress(storage_config(), loaded, fmt, settings)
    st.session_state["sweep_last"] = (result, settings)
if (last := st.session_state.get("sweep_last")) is not None:
    show_result(*last)
