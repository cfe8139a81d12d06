"""Loops in a trace: steps of the thinking that repeat an earlier step, found on demand and stored.

Trace text is untrusted: every piece is html.escape'd before it becomes HTML.
"""
from __future__ import annotations

import html
from collections.abc import Sequence

import streamlit as st

from analysis.records import TraceRecord
from analysis.steps import STEP_UNITS
from generation.embeddings import EmbeddingConfig, loop_key, store_trace_loops
from storage.config import StorageConfig
from storage.errors import StorageError
from storage.loops import StoredLoops, get_step_loops
from ui.resources import cached_embedder
from ui.tables import Col, show_table

_REPEAT_STYLE = "background: rgba(255, 140, 0, 0.35); border-radius: 3px;"
_ORIGIN_STYLE = "border-bottom: 2px dotted #ff8c00;"


def loop_settings(key: str) -> EmbeddingConfig | None:
    """Step unit, similarity threshold and minimum step length; None (with the reason shown) if invalid."""
    c1, c2, c3 = st.columns(3)
    unit = c1.radio("Steps are", STEP_UNITS, horizontal=True, key=f"{key}_unit")
    threshold = c2.slider("Same step when cosine similarity ≥", 0.5, 1.0, EmbeddingConfig.threshold, 0.01,
                          key=f"{key}_threshold")
    min_chars = c3.number_input("Ignore steps shorter than (characters)", 0, 500, EmbeddingConfig.min_chars,
                                key=f"{key}_min_chars")
    try:
        return EmbeddingConfig(threshold=float(threshold), unit=unit, min_chars=int(min_chars))
    except ValueError as exc:
        st.error(str(exc))
        return None


def find_and_store(storage: StorageConfig, settings: EmbeddingConfig, trace_ids: Sequence[int]) -> bool:
    """Embed and store the loop marks of the traces with a progress bar; False (error shown) on failure."""
    bar = st.progress(0.0, text=f"Finding loops in {len(trace_ids)} traces…")
    try:
        embedder = cached_embedder(settings.model_path)
        store_trace_loops(storage, embedder, settings, trace_ids,
                          lambda done, total: bar.progress(done / total, text=f"{done}/{total} traces"))
    except (StorageError, RuntimeError, ValueError, OSError) as exc:
        st.error(f"Loops could not be found: {exc}")
        return False
    finally:
        bar.empty()
    return True


def loops_html(text: str, stored: StoredLoops) -> str:
    """The thinking text with repeated steps shaded (hover: which step they repeat) and the steps
    they repeat underlined."""
    marks = stored.marks
    origins = {int(j) for j in marks.repeat_of if j >= 0}
    parts, pos = [], 0
    for i, (start, end) in enumerate(stored.steps):
        if start < pos or end > len(text):
            break  # offsets from another text version; show the rest plain rather than misplace marks
        parts.append(html.escape(text[pos:start]))
        piece = html.escape(text[start:end])
        j = int(marks.repeat_of[i])
        if j >= 0:
            tip = html.escape(f"step {i + 1} repeats step {j + 1} (cosine {marks.best_similarity[i]:.2f})", quote=True)
            parts.append(f'<span style="{_REPEAT_STYLE}" title="{tip}">↻{j + 1} {piece}</span>')
        elif i in origins:
            parts.append(f'<span style="{_ORIGIN_STYLE}" title="step {i + 1}, repeated later">{piece}</span>')
        else:
            parts.append(piece)
        pos = end
    parts.append(html.escape(text[pos:]))
    body = "".join(parts).replace("\n", "<br>")
    return f'<div class="ts-tokens" style="white-space: pre-wrap; line-height: 1.7;">{body}</div>'


def show_loops(text: str, stored: StoredLoops) -> None:
    marks = stored.marks
    share = marks.repeat_share
    c1, c2 = st.columns(2)
    c1.metric("Repeated steps", "—" if share is None else f"{share:.0%}",
              f"{marks.n_repeated} of {marks.n_eligible} steps", delta_color="off", delta_arrow="off")
    c2.metric("Steps", marks.n_steps, f"{marks.n_steps - marks.n_eligible} too short to count", delta_color="off",
              delta_arrow="off")
    st.html(loops_html(text, stored))
    rows = [{"step": i + 1, "repeats step": int(j) + 1, "cosine": float(marks.best_similarity[i]),
             "text": text[stored.steps[i][0]: stored.steps[i][1]]}
            for i, j in enumerate(marks.repeat_of) if j >= 0]
    show_table(rows, _LOOP_COLUMNS, key="loops_table",
               empty="No step repeats an earlier one at this threshold, so there is no repeat to list.")


_LOOP_COLUMNS = (Col("step", "step", "int", width=60), Col("repeats step", "repeats step", "int", width=100),
                 Col("cosine", "cosine", "float", width=70), Col("text", "text", "long_text"))


def loop_section(storage: StorageConfig, trace_id: int, record: TraceRecord) -> None:
    """The Trace page's Loops section: stored marks for the chosen settings, or a button to find them."""
    with st.expander("Loops: steps that repeat an earlier step"):
        st.caption("Each thinking step is embedded with all-MiniLM-L6-v2; a step whose cosine similarity to an "
                   "earlier step reaches the threshold is marked (↻ = the step it repeats).")
        settings = loop_settings("loops")
        if settings is None:
            return
        try:
            stored = get_step_loops(storage, trace_id, loop_key(settings))
        except StorageError as exc:
            st.error(str(exc))
            return
        if stored is None:
            if not st.button("Find loops", key="loops_find"):
                st.caption("Not computed for these settings yet.")
                return
            if not find_and_store(storage, settings, [trace_id]):
                return
            stored = get_step_loops(storage, trace_id, loop_key(settings))
        if stored is not None:
            show_loops(record.thinking_text, stored)
