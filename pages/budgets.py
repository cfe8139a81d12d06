"""Budgets: fixed budgets (L1) against the per-prompt oracle and the policies run over the same prompts."""
import streamlit as st

from ui.budget_view import pick_set_sweep, policy_runner, show_budgets
from ui.resources import storage_config

st.title("Budgets")
st.caption("How much an adaptive, per-prompt thinking budget could save over one fixed budget, from a sweep over "
           "a prompt set. Policies are strategy runs of the same model over the same prompts.")
config = storage_config()
if (run_id := pick_set_sweep(config)) is not None:
    policy_runner(config, run_id)  # first: a policy that just finished is on the chart below
    show_budgets(config, run_id)
