"""Strategies: run a test-time-compute strategy on a prompt (or the prompt set); compare runs."""
import streamlit as st

from ui.live import stop_job
from ui.resources import storage_config
from ui.strategy_view import JOB, follow_run, prompts_input, runs_table, show_run, start_run, strategy_inputs
from ui.widgets import model_and_format

st.title("Strategies")
loaded, fmt = model_and_format()
chosen = strategy_inputs()
items, preset = prompts_input()
if preset is not None and fmt is not None:  # the set's system prompt and answer format (Preset.apply)
    fmt = preset.apply(fmt)
price = st.number_input("Price per million tokens (USD)", 0.0, 1000.0, 0.6, 0.1, key="strat_price")
config = storage_config()

go_col, stop_col, _ = st.columns([1, 1, 6])
go = go_col.button("Run", type="primary", key="strat_run", disabled=chosen is None or fmt is None)
# Stop's callback sets the running job's stop event before the rerun: the rerun shows what finished.
stop_col.button("Stop", key="strat_stop", on_click=stop_job, args=(JOB,))

if go and chosen is not None and fmt is not None:
    if not items:
        st.error("The prompt is empty: pick a prompt or type one.")
        st.stop()
    start_run(config, loaded, fmt, chosen[0], chosen[1], items, float(price))
follow_run()
if (run_id := st.session_state.get("strat_last_run")) is not None:
    st.subheader(f"Run {run_id}")
    if note := st.session_state.get("strat_last_note"):
        st.warning(note)
    show_run(config, run_id)
st.subheader("Runs")
runs_table(config, float(price))
