"""The strategies page's logic: pick a strategy and its knobs, run it, show samples, votes and runs."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.reasoning import ReasoningFormat
from generation.decoding import SamplingConfig
from generation.models import LoadedModel
from generation.strategies import EFFORT_BUDGETS, STRATEGIES, StrategySettings
from generation.strategies.runner import PromptItem, StrategyRun, run_strategy
from storage.config import StorageConfig
from storage.runs import list_runs, list_selections
from ui.resources import cached_trace
from ui.sweep_view import prompt_input, prompt_set

WHOLE_SET = "The whole prompt set"


def strategy_inputs() -> tuple[str, StrategySettings] | None:
    name = st.selectbox("Strategy", list(STRATEGIES), key="strat_name", format_func=lambda n: STRATEGIES[n].title)
    st.caption(STRATEGIES[name].describe)
    c1, c2, c3, c4, c5 = st.columns(5)
    n = c1.number_input("Samples N", 0, 64, 4, key="strat_n")
    temperature = c2.number_input("Temperature", 0.0, 2.0, 0.7, 0.1, key="strat_temperature")
    max_thinking = c3.number_input("Max thinking tokens", 1, 32768, 128, 32, key="strat_max_thinking")
    max_answer = c4.number_input("Max answer tokens", 1, 4096, 48, 16, key="strat_max_answer")
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="strat_seed")
    extra: dict = {}
    if name in ("borda",):
        extra["borda_p"] = st.number_input("Borda exponent p", 0.0, 4.0, 0.5, 0.1, key="strat_p")
    if name == "best_of_majority":
        extra["alpha"] = st.number_input("alpha (share threshold)", 0.0, 1.0, 0.3, 0.05, key="strat_alpha")
    if name.startswith("deepconf"):
        d1, d2, d3 = st.columns(3)
        extra["eta"] = d1.number_input("eta (%)", 1.0, 100.0, 10.0, 5.0, key="strat_eta")
        extra["window"] = int(d2.number_input("Window (tokens)", 1, 4096, 64, key="strat_window"))
        extra["warmup"] = int(d3.number_input("Warm-up traces", 1, 64, 2, key="strat_warmup"))
    if name == "budget_forcing":
        b1, b2 = st.columns(2)
        extra["min_thinking_tokens"] = int(b1.number_input("Min thinking tokens", 0, 32768, 0, key="strat_min"))
        extra["max_waits"] = int(b2.number_input("Max 'Wait' insertions", 0, 16, 2, key="strat_waits"))
    if name in ("beam_search", "dvts"):
        s1, s2, s3 = st.columns(3)
        extra["beam_width"] = int(s1.number_input("M (children per beam)", 1, 16, 2, key="strat_m"))
        extra["max_steps"] = int(s2.number_input("Max steps", 1, 64, 6, key="strat_steps"))
        extra["step_aggregate"] = s3.selectbox("Step score aggregate", ["last", "min", "prod"], key="strat_agg")
        st.caption("Step scorer: self-certainty of the step (no process reward model loaded).")
    if name == "effort":
        extra["effort"] = st.radio("Effort", list(EFFORT_BUDGETS), index=1, horizontal=True, key="strat_effort",
                                   format_func=lambda e: f"{e} ({EFFORT_BUDGETS[e]} tokens)")
    try:
        sampling = SamplingConfig(float(temperature), 0.95, int(max_thinking), int(max_answer), int(seed))
        return name, StrategySettings(sampling=sampling, n=int(n), **extra)
    except ValueError as exc:
        st.error(str(exc))
        return None


def prompts_input() -> list[PromptItem]:
    scope = st.radio("Prompts", ["One prompt", WHOLE_SET], horizontal=True, key="strat_scope")
    if scope == WHOLE_SET:
        items = prompt_set()
        limit = st.number_input("How many of them", 1, max(1, len(items)), min(3, len(items) or 1), key="strat_limit")
        return [PromptItem(p["prompt"], str(p["answer"]), "prompt_set") for p in items[: int(limit)]]
    prompt, reference = prompt_input("strat")
    return [PromptItem(prompt, reference or None)] if prompt else []


def run_with_progress(config: StorageConfig, loaded: LoadedModel, fmt: ReasoningFormat, name: str,
                      settings: StrategySettings, items: list[PromptItem], price: float) -> StrategyRun:
    bar = st.progress(0.0, text="Starting…")

    def progress(done: int, total: int, tokens: int) -> None:
        bar.progress(done / total, text=f"{done}/{total} prompts · {tokens} tokens in this batch")

    result = run_strategy(config, loaded, name, items, fmt, settings, progress, price_per_million=price)
    bar.empty()
    return result


def show_run(config: StorageConfig, run_id: int) -> None:
    selections = list_selections(config, run_id)
    for _, sel in selections.iterrows():
        verdict = {True: "correct", False: "wrong"}.get(sel["correct"], "not graded (no reference answer)")
        st.markdown(f"**{sel['prompt']}** → selected **{sel['selected_answer']}** ({verdict}) by `{sel['rule']}`")
        detail = sel["detail"]
        if detail.get("note"):
            st.caption(detail["note"])
        st.dataframe(pd.DataFrame({"answer": list(detail["tally"]), "weight": list(detail["tally"].values())}),
                     hide_index=True, key=f"tally_{sel['selection_id']}")
        rows = []
        for k, trace_id in enumerate(detail["trace_ids"]):
            record = cached_trace(config, trace_id).record  # stored traces never change
            score = (detail.get("scores") or [None] * len(detail["trace_ids"]))[k]
            rows.append({"trace": trace_id, "answer": record.extracted_answer, "correct": record.correct,
                         detail.get("score_name") or "score": score, "thinking": record.n_thinking_tokens,
                         "answer tokens": record.n_answer_tokens, "stop": record.stop_reason,
                         "open": f"/trace?id={trace_id}"})
        st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"samples_{sel['selection_id']}",
                     column_config={"open": st.column_config.LinkColumn("open", display_text="open trace")})


def runs_table(config: StorageConfig, price: float) -> None:
    runs = list_runs(config, strategies=tuple(STRATEGIES))
    if runs.empty:
        st.info("No strategy runs yet.")
        return
    runs["accuracy"] = [s if s is not None else a for s, a in zip(runs["selection_accuracy"], runs["accuracy"])]
    runs[f"cost (USD at {price:g}/M)"] = [None if t is None else t * price / 1e6 for t in runs["total_tokens"]]
    columns = ["run_id", "created_at", "strategy", "model", "n_traces", "accuracy", "mean_thinking_tokens",
               "mean_answer_tokens", "mean_latency_s", "tokens_per_s", "outcome_efficiency", "e3", "ock_score",
               f"cost (USD at {price:g}/M)"]
    st.dataframe(runs[columns], hide_index=True, width="stretch", key="runs_table")
