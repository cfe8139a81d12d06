"""Picking one answer out of N sampled answers (METHODS items 4 and 5), without a reward model.

Conventions shared by every rule:
- answers are canonicalised first and grouped by value (`answers.answer_key`), so "0.75", "3/4"
  and "\\frac{3}{4}" are one answer; the tally names a group by its first spelling.
- a sample with no answer (None), or whose score is NaN, cannot win and gets no weight; it still
  counts in N where a rule's definition says "over all N" (best-of-majority's shares).
- ties between answers go to the answer that appears first, so results do not depend on dict order.
- `chosen_index` is the sample to show for the winner: the first one carrying it for count-based
  rules, the highest-scoring one for score-based rules.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from analysis.answers import answer_key, canonical_answer

__all__ = [
    "Vote",
    "best_of_majority",
    "best_of_n",
    "borda_vote",
    "confidence_weighted_vote",
    "deepconf_online_threshold",
    "majority_vote",
    "weighted_best_of_n",
]


@dataclass(frozen=True)
class Vote:
    """The outcome of one selection rule, with enough to show the user why."""

    winner: str | None  # canonical answer, None when no sample had a usable answer
    tally: dict[str, float]  # answer -> weight under `rule`, in first-appearance order
    chosen_index: int | None  # a sample carrying the winner
    rule: str  # e.g. "borda(p=0.5)"
    note: str = ""  # what was filtered or why there is no winner
    used_indices: tuple[int, ...] = field(default=())  # samples that carried weight


@dataclass
class _Groups:
    """Canonical answers grouped by value: per sample its group name (None when unusable)."""

    names: list[str | None]  # per sample: the group's display name
    first_index: dict[str, int]  # group name -> first sample carrying it


def _group(answers: Sequence[str | None]) -> _Groups:
    key_to_name: dict[tuple[str, str], str] = {}
    names: list[str | None] = []
    first: dict[str, int] = {}
    for i, raw in enumerate(answers):
        canon = canonical_answer(raw) if raw is not None else None
        key = answer_key(canon)
        if key is None:
            names.append(None)
            continue
        name = key_to_name.setdefault(key, canon)
        first.setdefault(name, i)
        names.append(name)
    return _Groups(names, first)


def _scores_array(scores: Sequence[float], n: int, what: str = "scores") -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have one value per answer ({n}), got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{what} must be finite (NaN marks a missing score); got an infinity")
    return arr


def _winner(tally: dict[str, float], first: dict[str, int]) -> str | None:
    if not tally:
        return None
    # highest weight; among equal weights the answer seen first
    return min(tally, key=lambda a: (-tally[a], first[a]))


def _best_scoring(
    groups: _Groups, scores: np.ndarray, answer: str | None, allowed: set[str] | None = None
) -> int | None:
    """Highest-scoring usable sample, optionally only of `answer` or of answers in `allowed`."""
    best: int | None = None
    for i, name in enumerate(groups.names):
        if name is None or math.isnan(scores[i]) or (answer is not None and name != answer):
            continue
        if allowed is not None and name not in allowed:
            continue
        if best is None or scores[i] > scores[best]:  # strict: ties keep the earlier sample
            best = i
    return best


def _ordered(tally: dict[str, float], first: dict[str, int]) -> dict[str, float]:
    return {a: float(tally[a]) for a in sorted(tally, key=first.__getitem__)}


def majority_vote(answers: Sequence[str | None]) -> Vote:
    """Most frequent answer; ties go to the answer that appeared first."""
    g = _group(answers)
    tally: dict[str, float] = {}
    for name in g.names:
        if name is not None:
            tally[name] = tally.get(name, 0.0) + 1.0
    winner = _winner(tally, g.first_index)
    used = tuple(i for i, n in enumerate(g.names) if n is not None)
    return Vote(
        winner, _ordered(tally, g.first_index), g.first_index.get(winner) if winner is not None else None,
        "majority", "" if winner is not None else "no sample has an answer", used,
    )


def borda_vote(answers: Sequence[str | None], scores: Sequence[float], p: float = 0.5) -> Vote:
    """Borda count by score (Kang et al., self-certainty): rank the N usable samples by score,
    best first; rank r adds (N - r + 1)^p to its answer. p = 0 is a plain majority vote.

    Usable = has an answer and a finite score. Equal scores share the mean of their points, so tied
    samples score the same whatever their order.
    """
    if not math.isfinite(p) or p < 0:
        raise ValueError(f"borda p must be a finite number >= 0, got {p!r}")
    g = _group(answers)
    s = _scores_array(scores, len(g.names))
    usable = [i for i, name in enumerate(g.names) if name is not None and not math.isnan(s[i])]
    n = len(usable)
    points: dict[int, float] = {}
    # walk the distinct score levels from the best; a level spanning ranks r..r+m-1 shares its points
    r = 1
    for _, level_iter in itertools.groupby(sorted(usable, key=lambda i: -s[i]), key=lambda i: s[i]):
        level = list(level_iter)
        share = sum((n - rank + 1) ** p for rank in range(r, r + len(level))) / len(level)
        for i in level:
            points[i] = share
        r += len(level)
    tally: dict[str, float] = {}
    for i in usable:
        tally[g.names[i]] = tally.get(g.names[i], 0.0) + points[i]
    winner = _winner(tally, g.first_index)
    return Vote(
        winner, _ordered(tally, g.first_index), _best_scoring(g, s, winner) if winner is not None else None,
        f"borda(p={p:g})", "" if winner is not None else "no sample has both an answer and a score", tuple(usable),
    )


def best_of_n(answers: Sequence[str | None], scores: Sequence[float]) -> Vote:
    """The answer of the highest-scoring sample that has one (ties: the earlier sample).
    The tally shows each answer's best score."""
    g = _group(answers)
    s = _scores_array(scores, len(g.names))
    best = _best_scoring(g, s, None)
    tally: dict[str, float] = {}
    for i, name in enumerate(g.names):
        if name is not None and not math.isnan(s[i]):
            tally[name] = max(tally.get(name, -math.inf), float(s[i]))
    used = tuple(i for i, n in enumerate(g.names) if n is not None and not math.isnan(s[i]))
    winner = g.names[best] if best is not None else None
    return Vote(
        winner, _ordered(tally, g.first_index), best, "best_of_n",
        "" if winner is not None else "no sample has both an answer and a score", used,
    )


