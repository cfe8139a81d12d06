"""The Budgets page's logic: pick a set sweep, then the L1 curve, the oracle frontier and the
policies run over the same prompts, as a chart and tables (docs/METHODS.md §9)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.budget_oracle import (FrontierPoint, OracleSettings, PolicyRow, Savings, fixed_points, policy_row,
                                   tokens_saved)
from generation.backends import BackendUnavailable
from generation.decoding import SamplingConfig
from generation.streaming import BackgroundJob
from generation.strategies import StrategySettings
from generation.models import EMBEDDED_MODEL
from generation.strategies.adaptive import POLICIES, run_policy_on_sweep
from generation.sweep import SetSweepTable, set_sweep_table
from storage.config import StorageConfig
from storage.runs import list_runs, strategy_runs_over
from ui.budget_charts import budget_figure
from ui.live import follow_with_bar, stop_job
from ui.resources import cached_model, cached_oracle
from ui.tables import Col, show_table
from ui.widgets import model_and_format


def pick_set_sweep(config: StorageConfig) -> int | None:
    runs = list_runs(config, strategies=("set_sweep",), include_empty=True)
    if runs.empty:
        st.info("No sweep over a prompt set is stored yet. Run one on the Accuracy vs length page (choose "
                "*A prompt set*) or with `python cli.py sweep --prompts sample_data/prompts.jsonl --budgets 32,64,128 "
                "--samples 4`.")
        return None
    labels = [f"#{r.run_id} · {r.model} · {len(r.settings.get('prompts', []))} prompts · budgets "
              f"{','.join(map(str, r.settings.get('budgets', [])))} · {r.status}" for r in runs.itertuples()]
    wanted = st.query_params.get("sweep")
    ids = [int(r) for r in runs["run_id"]]
    index = ids.index(int(wanted)) if wanted and wanted.isdigit() and int(wanted) in ids else 0
    return ids[labels.index(st.selectbox("Set sweep", labels, index=index, key="budgets_sweep"))]


def show_budgets(config: StorageConfig, run_id: int) -> None:
    full = set_sweep_table(config, run_id)
    table = full.graded()
    left_out = len(full.prompts) - len(table.prompts)
    if not table.prompts:
        st.warning("No prompt of this sweep has a graded sample at every budget yet: the oracle needs reference "
                   "answers and every budget stored. Run the sweep again to fill in the missing cells.")
        return
    frontier, hull, savings = cached_oracle(table.accuracy, table.mean_thinking_tokens)
    fixed = fixed_points(table.accuracy, table.mean_thinking_tokens)
    policies = _policies(config, table, savings)
    st.plotly_chart(budget_figure(fixed, table.budgets, frontier, hull, [row for row, _ in policies]),
                    width="stretch")
    st.markdown(_headline(table, savings) + (f" {left_out} prompt(s) without a grade at every budget are left out."
                                             if left_out else ""))
    rows = [policy_row(f"fixed {b}", table.accuracy[:, j], table.mean_thinking_tokens[:, j], savings)
            for j, b in enumerate(table.budgets)]
    oracle = _oracle_choice(frontier, savings)
    rows.append(policy_row("oracle at the best fixed accuracy", *_per_prompt(table, oracle.choice), savings))
    _policy_table(rows + [row for row, _ in policies])
    _per_prompt_table(table, oracle, policies)


def _headline(table: SetSweepTable, s: Savings) -> str:
    interval = (f" (95% bootstrap over prompts {s.interval[0]:.0%} to {s.interval[1]:.0%})" if s.interval else "")
    return (f"**Best fixed budget:** {table.budgets[s.best_fixed_index]} tokens, accuracy {s.best_fixed_accuracy:.0%} "
            f"at {s.best_fixed_cost:.0f} thinking tokens per prompt. **The oracle** reaches that accuracy with "
            f"{s.oracle_cost:.0f}: **{s.saved_fraction:.0%} fewer tokens**{interval}. The oracle knows every "
            "outcome: it bounds what a per-prompt policy could save.")


def _oracle_choice(frontier: list[FrontierPoint], s: Savings) -> FrontierPoint:
    return min((q for q in frontier if q.mean_accuracy >= s.best_fixed_accuracy - 1e-12), key=lambda q: q.mean_cost)


def _per_prompt(table: SetSweepTable, choice: tuple[int, ...]):
    rows = range(len(table.prompts))
    return ([table.accuracy[p, b] for p, b in zip(rows, choice)],
            [table.mean_thinking_tokens[p, b] for p, b in zip(rows, choice)])


def _policies(config: StorageConfig, table: SetSweepTable, savings: Savings) -> list[tuple[PolicyRow, dict]]:
    """Strategy runs of the same model over these prompts or a split of them (DeepConf online, the L2
    policies…), each measured against the best fixed budget on the same prompts; with {position: tokens}."""
    out = []
    for run in strategy_runs_over(config, table.model, [p for p, _ in table.prompts]):
        if any(c is None for c in run["correct"]) or not run["positions"]:
            continue  # an ungraded prompt has no place on an accuracy axis
        idx = run["positions"]
        same = savings if len(idx) == len(table.prompts) else tokens_saved(
            table.accuracy[idx], table.mean_thinking_tokens[idx], OracleSettings(n_bootstrap=0))
        where = "" if len(idx) == len(table.prompts) else f", {len(idx)} of {len(table.prompts)} prompts"
        row = policy_row(f"{run['strategy']} (run #{run['run_id']}{where})", [float(c) for c in run["correct"]],
                         run["thinking_tokens"], same)
        out.append((row, {k: (tokens, budget) for k, tokens, budget in zip(idx, run["thinking_tokens"], run["budgets"])}))
    return out


POLICY_COLUMNS = (
    Col("label", "budget or policy", width="medium"), Col("accuracy", "accuracy", "percent"),
    Col("ci", "95% interval (prompts)"), Col("mean_thinking_tokens", "thinking tokens / prompt", "float1"),
    Col("saved", "saved vs best fixed", "float1",
        help="Thinking tokens per prompt saved against the best fixed budget on the same prompts, when accuracy is "
             "at least its accuracy there"),
    Col("e3", "E3", "float4"), Col("ock_score", "OckScore (thinking)", "float"),
)


def _policy_table(rows: list[PolicyRow]) -> None:
    frame = pd.DataFrame([{"label": r.label, "accuracy": r.accuracy, "ci": f"{r.ci_low:.0%}–{r.ci_high:.0%}",
                           "mean_thinking_tokens": r.mean_thinking_tokens, "saved": r.saved_vs_best_fixed,
                           "e3": r.e3, "ock_score": r.ock_score} for r in rows])
    show_table(frame, POLICY_COLUMNS, key="budgets_policies", empty="Nothing to compare yet.")


def _per_prompt_table(table: SetSweepTable, oracle: FrontierPoint, policies: list[tuple[PolicyRow, dict]]) -> None:
    st.subheader("Per prompt")
    records = []
    for p, (prompt, reference) in enumerate(table.prompts):
        row = {"prompt": prompt, "reference": reference or "—",
               "oracle budget": str(table.budgets[oracle.choice[p]])}
        for j, b in enumerate(table.budgets):
            row[f"accuracy at {b}"] = table.accuracy[p, j]
        for policy, per_prompt in policies:
            tokens, budget = per_prompt.get(p, (None, None))
            row[f"{policy.label} tokens"] = None if tokens is None else float(tokens)
            if budget is not None or any(b is not None for _, b in per_prompt.values()):
                row[f"{policy.label} budget"] = None if budget is None else str(budget)
        records.append(row)
    frame = pd.DataFrame(records)
    columns = [Col("prompt", "prompt", "long_text"), Col("reference", "reference"),
               Col("oracle budget", "oracle budget", help="The budget the oracle gives this prompt at the best "
                   "fixed budget's accuracy")]
    columns += [Col(f"accuracy at {b}", f"accuracy at {b}", "percent") for b in table.budgets]
    columns += [Col(c, c, "float1") if c.endswith(" tokens") else Col(c, c) for c in frame.columns
                if c.endswith((" tokens", " budget")) and c != "oracle budget"]
    show_table(frame, columns, key="budgets_prompts", empty="No prompts.")


POLICY_JOB = "budgets_policy_job"  # the running policy (BackgroundJob): it outlives the script run that started it


def policy_runner(config: StorageConfig, run_id: int) -> None:
    """Run adaptive_probe or self_budget on this sweep's test split (fitted on the other half); the
    model loads only when the user opens this."""
    if not st.toggle("Run an L2 policy on this sweep", key="budgets_policy_on"):
        return
    loaded, fmt = model_and_format()
    c1, c2 = st.columns(2)
    policy = c1.selectbox("Policy", list(POLICIES), key="budgets_policy",
                          help="adaptive_probe: a short probe's self-certainty picks the budget. self_budget: the "
                               "model states the budget it needs. tiered: low self-certainty goes to a larger model.")
    probe = c2.number_input("Probe / estimate budget (thinking tokens)", 1, 4096, 32, key="budgets_probe")
    escalate = None
    if policy == "tiered":
        name = st.text_input("Larger model for tiered (HF id or directory)", EMBEDDED_MODEL, key="budgets_escalate")
        escalate = cached_model(name.strip()) if name.strip() else None
    st.caption("Fitted on the sweep's prompts at even positions (0, 2, …), reported on the odd ones; "
               "the run stores which.")
    go_col, stop_col, _ = st.columns([1, 1, 6])
    go = go_col.button("Run policy", type="primary", key="budgets_policy_run", disabled=fmt is None)
    stop_col.button("Stop", key="budgets_policy_stop", on_click=stop_job, args=(POLICY_JOB,))
    if go and fmt is not None:
        settings = StrategySettings(n=1, probe_tokens=int(probe), sampling=SamplingConfig(0.0, 1.0, int(probe) + 1, 48, 0))

        def work(stop, report):
            return run_policy_on_sweep(config, loaded, fmt, run_id, policy, settings,
                                       lambda done, total, tokens: report(done=done, total=total, tokens=tokens,
                                                                          fraction=done / max(total, 1)), stop,
                                       escalate=escalate)

        st.session_state[POLICY_JOB] = BackgroundJob(work, expected=(BackendUnavailable, ValueError)).start()
    if (job := st.session_state.get(POLICY_JOB)) is None:
        return
    follow_with_bar(job, lambda p: f"{p.get('done', 0)}/{p.get('total', '…')} test prompts")
    st.session_state.pop(POLICY_JOB, None)
    if job.error is not None:
        st.error(str(job.error))
        return
    run, split, _ = job.result
    kept = len(run.selections)
    note = f"{'Stopped: ' if run.stopped else ''}{policy} run #{run.run_id}: {kept} of {len(split.test)} test prompts"
    (st.warning if run.stopped else st.success)(note + ("; run again to resume." if run.stopped else "."))
