"""The accuracy-vs-length page's logic: inputs, a run with progress, the curve and its traces."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.reasoning import ReasoningFormat
from generation.backends import BackendUnavailable
from generation.models import LoadedModel
from generation.streaming import BackgroundJob
from generation.prompt_sets import Preset
from generation.sweep import (FREE, SetSweepResult, SetSweepSettings, SweepResult, SweepSettings, curves, parse_budgets,
                              run_set_sweep, run_sweep)
from storage.config import StorageConfig
from ui.curve_charts import length_curve_figure
from ui.live import follow_with_bar
from ui.prompt_set_picker import prompt_set_picker
from ui.tables import Col, show_table

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


def sweep_inputs() -> tuple[SweepSettings | SetSweepSettings | None, Preset | None]:
    """The sweep to run (one prompt, or every prompt of a stored set) and the set's preset, if any."""
    whole_set = st.radio("Sweep over", ["One prompt", "A prompt set"], horizontal=True, key="sweep_mode",
                         help="A prompt set sweeps every prompt with the same budgets: per-prompt accuracy at each "
                              "budget, and the Budgets page's oracle.") == "A prompt set"
    picked, preset = None, None
    if whole_set:
        picked = prompt_set_picker("sweep_set")
        preset = picked[1] if picked else None
    else:
        prompt, reference = prompt_input("sweep")
    c1, c2, c3, c4, c5 = st.columns(5)
    budgets = c1.text_input("Thinking budgets (tokens)", "32,64,128,256", key="sweep_budgets")
    samples = c2.number_input("Samples per budget", 0, 64, 4, key="sweep_samples")
    free = 0 if whole_set else c3.number_input(
        "Free-running samples", 0, 256, 4, key="sweep_free",
        help="Sampled without a budget (capped at twice the largest), binned by length quantiles.")
    temperature = c4.number_input("Temperature", 0.0, 2.0, 0.7, 0.1, key="sweep_temperature")
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="sweep_seed")
    try:
        if whole_set:
            if picked is None:
                return None, None
            rows, _, label = picked
            return SetSweepSettings(tuple((r.prompt, r.reference_answer) for r in rows), parse_budgets(budgets),
                                    int(samples), temperature=float(temperature), seed=int(seed),
                                    set_label=label), preset
        if not prompt:
            st.info("Pick a prompt from the prompt set or type one.")
            return None, None
        return SweepSettings(prompt, reference or None, parse_budgets(budgets), int(samples), int(free),
                             temperature=float(temperature), seed=int(seed)), None
    except ValueError as exc:
        st.error(str(exc))
        return None, None


JOB = "sweep_job"  # (BackgroundJob, SweepSettings) while a sweep runs: it outlives the script run that started it


def start_sweep(config: StorageConfig, loaded: LoadedModel, fmt: ReasoningFormat,
                settings: SweepSettings | SetSweepSettings) -> None:
    """Start the sweep on its own thread; the page follows it (follow_sweep) on this and later reruns."""
    if (previous := st.session_state.get(JOB)) is not None:
        previous[0].stop()
        previous[0].wait(30)

    run = run_set_sweep if isinstance(settings, SetSweepSettings) else run_sweep

    def work(stop, report):
        return run(config, loaded, fmt, settings,
                         lambda done, total, tokens: report(done=done, total=total, tokens=tokens), stop,
                         fraction=lambda share: report(fraction=share))

    st.session_state[JOB] = (BackgroundJob(work, expected=(BackendUnavailable,)).start(), settings)


def follow_sweep() -> None:
    """Draw a running sweep's progress until it ends (also after Stop), then keep its result to show.
    Stop sets the job's stop event: the batch in progress ends at its next token and is not stored;
    every batch stored before it is kept, and Run again resumes from there."""
    if (entry := st.session_state.get(JOB)) is None:
        return
    job, settings = entry
    follow_with_bar(job, lambda p: f"{p.get('done', 0)}/{p.get('total', '…')} cells · "
                                   f"{p.get('tokens', 0)} tokens in this batch")
    st.session_state.pop(JOB, None)
    if job.error is not None:  # e.g. budget forcing through a server that cannot continue a prefix
        st.error(str(job.error))
        return
    st.session_state["sweep_last"] = (job.result, settings)
    if job.result.error:
        st.error(f"{job.result.error}. Failed cells are not stored: run again to resume.")


