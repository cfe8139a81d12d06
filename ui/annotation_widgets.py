"""Review building blocks: the reviewer name, the thinking text with steps and span labels, the taxonomy.

Trace text and label names are untrusted: everything is html.escape'd before it becomes HTML.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence

import streamlit as st

from analysis.agreement import pairwise_agreement, trace_agrees
from analysis.steps import Step
from storage.annotations import (
    AnnotationError,
    SpanLabel,
    add_label,
    clean_reviewer,
    current_annotations,
    current_verdicts,
    list_labels,
    rename_label,
    set_label_retired,
)
from storage.config import StorageConfig
from ui.tables import Col, show_table

REVIEWER_KEY = "reviewer_name"  # survives page switches (not a widget key)
_FLASH = "taxonomy_flash"

_PALETTE = (
    "rgba(66, 133, 244, 0.28)", "rgba(52, 168, 83, 0.28)", "rgba(251, 188, 5, 0.35)", "rgba(234, 67, 53, 0.25)",
    "rgba(171, 71, 188, 0.25)", "rgba(0, 172, 193, 0.28)", "rgba(255, 112, 67, 0.28)", "rgba(124, 179, 66, 0.3)",
    "rgba(194, 24, 91, 0.22)", "rgba(121, 85, 72, 0.25)",
)

STEPS_CSS = """
<style>
.ts-steps { font-family: ui-monospace, monospace; font-size: 0.9rem; line-height: 1.8;
            white-space: pre-wrap; word-break: break-word; max-height: 32rem; overflow-y: auto;
            border: 1px solid rgba(128,128,128,0.3); border-radius: 6px; padding: 0.6rem; }
