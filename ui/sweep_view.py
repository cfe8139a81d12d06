"""The accuracy-vs-length page's logic: inputs, a run with progress, the curve and its traces."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.reasoning import ReasoningFormat
from generation.models import LoadedModel
from generation.sweep import FREE, SweepResult, SweepSettings, curves, parse_budgets, run_sweep
from storage.config import StorageConfig
from ui.curve_charts import length_curve_figure

PROMPTS_FILE = Path(__file__).resolve().parent.parent / "sample_data" / "prompts.jsonl"
TYPED = "Type a prompt…"


def prompt_set() -> list[dict]:
    if not PROMPTS_FILE.is_file():
        return []
    return [json.loads(line) for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def prompt_input(key: str) -> tuple[str, str]:
    """(prompt, reference answer) from the prompt set or typed by the user."""
    items = prompt_set()
    labels = [TYPED] + [f"{p['id']}: {p['prompt']}" for p in items]
    choice = st.selectbox("Prompt", labels, key=f"{key}_choice")
    if choice == TYPED:
        prompt = st.text_area("Prompt text", key=f"{key}_prompt", placeholder="What is 17 + 26?", height=80)
        reference = st.text_input("Reference answer (needed for accuracy)", key=f"{key}_reference")
        return prompt.strip(), reference.strip()
    item = items[labels.index(choice) - 1]
    st.caption(f"Reference answer: {item['answer']}")
    return item["prompt"], str(item["answer"])


def sweep_inputs() -> SweepSettings | None:
    prompt, reference = prompt_input("sweep")
    c1, c2, c3, c4, c5 = st.columns(5)
    budgets = c1.text_input("Thinking budgets (tokens)", "32,64,128,256", key="sweep_budgets")
    samples = c2.number_input("Samples per budget", 0, 64, 4, key="sweep_samples")
    free = c3.number_input("Free-running samples", 0, 256, 4, key="sweep_free",
                           help="Sampled without a budget (capped at twice the largest), binned by length quantiles.")
    temperature = c4.number_input("Temperature", 0.0, 2.0, 0.7, 0.1, key="sweep_temperature")
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="sweep_seed")
    if not prompt:
        st.info("Pick a prompt from the prompt set or type one.")
        return None
    try:
        return SweepSettings(prompt, reference or None, parse_budgets(budgets), int(samples), int(free),
                             temperature=float(temperature), seed=int(seed))
    except ValueError as exc:
        st.error(str(exc))
        return None


def run_with_progress(config: StorageConfig, loaded: LoadedModel, fmt: ReasoningFormat,
                      settings: SweepSettings) -> SweepResult:
    """Run the sweep; a click on Stop reruns the page, which interrupts the batch in progress.
    Every batch stored before that is kept, and Run again resumes from there."""
    bar = st.progress(0.0, text="Starting…")

    def progress(done: int, total: int, tokens: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"{done}/{total} cells · {tokens} tokens in this batch")

    result = run_sweep(config, loaded, fmt, settings, progress)
    bar.empty()
    return result


def show_result(result: SweepResult, settings: SweepSettings) -> None:
    by_budget, by_length = curves(result.cells)
    st.caption(f"{len(result.cells)} cells stored · {result.generated} generated now · sweep key {result.key[:12]}")
    if result.missing:
        st.warning(f"{result.missing} cells are still missing (stopped). Run again to resume.")
    if settings.reference_answer is None:
        st.warning("Accuracy is unknown: this prompt has no reference answer, so no sample can be graded. "
                   "The samples are stored; add a reference answer to draw the curve.")
    elif not by_budget.points and not by_length.points:
        st.info("No graded samples yet.")
    else:
        st.plotly_chart(length_curve_figure(by_budget, by_length), width="stretch")
        best, decline = by_budget.best, by_budget.decline
        st.markdown(f"**Best budget:** {best.label if best else '—'} · **decline:** "
                    f"{decline.label if decline else 'none beyond the noise'}")
    _traces_table(result)
    _point_links(by_budget.points + by_length.points)


def _traces_table(result: SweepResult) -> None:
    frame = pd.DataFrame([
        {"budget": "free" if c.budget == FREE else c.budget, "sample": c.sample_index, "trace": c.trace_id,
         "thinking tokens": c.n_thinking_tokens, "correct": c.correct,
         "first correct at token": c.first_correct_token}
        for c in result.cells
    ])
    st.dataframe(frame, hide_index=True, width="stretch", key="sweep_cells")


def _point_links(points) -> None:
    if not points:
        return
    labels = [f"{p.label} · {p.n_correct}/{p.n} correct" for p in points]
    chosen = st.selectbox("Traces behind a point", labels, key="sweep_point")
    for trace_id in points[labels.index(chosen)].sample_ids:
        st.page_link("pages/trace.py", label=f"Trace #{trace_id}", query_params={"id": trace_id})
