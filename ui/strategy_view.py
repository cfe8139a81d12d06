"""The strategies page's logic: pick a strategy and its knobs, run it, show samples, votes and runs."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.reasoning import ReasoningFormat
from generation.decoding import SamplingConfig
from generation.backends import BackendUnavailable
from generation.models import LoadedModel
from generation.prompt_sets import Preset
from generation.streaming import BackgroundJob
from generation.strategies import EFFORT_BUDGETS, STRATEGIES, StrategySettings
from generation.strategies.runner import PromptItem, StrategyRun, run_strategy
from storage.config import StorageConfig
from storage.runs import list_runs, list_selections
from ui.live import follow_with_bar
from ui.resources import cached_prm, cached_trace
from ui.token_view import show_text
from ui.sweep_view import prompt_input, prompt_set
from ui.prompt_set_picker import prompt_set_picker
from ui.tables import run_columns, show_table

WHOLE_SET = "The whole prompt set"
STORED_SET = "A stored prompt set (GSM8K, MATH-500, AIME, hub, file)"


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
    scorer = "self_certainty"
    if name in ("best_of_n", "beam_search", "dvts"):
        scorer = st.text_input("Step scorer", "self_certainty", key="strat_scorer",
                               help="self_certainty, or prm:<hub id or directory> for a process reward model "
                                    "(Qwen2.5-Math-PRM or RLHFlow style)").strip() or "self_certainty"
        extra["step_scorer"] = scorer
    prm = scorer.startswith("prm:")
    if name == "best_of_n" and prm:
        extra["step_aggregate"] = st.selectbox("Step score aggregate", ["last", "min", "prod"], key="strat_agg_bon")
    if name in ("beam_search", "dvts"):
        s1, s2, s3 = st.columns(3)
        extra["beam_width"] = int(s1.number_input("M (children per beam)", 1, 16, 2, key="strat_m"))
        extra["max_steps"] = int(s2.number_input("Max steps", 1, 64, 6, key="strat_steps"))
        extra["step_aggregate"] = s3.selectbox("Step score aggregate", ["last", "min", "mean", "geomean"]
                                               + (["prod"] if prm else []), key="strat_agg")
        st.caption(("Step scorer: the PRM's probability for each step. " if prm else
                    "Step scorer: self-certainty of the step. It is unbounded (nats), so 'prod' is offered only for "
                    "a PRM: it would favour longer beams; 'geomean' is the length-normalised product. ")
                   + "n must be a multiple of M.")
    if name == "effort":
        extra["effort"] = st.radio("Effort", list(EFFORT_BUDGETS), index=1, horizontal=True, key="strat_effort",
                                   format_func=lambda e: f"{e} ({EFFORT_BUDGETS[e]} tokens)")
    try:
        sampling = SamplingConfig(float(temperature), 0.95, int(max_thinking), int(max_answer), int(seed))
        return name, StrategySettings(sampling=sampling, n=int(n), **extra)
    except ValueError as exc:
        st.error(str(exc))
        return None


def prompts_input() -> tuple[list[PromptItem], Preset | None]:
    """The prompts to run and the preset of their set (its system prompt and answer format go into
    the run's format: Preset.apply), or None."""
    scope = st.radio("Prompts", ["One prompt", WHOLE_SET, STORED_SET], horizontal=True, key="strat_scope")
    if scope == STORED_SET:  # GSM8K, MATH-500, AIME, a hub dataset or a file (ui/prompt_set_picker.py)
        picked = prompt_set_picker("strat_set")
        if picked is None:
            return [], None
        return [PromptItem(r.prompt, r.reference_answer, picked[2]) for r in picked[0]], picked[1]
    if scope == WHOLE_SET:
        items = prompt_set()
        limit = st.number_input("How many of them", 1, max(1, len(items)), min(3, len(items) or 1), key="strat_limit")
        return [PromptItem(p["prompt"], str(p["answer"]), "prompt_set") for p in items[: int(limit)]], None
    prompt, reference = prompt_input("strat")
    return ([PromptItem(prompt, reference or None)] if prompt else []), None


JOB = "strat_job"  # (BackgroundJob, number of prompts) while a run goes on: it outlives the script run that started it


def start_run(config: StorageConfig, loaded: LoadedModel, fmt: ReasoningFormat, name: str,
              settings: StrategySettings, items: list[PromptItem], price: float) -> None:
    """Start the strategy run on its own thread; the page follows it (follow_run) on this and later reruns."""
    if (previous := st.session_state.get(JOB)) is not None:
        previous[0].stop()
        previous[0].wait(30)

    prm = None
    if settings.step_scorer.startswith("prm:"):
        try:
            prm = cached_prm(settings.step_scorer)
        except ValueError as exc:  # PRMError: a path that is not a PRM
            st.error(str(exc))
            return

    def work(stop, report):
        return run_strategy(config, loaded, name, items, fmt, settings,
                            lambda done, total, tokens: report(done=done, total=total, tokens=tokens), stop,
                            price_per_million=price, fraction=lambda share: report(fraction=share), prm=prm)

    st.session_state[JOB] = (BackgroundJob(work, expected=(BackendUnavailable, ValueError)).start(), len(items))


def follow_run() -> None:
    """Draw a running strategy's progress until it ends (also after Stop), then keep its run to show."""
    if (entry := st.session_state.get(JOB)) is None:
        return
    job, n_prompts = entry
    follow_with_bar(job, lambda p: f"{p.get('done', 0)}/{p.get('total', '…')} prompts · "
                                   f"{p.get('tokens', 0)} tokens in this batch")
    st.session_state.pop(JOB, None)
    if job.error is not None:  # e.g. a strategy that needs local logits, on a server
        st.error(str(job.error))
        return
    result: StrategyRun = job.result
    st.session_state["strat_last_run"] = result.run_id
    st.session_state["strat_last_note"] = stop_note(result, n_prompts) if result.stopped else None


def stop_note(result: StrategyRun, total: int) -> str:
    # A prompt cut short is not kept: the same settings run again resume this run (runner.run_strategy).
    return f"Stopped: {len(result.selections)} of {total} prompts kept in run {result.run_id}; run again to resume."


def show_run(config: StorageConfig, run_id: int) -> None:
    selections = list_selections(config, run_id)
    for _, sel in selections.iterrows():
        detail = sel["detail"]
        verdict = {True: "correct", False: "wrong"}.get(
            sel["correct"], "not graded (no reference answer)" if detail.get("finished", True) else
            "not graded (stopped midway)")
        # The prompt and the answer are trace text: shown as text, never as Markdown (an image in a
        # prompt was fetched by the browser, a link in it was live).
        answer = sel["selected_answer"]
        show_text(f"{sel['prompt']}\n→ selected: {'—' if answer is None else answer}")
        st.markdown(f"selected by `{sel['rule']}` ({verdict})")
        if detail.get("note"):
            st.caption(detail["note"])
        if detail.get("tie"):  # analysis.voting.Vote.tie_description()
            st.caption(detail["tie"])
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
        st.info("No strategy runs yet: pick a strategy and prompts above, then Run. Every run is listed here.")
        return
    runs["accuracy"] = [s if s is not None else a for s, a in zip(runs["selection_accuracy"], runs["accuracy"])]
    runs[f"cost (USD at {price:g}/M)"] = [None if t is None else t * price / 1e6 for t in runs["total_tokens"]]
    # docs/METHODS.md §6: accuracy of the selected answer and total tokens per query feed E3/OckScore
    columns = ["run_id", "created_at", "strategy", "model", "n_traces", "accuracy", "n_ties", "n_not_finished",
               "total_tokens_per_query", "mean_thinking_tokens", "mean_answer_tokens", "mean_latency_s",
               "tokens_per_s", "outcome_efficiency", "e3", "ock_score", f"cost (USD at {price:g}/M)"]
    show_table(runs[columns], run_columns(f"cost (USD at {price:g}/M)"), key="runs_table",
               empty="No strategy runs yet: pick a strategy and prompts above, then Run.")