def show_result(result: SweepResult | SetSweepResult, settings: SweepSettings | SetSweepSettings) -> None:
    if isinstance(result, SetSweepResult):
        show_set_result(result, settings)
        return
    by_budget, by_length = curves(result.cells)
    st.caption(f"{len(result.cells)} cells stored · {result.generated} generated now · sweep key {result.key[:12]}")
    if result.stopped or result.missing:
        kept = len(result.cells)
        st.warning(f"{'Stopped: ' if result.stopped else ''}{kept} of {kept + result.missing} cells kept; "
                   "run again to resume.")
    if settings.reference_answer is None:
        st.warning("Accuracy is unknown: this prompt has no reference answer, so no sample can be graded. "
                   "The samples are stored; add a reference answer to draw the curve.")
    elif not by_budget.points and not by_length.points:
        st.info("No accuracy curve yet: no sample has finished and been graded (stopped or failed samples are "
                "not graded). Run again to add samples.")
    else:
        st.plotly_chart(length_curve_figure(by_budget, by_length), width="stretch")
        best, decline = by_budget.best, by_budget.decline
        st.markdown(f"**Best budget:** {best.label if best else '—'} · **decline:** "
                    f"{decline.label if decline else 'none beyond the noise'}")
    _traces_table(result)
    _point_links(by_budget.points + by_length.points)


def _traces_table(result: SweepResult) -> None:
    frame = pd.DataFrame([
        # One type per column: "free" next to integers made pyarrow fail to convert the column.
        {"budget": "free" if c.budget == FREE else str(c.budget), "sample": c.sample_index, "trace": c.trace_id,
         "thinking tokens": c.n_thinking_tokens, "correct": c.correct,
         "first correct at token": c.first_correct_token}
        for c in result.cells
    ])
    show_table(frame, SWEEP_COLUMNS, key="sweep_cells",
               empty="No samples stored for this sweep yet: Run generates them, and Stop keeps those done.")


SWEEP_COLUMNS = (
    Col("budget", "budget", width=70), Col("sample", "sample", "int", width=65), Col("correct", "correct", "bool", width=70),
    Col("thinking tokens", "thinking tokens", "int", width=110),
    Col("first correct at token", "first correct at token", "int", width=150), Col("trace", "trace", "int", width=60),
)


def _point_links(points) -> None:
    if not points:
        return
    labels = [f"{p.label} · {p.n_correct}/{p.n} correct" for p in points]
    chosen = st.selectbox("Traces behind a point", labels, key="sweep_point")
    for trace_id in points[labels.index(chosen)].sample_ids:
        st.page_link("pages/trace.py", label=f"Trace #{trace_id}", query_params={"id": trace_id})


def show_set_result(result: SetSweepResult, settings: SetSweepSettings) -> None:
    """A set sweep: accuracy per budget over all its prompts' samples, per-prompt accuracy, the way on."""
    cells = [c for r in result.per_prompt for c in r.cells]
    total = len(settings.prompts) * len(settings.budgets) * settings.samples_per_budget
    st.caption(f"Set sweep #{result.run_id} · {len(settings.prompts)} prompts · {len(cells)} of {total} cells stored")
    if result.stopped or result.missing:
        st.warning(f"{'Stopped: ' if result.stopped else ''}{total - result.missing} of {total} cells kept; "
                   "run again to resume.")
    if result.error:
        st.error(f"{result.error}. Failed cells are not stored: run again to resume.")
    by_budget, _ = curves(cells)
    if by_budget.points:
        st.plotly_chart(length_curve_figure(by_budget, curves([])[1]), width="stretch")
    else:
        st.info("No accuracy yet: no sample has finished and been graded (prompts need reference answers).")
    frame = pd.DataFrame([
        {"prompt": prompt, **{f"accuracy at {b}": _share([c.correct for c in r.cells if c.budget == b])
                              for b in settings.budgets}}
        for (prompt, _), r in zip(settings.prompts, result.per_prompt)])
    show_table(frame, [Col("prompt", "prompt", "long_text")]
               + [Col(f"accuracy at {b}", f"accuracy at {b}", "percent") for b in settings.budgets],
               key="sweep_set_prompts", empty="No prompt swept yet.")
    st.page_link("pages/budgets.py", label="What would a per-prompt budget save? Open Budgets",
                 icon=":material/savings:", query_params={"sweep": result.run_id})


def _share(grades: list[bool | None]) -> float | None:
    graded = [g for g in grades if g is not None]
    return sum(graded) / len(graded) if graded else None
