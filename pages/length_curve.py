"""Accuracy vs length: thinking budgets x samples for one prompt, the curve, and its traces."""
import streamlit as st

from generation.backends import BackendUnavailable
from ui.resources import storage_config
from ui.sweep_view import run_with_progress, show_result, sweep_inputs
from ui.widgets import model_and_format

st.title("Accuracy vs length")
st.caption("Forced thinking budgets (s1) and free-running samples binned by length, with Wilson 95% intervals.")
loaded, fmt = model_and_format()
settings = sweep_inputs()

go_col, stop_col, _ = st.columns([1, 1, 6])
go = go_col.button("Run", type="primary", key="sweep_run", disabled=settings is None or fmt is None)
# A click reruns the page, which interrupts the running batch; finished batches are kept.
stop_col.button("Stop", key="sweep_stop")

if go and settings is not None and fmt is not None:
    try:
        result = run_with_progress(storage_config(), loaded, fmt, settings)
    except BackendUnavailable as exc:  # budget forcing through a server that cannot continue a prefix
        st.error(str(exc))
        st.stop()
    st.session_state["sweep_last"] = (result, settings)
    if result.error:
        st.error(f"{result.error}. Failed cells are not stored: run again to resume.")
if (last := st.session_state.get("sweep_last")) is not None:
    show_result(*last)
