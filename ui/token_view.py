"""Trace text as coloured token spans. Every piece of trace text is escaped before it becomes HTML."""
from __future__ import annotations

import html
import math

import numpy as np
import streamlit as st

from analysis.records import ANSWER, FORCED, TokenColumns

# Per signal: (label, low end of the colour scale, high end, whether high values are "good").
SIGNALS = {
    "log-probability": ("log p", -6.0, 0.0, True),
    "entropy": ("entropy (nats)", 0.0, 4.0, False),
}

TOKEN_CSS = """
<style>
.ts-tokens { font-family: ui-monospace, monospace; font-size: 0.9rem; line-height: 1.7;
             white-space: pre-wrap; word-break: break-word; }
.ts-tokens span { border-radius: 3px; }
.ts-phase { font-weight: 600; margin: 0.6rem 0 0.2rem; color: #555; }
.ts-tokens span.ts-forced { outline: 1px dashed #7b4fb5; font-style: italic; }
</style>
"""


def _colour(value: float, low: float, high: float, high_is_good: bool) -> str:
    """Red for doubtful tokens, fading to transparent for confident ones."""
    if math.isnan(value):
        return "transparent"
    frac = min(1.0, max(0.0, (value - low) / (high - low)))
    doubt = 1.0 - frac if high_is_good else frac
    return f"rgba(220, 60, 40, {0.75 * doubt:.2f})"


def _tooltip(columns: TokenColumns, i: int, label: str, value: float, position: int | None = None) -> str:
    lines = [f"#{i if position is None else position}  {label} = {value:.3f}", f"log p = {columns.logprob[i]:.3f}"]
    for alt, lp in zip(columns.top_texts[i], columns.top_logprobs[i]):
        lines.append(f"{alt!r}: {lp:.2f}")
    return "\n".join(lines)


def tokens_html(columns: TokenColumns, signal: str = "log-probability", values: np.ndarray | None = None) -> str:
    """HTML for a trace's tokens, thinking then answer, coloured by `signal` (or by `values` if given)."""
    label, low, high, high_is_good = SIGNALS.get(signal, (signal, 0.0, 1.0, False))
    if values is None:
        values = columns.logprob if signal == "log-probability" else columns.entropy
    parts = [TOKEN_CSS, '<div class="ts-phase">Thinking</div><div class="ts-tokens">']
    in_answer = False
    for i in range(len(columns.text)):
        if columns.phase[i] == ANSWER and not in_answer:
            in_answer = True
            parts.append('</div><div class="ts-phase">Answer</div><div class="ts-tokens">')
        parts.append(_span(columns, i, float(values[i]), label, low, high, high_is_good))
    parts.append("</div>")
    return "".join(parts)


# Tokens injected by budget forcing (phase FORCED) are outlined, and say so on hover.
_FORCED_CLASS = ' class="ts-forced"'
_FORCED_TIP = "\nforced: injected by budget forcing, not sampled"
FORCED_LEGEND = ("Dashed outline = forced: injected by budget forcing (the forced end of thinking, \"Wait\"), "
                 "not sampled, and not counted as thinking.")


def _span(columns: TokenColumns, i: int, value: float, label: str, low: float, high: float, high_is_good: bool,
          position: int | None = None) -> str:
    forced = columns.phase[i] == FORCED
    tip = _tooltip(columns, i, label, value, position) + (_FORCED_TIP if forced else "")
    return (f'<span{_FORCED_CLASS if forced else ""} style="background:{_colour(value, low, high, high_is_good)}" '
            f'title="{html.escape(tip, quote=True)}">'
            f'{html.escape(columns.text[i])}</span>')


def token_spans(columns: TokenColumns, first_position: int = 0) -> str:
    """Some tokens of a trace as log-probability-coloured spans, without CSS or phase headings: the live
    Generate view draws a trace in pieces. `first_position` numbers the tooltips as in the whole trace."""
    label, low, high, high_is_good = SIGNALS["log-probability"]
    return "".join(_span(columns, i, float(columns.logprob[i]), label, low, high, high_is_good, first_position + i)
                   for i in range(len(columns.text)))


def text_html(text: str) -> str:
    """Untrusted plain text as one HTML line (newlines as <br>, so markdown never re-parses it)."""
    return '<div class="ts-tokens">' + html.escape(text).replace("\n", "<br>") + "</div>"


def show_text(text: str, container=None) -> None:
    """Trace text (prompt, thinking, answer, notes) shown as text: escaped and drawn by st.html,
    which runs no Markdown, so an image in it is never fetched and a link in it is not live."""
    (container or st).html(TOKEN_CSS + text_html(text))


# Analysis signals: (label, unit/help, colouring) -- "doubt" reuses the red scale above,
# "intensity" shades blue by how high the value sits within this trace's range.
ANALYSIS_SIGNALS = {
    "MI": ("m_t", "intensity"),
    "settling depth": ("settling layer", "intensity"),
    "entropy": ("entropy (nats)", "doubt-high"),
    "log-probability": ("log p", "doubt-low"),
    "confidence": ("DeepConf C_t", "doubt-low"),
}
_PEAK_STYLE = "outline: 2px solid #d62728; outline-offset: 0px; font-weight: 600;"


def _blue(value: float, low: float, high: float) -> str:
    if math.isnan(value) or high <= low:
        return "transparent"
    frac = min(1.0, max(0.0, (value - low) / (high - low)))
    return f"rgba(31, 119, 180, {0.75 * frac:.2f})"


def analysis_tokens_html(
    texts: list[str], phase: np.ndarray, values: np.ndarray, signal: str, peaks: np.ndarray, extra: list[str] | None = None
) -> str:
    """Analysed tokens coloured by one ANALYSIS_SIGNALS entry; MI peak tokens outlined.

    `extra[i]` is more tooltip text for token i. All trace text is escaped.
    """
    label, kind = ANALYSIS_SIGNALS[signal]
    vals = np.asarray(values, dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if kind == "doubt-high" and signal == "entropy":
        low, high = 0.0, 4.0
    elif signal == "log-probability":
        low, high = -6.0, 0.0
    parts = [TOKEN_CSS, '<div class="ts-phase">Thinking</div><div class="ts-tokens">']
    in_answer = False
    for i, piece in enumerate(texts):
        if phase[i] == ANSWER and not in_answer:
            in_answer = True
            parts.append('</div><div class="ts-phase">Answer</div><div class="ts-tokens">')
        value = float(vals[i])
        colour = _blue(value, low, high) if kind == "intensity" else _colour(value, low, high, kind == "doubt-low")
        style = f"background:{colour};" + (_PEAK_STYLE if peaks[i] else "")
        tip = f"#{i}  {label} = {value:.3f}" + (" · MI peak" if peaks[i] else "") + (f"\n{extra[i]}" if extra else "")
        forced = phase[i] == FORCED
        tip += _FORCED_TIP if forced else ""
        parts.append(f'<span{_FORCED_CLASS if forced else ""} style="{style}" '
                     f'title="{html.escape(tip, quote=True)}">{html.escape(piece)}</span>')
    parts.append("</div>")
    return "".join(parts)