def weighted_best_of_n(answers: Sequence[str | None], scores: Sequence[float]) -> Vote:
    """Sum of scores per answer, highest sum wins (search-and-learn's weighted best-of-N).
    Meant for non-negative scores (PRM probabilities, self-certainty); negative scores would
    make frequent answers lose."""
    g = _group(answers)
    s = _scores_array(scores, len(g.names))
    tally: dict[str, float] = {}
    used = []
    for i, name in enumerate(g.names):
        if name is not None and not math.isnan(s[i]):
            tally[name] = tally.get(name, 0.0) + float(s[i])
            used.append(i)
    winner = _winner(tally, g.first_index)
    return Vote(
        winner, _ordered(tally, g.first_index), _best_scoring(g, s, winner) if winner is not None else None,
        "weighted_best_of_n", "" if winner is not None else "no sample has both an answer and a score", tuple(used),
    )


def best_of_majority(answers: Sequence[str | None], scores: Sequence[float], alpha: float) -> Vote:
    """Best-of-Majority: pi(y) = count(y) / N over all N samples (those without an answer too);
    keep answers with pi(y) >= alpha; the best-scoring sample among the kept answers wins.
    alpha = 0 is best-of-N. The tally shows pi(y) for every answer."""
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"best_of_majority alpha must be in [0, 1], got {alpha!r}")
    g = _group(answers)
    s = _scores_array(scores, len(g.names))
    n = len(g.names)
    counts: dict[str, float] = {}
    for name in g.names:
        if name is not None:
            counts[name] = counts.get(name, 0.0) + 1.0
    share = {a: c / n for a, c in counts.items()}
    # a tiny slack so alpha = 2/3 keeps an answer with exactly 2 of 3 votes despite rounding
    kept = {a for a, pi in share.items() if pi >= alpha - 1e-12}
    best = _best_scoring(g, s, None, allowed=kept)
    winner = g.names[best] if best is not None else None
    used = tuple(i for i, name in enumerate(g.names) if name in kept and not math.isnan(s[i]))
    kept_text = ", ".join(a for a in _ordered(share, g.first_index) if a in kept)
    note = f"kept share >= {alpha:g}: {kept_text}" if kept else f"no answer reaches share {alpha:g}"
    return Vote(winner, _ordered(share, g.first_index), best, f"best_of_majority(alpha={alpha:g})", note, used)


def _check_percent(eta: float, name: str) -> None:
    if not math.isfinite(eta) or not 0.0 < eta <= 100.0:
        raise ValueError(f"{name} must be in (0, 100], got {eta!r}")


def confidence_weighted_vote(
    answers: Sequence[str | None], confidences: Sequence[float], keep_top_percent: float
) -> Vote:
    """DeepConf offline: keep the top eta% of traces by confidence, then vote with each kept
    trace weighted by its confidence.

    The eta% is of all traces with a finite confidence, answer or not (filtering judges traces,
    not answers): ceil(eta/100 * N) of them, at least one, ties at the cut broken by sample order.
    """
    _check_percent(keep_top_percent, "keep_top_percent")
    g = _group(answers)
    c = _scores_array(confidences, len(g.names), "confidences")
    scored = [i for i in range(len(g.names)) if not math.isnan(c[i])]
    k = max(1, math.ceil(keep_top_percent / 100.0 * len(scored) - 1e-9)) if scored else 0
    kept = sorted(sorted(scored, key=lambda i: -c[i])[:k])
    tally: dict[str, float] = {}
    used = []
    for i in kept:
        if g.names[i] is not None:
            tally[g.names[i]] = tally.get(g.names[i], 0.0) + float(c[i])
            used.append(i)
    winner = _winner(tally, g.first_index)
    chosen = None
    if winner is not None:
        chosen = max((i for i in used if g.names[i] == winner), key=lambda i: (c[i], -i))
    note = f"kept {len(kept)} of {len(scored)} scored traces (top {keep_top_percent:g}%)"
    if winner is None:
        note += "; none of them has an answer"
    return Vote(
        winner, _ordered(tally, g.first_index), chosen,
        f"confidence_weighted(top={keep_top_percent:g}%)", note, tuple(used),
    )


def deepconf_online_threshold(warmup_lowest_group_scores: Sequence[float], eta: float) -> float:
    """DeepConf online stopping threshold: the (100 - eta) percentile of the warm-up traces'
    lowest-group confidences (numpy's linear interpolation). A new trace stops when a window
    mean falls below it; eta = 10 keeps roughly the top 10%."""
    _check_percent(eta, "eta")
    arr = np.asarray(warmup_lowest_group_scores, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("deepconf_online_threshold needs at least one warm-up score")
    if not np.isfinite(arr).all():
        raise ValueError("warm-up scores must be finite")
    return float(np.percentile(arr, 100.0 - eta))
