"""Strategies: run a test-time-compute strategy on a prompt (or the prompt set); compare runs."""
import streamlit as st

from generation.models import ModelLoadError
from generation.prompting import detect_format
from ui.resources import cached_model, storage_config
from ui.strategy_view import prompts_input, run_with_progress, runs_table, show_run, strategy_inputs
from ui.widgets import format_settings, model_picker

st.title("Strategies")
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
    result = run_with_progress(config, loaded, fmt, chosen[0], chosen[1], items, float(price))
    st.session_state["strat_last_run"] = result.run_id
if (run_id := st.session_state.get("strat_last_run")) is not None:
    st.subheader(f"Run {run_id}")
    show_run(config, run_id)
st.subheader("Runs")
runs_table(config, float(price))
