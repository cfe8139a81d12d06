"""Trace text as coloured token spans. Every piece of trace text is escaped before it becomes HTML."""
from __future__ import annotations

import html
import math

import numpy as np

from analysis.records import ANSWER, TokenColumns

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
</style>
"""


def _colour(value: float, low: float, high: float, high_is_good: bool) -> str:
    """Red for doubtful tokens, fading to transparent for confident ones."""
    if math.isnan(value):
        return "transparent"
    frac = min(1.0, max(0.0, (value - low) / (high - low)))
    doubt = 1.0 - frac if high_is_good else frac
    return f"rgba(220, 60, 40, {0.75 * doubt:.2f})"


def _tooltip(columns: TokenColumns, i: int, label: str, value: float) -> str:
    lines = [f"#{i}  {label} = {value:.3f}", f"log p = {columns.logprob[i]:.3f}"]
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
    for i, piece in enumerate(columns.text):
        if columns.phase[i] == ANSWER and not in_answer:
            in_answer = True
            parts.append('</div><div class="ts-phase">Answer</div><div class="ts-tokens">')
        value = float(values[i])
        parts.append(
            f'<span style="background:{_colour(value, low, high, high_is_good)}" '
            f'title="{html.escape(_tooltip(columns, i, label, value), quote=True)}">{html.escape(piece)}</span>'
        )
    parts.append("</div>")
    return "".join(parts)


def text_html(text: str) -> str:
    """Untrusted plain text as one HTML line (newlines as <br>, so markdown never re-parses it)."""
    return '<div class="ts-tokens">' + html.escape(text).replace("\n", "<br>") + "</div>"
