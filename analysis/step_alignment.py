"""Two traces' steps lined up side by side, and the words that differ inside a changed pair.

Steps are compared after `normalise_step` (case, whitespace and trailing punctuation do not make
two steps different). The alignment is difflib's SequenceMatcher over the normalised steps
(autojunk off: a repeated step in a looping trace is content, not junk). Its opcodes become rows:
- "equal": the same step on both sides;
- "changed": a "replace" block pairs its steps in order (first with first, ...);
- "left_only" / "right_only": the leftover of a replace block, or a delete / insert.
Every step of each side appears in exactly one row, in order.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

ROW_KINDS = ("equal", "changed", "left_only", "right_only")

_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s.!?,;:]+$")
_WORDS = re.compile(r"\S+|\s+")


@dataclass(frozen=True)
class AlignedRow:
    kind: str  # one of ROW_KINDS
    left: int | None  # step index on the left, None for right_only
    right: int | None


def normalise_step(text: str) -> str:
    return _TRAILING.sub("", _SPACE.sub(" ", text.strip().lower()))


def align_steps(left: Sequence[str], right: Sequence[str]) -> list[AlignedRow]:
    """Rows pairing the steps of `left` and `right` (texts in order); see the module docstring."""
    a = [normalise_step(s) for s in left]
    b = [normalise_step(s) for s in right]
    rows: list[AlignedRow] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            rows.extend(AlignedRow("equal", i, j) for i, j in zip(range(i1, i2), range(j1, j2)))
            continue
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        rows.extend(AlignedRow("changed", i1 + k, j1 + k) for k in range(paired))
        rows.extend(AlignedRow("left_only", i, None) for i in range(i1 + paired, i2))
        rows.extend(AlignedRow("right_only", None, j) for j in range(j1 + paired, j2))
    return rows


def word_diff(left: str, right: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Each text cut into (piece, differs) runs: pieces joined give the text back unchanged, and
    `differs` marks words (and the spaces between them) that the other side does not have."""
    wa, wb = _WORDS.findall(left), _WORDS.findall(right)
    matcher = SequenceMatcher(None, [w.lower() for w in wa], [w.lower() for w in wb], autojunk=False)
    out_a: list[tuple[str, bool]] = []
    out_b: list[tuple[str, bool]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        same = tag == "equal"
        if i2 > i1:
            out_a.append(("".join(wa[i1:i2]), not same))
        if j2 > j1:
            out_b.append(("".join(wb[j1:j2]), not same))
    return out_a, out_b
