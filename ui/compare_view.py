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
from analysis.run_metrics import (
    SampleOutcome,
    char_to_token_index,
    cost_usd,
    e3,
    first_correct_token_index,
    ock_score,
    summarize_run,
    wilson_interval,
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
from ui.token_view import text_html

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
        tokens = texts.get(int(s.trace_id), [])
        reference = None if pd.isna(s.reference_answer) else s.reference_answer
        first = first_correct_token_index(tokens, reference) if tokens and reference else None
        correct = None if pd.isna(s.correct) else bool(s.correct)
        out.append(SampleOutcome(correct, int(s.n_thinking_tokens), int(s.n_answer_tokens), float(s.latency_s), first))
    return out


def metrics_frame(config: StorageConfig, cmp: Comparison, price: float, shares: dict[int, float | None]) -> pd.DataFrame:
    """One row per run over the shared prompts. accuracy = final answers right / graded prompts;
    tokens_per_prompt counts every sample, so E3 and OckScore charge a strategy for all it
    generated; outcome efficiency and latency are per sample."""
    texts = token_texts(config, cmp.samples["trace_id"].tolist())
    rows = []
    for rid in cmp.run_ids:
        prompts = cmp.rows[cmp.rows["run_id"] == rid]
        samples = cmp.samples[cmp.samples["run_id"] == rid]
        graded = prompts["correct"].dropna()
        n_right = int(graded.sum())
        acc = n_right / len(graded) if len(graded) else None
        low, high = wilson_interval(n_right, len(graded)) if len(graded) else (None, None)
        per_prompt = float(prompts["total_tokens"].mean())
        summary = summarize_run(_outcomes(samples, texts))
        loop_values = [shares[t] for t in samples["trace_id"] if shares.get(t) is not None]
        rows.append({
            "run": cmp.names[rid], "prompts": len(prompts), "samples": len(samples), "accuracy": acc,
            "ci_low": low, "ci_high": high, "sample_accuracy": summary.accuracy, "tokens_per_prompt": per_prompt,
            "tokens_per_sample": summary.mean_total_tokens, "mean_latency_s": summary.mean_latency_s,
            "outcome_efficiency": summary.outcome_efficiency,
            "e3": e3(acc, per_prompt) if acc is not None and per_prompt > 0 else None,
            "ock_score": ock_score(100 * acc, per_prompt) if acc is not None else None,
            "cost_usd": cost_usd(float(prompts["total_tokens"].sum()), price),
            "repeated_steps": sum(loop_values) / len(loop_values) if loop_values else None,
        })
    return pd.DataFrame(rows)


def show_metrics(config: StorageConfig, cmp: Comparison, price: float, shares: dict[int, float | None]) -> None:
    metrics = metrics_frame(config, cmp, price, shares)
    n_prompts = cmp.rows["prompt_id"].nunique()
    st.caption(f"Over the {n_prompts} prompts all picked runs answered. Accuracy: the final (selected) answer per "
               "prompt; E3 = accuracy² / tokens per prompt; OckScore = accuracy% − 10 ln(tokens/10000 + 1); "
               "outcome efficiency, latency and sample accuracy are per sample.")
    def pct(label: str):
        return st.column_config.NumberColumn(label, format="percent")

    def num(label: str, fmt: str = "%.1f"):
        return st.column_config.NumberColumn(label, format=fmt)

    st.dataframe(metrics.drop(columns=["ci_low", "ci_high"]), hide_index=True, width="stretch", key="cmp_metrics",
                 column_config={"accuracy": pct("accuracy"), "sample_accuracy": pct("sample accuracy"),
                                "tokens_per_prompt": num("tokens / prompt"), "tokens_per_sample": num("tokens / sample"),
                                "mean_latency_s": num("latency / sample (s)", "%.2f"),
                                "outcome_efficiency": pct("outcome efficiency"), "e3": num("E3", "%.4f"),
                                "ock_score": num("OckScore", "%.2f"), "cost_usd": num("cost (USD)", "$%.6f"),
                                "repeated_steps": pct("repeated steps")})
    st.plotly_chart(pareto_figure(metrics), width="stretch", key="cmp_pareto")


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
            st.markdown(text_html(f"Prompt #{first.prompt_id}: {first.prompt}   (reference: {reference})"),
                        unsafe_allow_html=True)
            for col, row in zip(st.columns(len(group)), group.itertuples()):
                col.markdown(_run_cell(config, cmp, row, shares, float(threshold) if cluster else None),
                             unsafe_allow_html=True)
            if len(pair) == 2:
                by_run = {int(r.run_id): int(r.trace_id) for r in group.itertuples()}
                left, right = (_steps_of(config, by_run[r], unit) for r in pair)
                with st.expander(f"Aligned steps: {cmp.names[pair[0]]} vs {cmp.names[pair[1]]}"):
                    st.html(alignment_html(cmp.names[pair[0]], cmp.names[pair[1]], left, right))
