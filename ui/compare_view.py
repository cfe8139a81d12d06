"""The Compare page's logic: pick runs, their metrics on shared prompts, and each prompt side by side.

Metrics are computed over the prompts every picked run answered, so a run that also covered other
prompts is not judged on them. Trace text is untrusted: it is html.escape'd wherever it becomes HTML.
"""
from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from analysis.answer_clusters import cluster_answers
from analysis.answers import answer_key, canonical_answer, grade, intermediate_answers
from analysis.records import finished_normally
from analysis.run_metrics import (
    QueryOutcome,
    SampleOutcome,
    TokenCount,
    char_to_token_index,
    first_correct_token_index,
    summarize_run,
)
from analysis.steps import split_steps
from generation.embeddings import EmbeddingConfig, loop_key
from storage.compare import MAX_COMPARED_RUNS, comparable_runs, shared_prompt_rows, shared_samples, token_texts
from storage.config import StorageConfig
from storage.errors import StorageError
from storage.loops import repeat_shares
from ui.compare_charts import alignment_html, pareto_figure
from ui.loop_view import find_and_store, loop_settings
from ui.resources import cached_embedder, cached_trace
from ui.tables import Col, show_table
from ui.token_view import show_text

PROMPTS_PER_PAGE = 5
_VERDICTS = {True: '<b style="color:#2ca02c">right</b>', False: '<b style="color:#d62728">wrong</b>',
             None: '<b style="color:#777">ungraded</b>'}


@dataclass(frozen=True)
class Comparison:
    run_ids: list[int]
    names: dict[int, str]  # run_id -> short label "#3 self_consistency"
    rows: pd.DataFrame  # storage.compare.shared_prompt_rows
    samples: pd.DataFrame  # storage.compare.shared_samples


def _answer_group(answer) -> tuple:
    if not isinstance(answer, str):  # None, NaN or NA: no answer, which differs from any answer
        return ("none", "")
    return answer_key(canonical_answer(str(answer))) or ("none", "")


def runs_disagree(group: pd.DataFrame) -> bool:
    """The runs' final answers to one prompt differ (by value: "0.5" and "1/2" agree)."""
    return len({_answer_group(a) for a in group["final_answer"]}) > 1


def some_run_wrong(group: pd.DataFrame) -> bool:
    return bool((group["correct"].fillna(True) == False).any())  # noqa: E712 (pandas boolean)


FILTERS: dict[str, Callable[[pd.DataFrame], bool] | None] = {
    "All shared prompts": None,
    "Only where the runs disagree": runs_disagree,
    "Only where a run got it wrong": some_run_wrong,
}


def pick_runs(config: StorageConfig) -> Comparison | None:
    """Run picker; the comparison once two to four runs with shared prompts are picked."""
    try:
        runs = comparable_runs(config)
    except StorageError as exc:
        st.error(str(exc))
        return None
    if runs.empty:
        st.info("No stored runs yet. Run strategies on the Strategies page, then compare them here.")
        return None
    labels = {int(r.run_id): f"#{r.run_id} {r.strategy} · {r.model.split('/')[-1].replace('embedded:', '')} · "
                             f"{r.n_prompts} prompts, {r.n_traces} traces · {r.created_at:%Y-%m-%d %H:%M}"
              for r in runs.itertuples()}
    picked = st.multiselect(f"Runs to compare (two to {MAX_COMPARED_RUNS}, over the same prompts)", list(labels),
                            format_func=labels.get, max_selections=MAX_COMPARED_RUNS, key="cmp_runs")
    if len(picked) < 2:
        st.info("Pick at least two runs.")
        return None
    strategy = dict(zip(runs["run_id"].astype(int), runs["strategy"]))
    try:
        rows = shared_prompt_rows(config, picked)
        samples = shared_samples(config, picked)
    except StorageError as exc:
        st.error(str(exc))
        return None
    if rows.empty:
        st.warning("These runs have no prompt in common (same text and reference answer), so there is nothing "
                   "to compare. Pick runs over the same prompts.")
        return None
    return Comparison([int(r) for r in picked], {int(r): f"#{r} {strategy[int(r)]}" for r in picked}, rows, samples)