.ts-step-n { font-size: 0.65rem; color: #888; margin-right: 2px; user-select: none; }
.ts-selected { outline: 2px solid #f63366; border-radius: 3px; }
.ts-badge { font-size: 0.7rem; border-radius: 8px; padding: 0 6px; margin: 0 3px; white-space: nowrap;
            font-family: sans-serif; }
.ts-retired { text-decoration: line-through; }
</style>
"""


def label_colour(label_id: int) -> str:
    return _PALETTE[label_id % len(_PALETTE)]


def reviewer_name() -> str | None:
    """The reviewer, typed once per browser session; ?reviewer= in the URL sets it per tab."""
    from_url = st.query_params.get("reviewer", "")
    if REVIEWER_KEY not in st.session_state:
        st.session_state[REVIEWER_KEY] = from_url
    typed = st.text_input(
        "Reviewer", value=st.session_state[REVIEWER_KEY], key="review_reviewer_input", max_chars=80,
        help="Your name on every verdict and label. Add ?reviewer=NAME to the URL to review as someone else in another tab.",
    )
    if not typed.strip():
        return None
    try:
        name = clean_reviewer(typed)
    except AnnotationError as exc:
        st.error(str(exc))
        return None
    st.session_state[REVIEWER_KEY] = name
    if from_url != name:
        st.query_params["reviewer"] = name
    return name


def thinking_html(text: str, steps: list[Step], spans: tuple[SpanLabel, ...], selected: int | None) -> str:
    """The thinking text with numbered steps, the selected step outlined and labelled spans shaded.

    Spans are drawn by their character offsets, so labels made with another step unit still show.
    """
    cuts = {0, len(text)}
    for step in steps:
        cuts.update((step.start, step.end))
    for span in spans:
        cuts.update((min(span.start, len(text)), min(span.end, len(text))))
    bounds = sorted(cuts)
    parts = [STEPS_CSS, '<div class="ts-steps">']
    j = 0  # steps are sorted and disjoint: walk them alongside the segments
    for a, b in zip(bounds, bounds[1:]):
        while j < len(steps) and steps[j].end <= a:
            j += 1
        step = steps[j] if j < len(steps) and steps[j].start <= a else None
        if step is not None and step.start == a:
            parts.append(f'<span class="ts-step-n">{step.index + 1}</span>')
        covering = [s for s in spans if s.start <= a and b <= s.end]
        classes = "ts-selected" if step is not None and step.index == selected else ""
        style = f"background:{label_colour(covering[-1].label_id)}" if covering else ""
        title = ", ".join(s.label for s in covering)
        parts.append(
            f'<span class="{classes}" style="{style}" title="{html.escape(title, quote=True)}">'
            f"{html.escape(text[a:b])}</span>"
        )
        for span in spans:  # badges after the last character of each span
            if span.end == b:
                parts.append(_badge(span))
    parts.append("</div>")
    return "".join(parts)


def _badge(span: SpanLabel) -> str:
    cls = "ts-badge ts-retired" if span.retired else "ts-badge"
    name = span.label + (" (retired)" if span.retired else "")
    return f'<span class="{cls}" style="background:{label_colour(span.label_id)}">{html.escape(name)}</span>'


def taxonomy_editor(config: StorageConfig) -> None:
    """Add, rename, retire and bring back span labels (retired ones stay readable on old spans)."""
    if message := st.session_state.pop(_FLASH, None):
        st.success(message)
    labels = list_labels(config, include_retired=True)
    show_table([{"label": l.name, "description": l.description, "status": "retired" if l.retired else "active"}
                for l in labels], TAXONOMY_COLUMNS, empty="No span labels yet: add the first one below.")
    add_col, edit_col = st.columns(2)
    with add_col.form("taxonomy_add", clear_on_submit=True):
        name = st.text_input("New label", key="taxonomy_new_name")
        description = st.text_input("Description", key="taxonomy_new_description")
        if st.form_submit_button("Add label"):
            _apply(lambda: add_label(config, name, description), f"Added {name.strip()!r}.")
    with edit_col:
        by_id = {l.label_id: l for l in labels}
        chosen = st.selectbox(
            "Label to change", list(by_id), key="taxonomy_pick",
            format_func=lambda i: by_id[i].name + (" (retired)" if by_id[i].retired else ""),
        )
        if chosen is not None:
            new_name = st.text_input("Rename to", key="taxonomy_rename")
            c1, c2 = st.columns(2)
            if c1.button("Rename", key="taxonomy_rename_go", disabled=not new_name.strip()):
                _apply(lambda: rename_label(config, chosen, new_name), f"Renamed to {new_name.strip()!r}.")
            retired = by_id[chosen].retired
            if c2.button("Bring back" if retired else "Retire", key="taxonomy_retire_go"):
                _apply(lambda: set_label_retired(config, chosen, not retired), "Brought back." if retired else "Retired.")


def _apply(change, message: str) -> None:
    try:
        change()
    except AnnotationError as exc:
        st.error(str(exc))
        return
    st.session_state[_FLASH] = message  # shown after the rerun that redraws the table
    st.rerun()


def agreement_section(config: StorageConfig, trace_id: int, run_ids: Sequence[int]) -> None:
    """Who said what on this trace, and agreement over every trace two reviewers share."""
    current = current_annotations(config, trace_id)
    verdicts = {r: a.verdict for r, a in current.items() if a.verdict}
    agrees = trace_agrees(verdicts)
    title = {None: "Reviewers of this trace", True: "Reviewers agree", False: "Reviewers disagree"}[agrees]
    with st.expander(f"{title} ({len(current)})", expanded=agrees is False):
        show_table([{"reviewer": r, "verdict": a.verdict or "", "version": a.version, "saved (UTC)": a.created_at,
                     "labels": len(a.spans), "notes": a.notes} for r, a in current.items()], REVIEWER_COLUMNS,
                   empty="Nobody has reviewed this trace yet: a saved verdict or label shows here.")
        overall = pairwise_agreement(current_verdicts(config, run_ids))
        if not overall.pairs:
            st.caption("Agreement needs two reviewers' verdicts on the same trace (within the chosen runs).")
            return
        c1, c2, c3 = st.columns(3)
        c1.metric("Traces with two or more verdicts", overall.n_traces)
        c2.metric("Percent agreement", f"{overall.percent:.1f} %")
        c3.metric("Cohen's kappa (mean over pairs)", _fmt_kappa(overall.mean_kappa),
                  help="Cohen's kappa per pair of reviewers; with more than two reviewers, their mean (Light's kappa). "
                       "Undefined (—) when chance agreement is certain, e.g. both always gave the same verdict.")
        show_table([{"reviewer A": p.reviewer_a, "reviewer B": p.reviewer_b, "shared traces": p.n_shared,
                     "agree": p.n_agree, "percent": p.percent / 100, "kappa": None if math.isnan(p.kappa) else p.kappa}
                    for p in overall.pairs], PAIR_COLUMNS, empty="No pair of reviewers shares a trace.")


TAXONOMY_COLUMNS = (Col("label", "label", width=160), Col("status", "status", width=80),
                    Col("description", "description", "long_text"))
REVIEWER_COLUMNS = (Col("reviewer", "reviewer", width=120), Col("verdict", "verdict", width=110),
                    Col("version", "version", "int", width=65), Col("labels", "labels", "int", width=60),
                    Col("saved (UTC)", "saved (UTC)", "datetime", width=130), Col("notes", "notes", "long_text"))
PAIR_COLUMNS = (Col("reviewer A", "reviewer A", width=120), Col("reviewer B", "reviewer B", width=120),
                Col("kappa", "Cohen's kappa", "float4", width=105, help="empty: undefined (chance agreement is certain)"),
                Col("percent", "agreement", "percent", width=90), Col("shared traces", "shared traces", "int", width=100),
                Col("agree", "agree", "int", width=60))


def _fmt_kappa(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"
