"""Accuracy vs length: thinking budgets x samples for one prompt or a prompt set, the curve, and its traces."""
import streamlit as st

from ui.live import stop_job
from ui.resources import storage_config
from ui.sweep_view import JOB, follow_sweep, show_result, start_sweep, sweep_inputs
from ui.widgets import model_and_format

st.title("Accuracy vs length")
st.caption("Forced thinking budgets (s1) and free-running samples binned by length, with Wilson 95% intervals; "
           "for one prompt or every prompt of a set.")
loaded, fmt = model_and_format()
settings, preset = sweep_inputs()
if preset is not None and fmt is not None:  # the set's system prompt and answer format (Preset.apply)
    fmt = preset.apply(fmt)

go_col, stop_col, _ = st.columns([1, 1, 6])
go = go_col.button("Run", type="primary", key="sweep_run", disabled=settings is None or fmt is None)
# Stop's callback sets the running sweep's stop event before the rerun: the rerun shows what was kept.
stop_col.button("Stop", key="sweep_stop", on_click=stop_job, args=(JOB,))

if go and settings is not None and fmt is not None:
    start_sweep(storage_config(), loaded, fmt, settings)
follow_sweep()
if (last := st.session_state.get("sweep_last")) is not None:
    show_result(*last)