def _outcomes(samples: pd.DataFrame, texts: dict[int, list[str]]) -> list[SampleOutcome]:
    out = []
    for s in samples.itertuples():
        finished = finished_normally(s.stop_reason)
        tokens = texts.get(int(s.trace_id), [])
        reference = None if pd.isna(s.reference_answer) else s.reference_answer
        first = first_correct_token_index(tokens, reference) if tokens and reference and finished else None
        correct = None if pd.isna(s.correct) or not finished else bool(s.correct)
        thinking, answer = int(s.n_thinking_tokens), int(s.n_answer_tokens)
        out.append(SampleOutcome(correct, thinking, answer, float(s.latency_s), first, finished,
                                 max(0, int(s.n_tokens) - thinking - answer)))
    return out


def _queries(prompts: pd.DataFrame, samples: pd.DataFrame, texts: dict[int, list[str]]) -> list[QueryOutcome]:
    """One QueryOutcome per shared prompt of one run: the final answer's grade, every sample, and
    the decoded tokens the strategy reported (step search), docs/METHODS.md §6."""
    queries = []
    for row in prompts.itertuples():
        mine = samples[samples["prompt_id"] == row.prompt_id]
        decoded = None
        if not pd.isna(row.decoded_thinking):
            decoded = TokenCount(int(row.decoded_thinking), int(row.decoded_answer), int(row.decoded_forced))
        correct = None if pd.isna(row.correct) else bool(row.correct)
        queries.append(QueryOutcome(correct, tuple(_outcomes(mine, texts)), decoded, bool(row.finished)))
    return queries


def metrics_frame(config: StorageConfig, cmp: Comparison, price: float, shares: dict[int, float | None]) -> pd.DataFrame:
    """One row per run over the shared prompts, from analysis.run_metrics.summarize_run (the one
    definition the Strategies page and the CLI use): accuracy = final answers right / graded
    prompts; tokens_per_prompt = total tokens decoded per prompt (every sample, pruned search
    branches included), so E3 and OckScore charge a strategy for all it generated; sample
    accuracy, outcome efficiency and latency are per sample; not-finished samples apart."""
    texts = token_texts(config, cmp.samples["trace_id"].tolist())
    rows = []
    for rid in cmp.run_ids:
        prompts = cmp.rows[cmp.rows["run_id"] == rid]
        samples = cmp.samples[cmp.samples["run_id"] == rid]
        m = summarize_run(_queries(prompts, samples, texts), price)
        low, high = m.accuracy_ci if m.accuracy_ci is not None else (None, None)
        loop_values = [shares[t] for t in samples["trace_id"] if shares.get(t) is not None]
        rows.append({
            "run": cmp.names[rid], "prompts": m.n_queries, "samples": m.n_samples, "accuracy": m.accuracy,
            "ci_low": low, "ci_high": high, "sample_accuracy": m.sample_accuracy,
            "tokens_per_prompt": m.total_tokens_per_query, "tokens_per_sample": m.mean_total_tokens,
            "mean_latency_s": m.mean_latency_s, "outcome_efficiency": m.outcome_efficiency,
            "e3": m.e3, "ock_score": m.ock_score, "cost_usd": m.cost_usd, "not_finished": m.n_not_finished,
            "repeated_steps": sum(loop_values) / len(loop_values) if loop_values else None,
        })
    return pd.DataFrame(rows)


