"""Compare: two to four stored runs over the same prompts, metrics and Pareto front, then prompt by prompt."""
import streamlit as st

from ui.compare_view import loops_panel, pick_runs, show_metrics, show_prompts
from ui.resources import storage_config

st.title("Compare runs")
config = storage_config()
comparison = pick_runs(config)
if comparison is None:
    st.stop()
price = st.number_input("Price per million tokens (USD)", 0.0, 1000.0, 0.6, 0.1, key="cmp_price")
shares = loops_panel(config, comparison)
st.subheader("Runs")
show_metrics(config, comparison, float(price), shares)
st.subheader("Prompt by prompt")
show_prompts(config, comparison, shares)
