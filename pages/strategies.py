"""Strategies: run a test-time-compute strategy on a prompt (or the prompt set); compare runs."""
import streamlit as st

from generation.backends import BackendUnavailable
from ui.resources import storage_config
from ui.strategy_view import prompts_input, run_with_progress, runs_table, show_run, strategy_inputs
from ui.widgets import model_and_format

st.title("Strategies")
loaded, fmt = model_and_format()
chosen = strategy_inputs()
items = prompts_input()
price = st.number_input("Price per million tokens (USD)", 0.0, 1000.0, 0.6, 0.1, key="strat_price")
config = storage_config()

go_col, stop_col, _ = st.columns([1, 1, 6])
go = go_col.button("Run", type="primary", key="strat_run", disabled=chosen is None or fmt is None)
stop_col.button("Stop", key="strat_stop")  # a click reruns the page and interrupts the run

if go and chosen is not None and fmt is not None:
    if not items:
        st.error("The prompt is empty: pick a prompt or type one.")
        st.stop()
    try:
        result = run_with_progress(config, loaded, fmt, chosen[0], chosen[1], items, float(price))
    except BackendUnavailable as exc:  # e.g. a strategy that needs local logits, on a server
        st.error(str(exc))
        st.stop()
    st.session_state["strat_last_run"] = result.run_id
if (run_id := st.session_state.get("strat_last_run")) is not None:
    st.subheader(f"Run {run_id}")
    show_run(config, run_id)
st.subheader("Runs")
runs_table(config, float(price))