# The figures people compare runs by come first; all fit in one view at 1,400 px.
METRIC_COLUMNS = (
    Col("run", "run", width=150), Col("accuracy", "accuracy", "percent", width=80),
    Col("e3", "E3", "sci", width=80, help="accuracy² / total tokens per prompt (all samples, pruned branches)"),
    Col("ock_score", "OckScore", "float", width=80,
        help="accuracy% − 10 ln(total tokens per prompt / 10000 + 1)"),
    Col("cost_usd", "cost", "usd", width=90, help="USD for all tokens of the shared prompts at the price above"),
    Col("tokens_per_prompt", "tokens / prompt", "float1", width=100),
    Col("prompts", "prompts", "int", width=65), Col("samples", "samples", "int", width=65),
    Col("sample_accuracy", "sample acc.", "percent", width=85),
    Col("tokens_per_sample", "tokens / sample", "float1", width=100),
    Col("mean_latency_s", "latency / sample", "seconds", width=105),
    Col("outcome_efficiency", "outcome eff.", "percent", width=85),
    Col("repeated_steps", "repeated steps", "percent", width=100),
    Col("not_finished", "not finished", "int", width=85, help="samples stopped or failed: ungraded, counted apart"),
)


def show_metrics(config: StorageConfig, cmp: Comparison, price: float, shares: dict[int, float | None]) -> None:
    metrics = metrics_frame(config, cmp, price, shares)
    n_prompts = cmp.rows["prompt_id"].nunique()
    st.caption(f"Over the {n_prompts} prompts all picked runs answered. Accuracy: the final (selected) answer per "
               "prompt; E3 = accuracy² / total tokens per prompt; OckScore = accuracy% − 10 ln(tokens/10000 + 1), "
               "tokens = every token decoded for the prompt; outcome efficiency, latency and sample accuracy are "
               "per sample; not-finished samples are ungraded and counted apart.")
    show_table(metrics, METRIC_COLUMNS, key="cmp_metrics",
               empty="No metrics: the picked runs share no prompt.")
    if metrics["accuracy"].notna().any():
        st.plotly_chart(pareto_figure(metrics), width="stretch", key="cmp_pareto")
    else:
        st.info("No accuracy vs tokens chart: none of the shared prompts has a reference answer, so no run is graded.")


def loops_panel(config: StorageConfig, cmp: Comparison) -> dict[int, float | None]:
    """Settings and a button for loop marks of every compared trace; the stored shares for them."""
    trace_ids = [int(t) for t in cmp.samples["trace_id"]]
    with st.expander("Loops: share of repeated steps per trace"):
        settings = loop_settings("cmp_loops")
        if settings is None:
            return {}
        if st.button(f"Find loops in these {len(trace_ids)} traces", key="cmp_loops_find"):
            find_and_store(config, settings, trace_ids)
        try:
            shares = repeat_shares(config, trace_ids, loop_key(settings))
        except StorageError as exc:
            st.error(str(exc))
            return {}
        st.caption(f"{len(shares)} of {len(trace_ids)} traces have loop marks for these settings.")
        return shares


def _first_positions(tokens: list[str], final_answer, reference) -> tuple[int | None, int | None]:
    """Token index where the final answer is first stated, and where a correct answer first is."""
    first_final = None
    if tokens and isinstance(final_answer, str) and final_answer:
        for mention in intermediate_answers("".join(tokens)):
            if grade(mention.value, final_answer):
                first_final = char_to_token_index(mention.char_end - 1, tokens)
                break
    first_correct = first_correct_token_index(tokens, reference) if tokens and isinstance(reference, str) else None
    return first_final, first_correct


def _clusters_text(answers: list[str], threshold: float) -> str:
    if not answers:
        return "no answers to cluster"
    clusters = cluster_answers(cached_embedder().encode(answers), threshold)
    parts = [f"«{answers[leader][:40]}» ×{size}" for leader, size in zip(clusters.leaders.tolist(), clusters.sizes())]
    return f"{clusters.n_clusters} answer clusters: " + ", ".join(parts)


