"""Reasoning steps: a thinking text cut into sentences or paragraphs, with character offsets.

Steps are the unit people review, label and compare, and the unit loop detection embeds. Offsets
index the original text, so a label stored as (start, end) stays attached to the same characters
whatever the display does with them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

STEP_UNITS = ("sentence", "paragraph")

# A sentence ends at . ! ? (possibly followed by closing quotes/brackets) before whitespace, or at
# a line break; numbers like "3.5" do not end one because no whitespace follows the dot.
_SENTENCE_END = re.compile(r"""[.!?]+["')\]]*(?=\s)|\n+""")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Step:
    index: int
    start: int  # character offset into the text, inclusive
    end: int  # exclusive; text[start:end] == self.text
    text: str


def split_steps(text: str, unit: str = "sentence") -> list[Step]:
    """Non-empty steps in order, leading/trailing whitespace trimmed from each (offsets follow)."""
    if unit not in STEP_UNITS:
        raise ValueError(f"unit must be one of {', '.join(STEP_UNITS)}, not {unit!r}")
    pattern = _SENTENCE_END if unit == "sentence" else _PARAGRAPH_BREAK
    spans: list[tuple[int, int]] = []
    start = 0
    for match in pattern.finditer(text):
        cut = match.end() if unit == "sentence" else match.start()
        spans.append((start, cut))
        start = match.end()
    spans.append((start, len(text)))
    steps: list[Step] = []
    for a, b in spans:
        piece = text[a:b]
        stripped = piece.strip()
        if not stripped:
            continue
        a += len(piece) - len(piece.lstrip())
        steps.append(Step(len(steps), a, a + len(stripped), stripped))
    return steps


def step_at(steps: list[Step], offset: int) -> Step | None:
    """The step that contains character `offset`, if any."""
    for step in steps:
        if step.start <= offset < step.end:
            return step
    return None