def _run_cell(config: StorageConfig, cmp: Comparison, row, shares: dict, cluster_threshold: float | None) -> str:
    stored = cached_trace(config, int(row.trace_id))
    verdict = _VERDICTS[None if pd.isna(row.correct) else bool(row.correct)]
    answer = "—" if not isinstance(row.final_answer, str) else row.final_answer
    lines = [f"<b>{html.escape(cmp.names[int(row.run_id)])}</b>: {verdict}",
             f"answer: <code>{html.escape(answer)}</code>",
             f"{int(row.n_samples)} sample(s), {int(row.total_tokens)} tokens in all"]
    if stored is not None:
        tokens = stored.record.tokens.text
        first_final, first_correct = _first_positions(tokens, row.final_answer, row.reference_answer)
        where = "not found in the tokens" if first_final is None else f"first at token {first_final + 1}"
        lines.append(f'<a href="/trace?id={int(row.trace_id)}" target="_self">trace #{int(row.trace_id)}</a>: '
                     f"{len(tokens)} tokens; its answer {where}")
        if first_correct is not None:
            lines.append(f"first correct answer at token {first_correct + 1}")
    if shares.get(int(row.trace_id)) is not None:
        lines.append(f"repeated steps: {shares[int(row.trace_id)]:.0%}")
    if cluster_threshold is not None:
        mask = (cmp.samples["run_id"] == row.run_id) & (cmp.samples["prompt_id"] == row.prompt_id)
        answers = [a for a in cmp.samples.loc[mask, "extracted_answer"] if isinstance(a, str) and a.strip()]
        lines.append(html.escape(_clusters_text(answers, cluster_threshold)))
    return "<br>".join(lines)


def _steps_of(config: StorageConfig, trace_id: int, unit: str) -> list[str]:
    stored = cached_trace(config, trace_id)
    return [] if stored is None else [s.text for s in split_steps(stored.record.thinking_text, unit)]


def show_prompts(config: StorageConfig, cmp: Comparison, shares: dict[int, float | None]) -> None:
    c1, c2, c3 = st.columns([2, 2, 1])
    chosen = c1.radio("Prompts", list(FILTERS), key="cmp_filter")
    pair = c2.multiselect("Align the steps of (two runs)", cmp.run_ids, default=cmp.run_ids[:2],
                          format_func=cmp.names.get, max_selections=2, key="cmp_pair")
    unit = c3.radio("Steps are", ["sentence", "paragraph"], key="cmp_unit")
    cluster = st.checkbox("Cluster each run's free-text answers by meaning (loads the sentence embedder)",
                          key="cmp_cluster")
    threshold = st.slider("Answers match at cosine ≥", 0.5, 1.0, EmbeddingConfig.threshold, 0.01,
                          key="cmp_cluster_threshold", disabled=not cluster)
    keep = FILTERS[chosen]
    groups = [g for _, g in cmp.rows.groupby("prompt_id", sort=True) if keep is None or keep(g)]
    if not groups:
        st.info("No prompt matches this filter.")
        return
    pages = math.ceil(len(groups) / PROMPTS_PER_PAGE)
    page = int(st.number_input(f"Page (of {pages}; {len(groups)} prompts)", 1, pages, 1, key="cmp_page"))
    for group in groups[(page - 1) * PROMPTS_PER_PAGE: page * PROMPTS_PER_PAGE]:
        first = group.iloc[0]
        with st.container(border=True):
            reference = first.reference_answer if isinstance(first.reference_answer, str) else "—"
            show_text(f"Prompt #{first.prompt_id}: {first.prompt}   (reference: {reference})")
            for col, row in zip(st.columns(len(group)), group.itertuples()):
                # st.html, not markdown: Markdown would parse the (escaped) answer text between the tags.
                col.html(f'<div style="font-size:0.9rem">{_run_cell(config, cmp, row, shares, float(threshold) if cluster else None)}</div>')
            if len(pair) == 2:
                by_run = {int(r.run_id): int(r.trace_id) for r in group.itertuples()}
                left, right = (_steps_of(config, by_run[r], unit) for r in pair)
                with st.expander(f"Aligned steps: {cmp.names[pair[0]]} vs {cmp.names[pair[1]]}"):
                    st.html(alignment_html(cmp.names[pair[0]], cmp.names[pair[1]], left, right))
