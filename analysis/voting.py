"""Picking one answer out of N sampled answers (docs/METHODS.md §4 and §5), without a reward model.

Conventions shared by every rule (docs/METHODS.md §4):
- answers are grouped by one equivalence before any vote, by default the one that grades them
  (`analysis.answers.equivalence_classes`: canonical form, numbers within the grading tolerance,
  times, math-verify), so "0.3333333" and "1/3" are one answer exactly when both grade the same
  against a reference of 1/3. Pass `equivalence=` for another one (a pairwise predicate). A group
  is named by the canonical form of its first member.
- a sample with no answer (None), or whose score is NaN, cannot win and gets no weight; it still
  counts in N where a rule's definition says "over all N" (best-of-majority's shares, Borda ranks).
- scores may be infinite (self-certainty is +inf when a token had probability 0, its true value):
  rank-based rules rank them like any number; weight sums accept +inf, and -inf is refused there
  because +inf + -inf has no value.
- ties between answers go to the answer seen first (TIE_RULE) among the samples that vote (for
  DeepConf, the kept traces, as the authors' code does), so results do not depend on dict order; `Vote.tie` names the tied answers and `Vote.tie_description()` says it in words.
- `chosen_index` is the sample to show for the winner: the first one carrying it for count-based
  rules, the highest-scoring one for score-based rules.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from analysis.answers import canonical_answer, equivalence_classes

__all__ = [
    "TIE_RULE",
    "Equivalence",
    "Vote",
    "best_of_majority",
    "best_of_n",
    "borda_vote",
    "confidence_weighted_vote",
    "deepconf_keep",
    "deepconf_online_threshold",
    "group_answers",
    "majority_vote",
    "weighted_best_of_n",
]

TIE_RULE = "first seen wins"
# Whether two raw answers are the same answer; None means the grading equivalence.
Equivalence = Callable[[str, str], bool]


@dataclass(frozen=True)
class Vote:
    """The outcome of one selection rule, with enough to show the user why."""

    winner: str | None  # canonical answer, None when no sample had a usable answer
    tally: dict[str, float]  # answer -> weight under `rule`, in first-appearance order
    chosen_index: int | None  # a sample carrying the winner
    rule: str  # e.g. "borda(p=0.5)"
    note: str = ""  # what was filtered or why there is no winner
    used_indices: tuple[int, ...] = field(default=())  # samples that carried weight
    tie: tuple[str, ...] = field(default=())  # answers level at the top before TIE_RULE (>= 2), else ()
    tie_value: float | None = None  # the value they share (votes, weight or score)
    tie_unit: str = "vote"  # what tie_value counts, for the description

    def tie_description(self) -> str:
        """'tie: 3 answers with 1 vote each; rule: first seen wins', or '' without a tie."""
        if not self.tie:
            return ""
        return f"tie: {len(self.tie)} answers with {_tie_amount(self.tie_value, self.tie_unit)} each; rule: {TIE_RULE}"


def _tie_amount(value: float | None, unit: str) -> str:
    if value is None:
        return unit
    shown = "inf" if math.isinf(value) else f"{value:.4g}"
    if unit == "vote":
        return f"{shown} vote" + ("" if value == 1 else "s")
    return f"{unit} {shown}"


@dataclass
class _Groups:
    """Answers grouped by the equivalence: per sample its group's name (None when unusable)."""

    names: list[str | None]  # per sample: the group's display name
    first_index: dict[str, int]  # group name -> first sample carrying it


def _pairwise_classes(answers: Sequence[str | None], same: Equivalence) -> list[int | None]:
    leaders: list[str] = []
    out: list[int | None] = []
    for raw in answers:
        if raw is None or canonical_answer(raw) is None:
            out.append(None)
            continue
        cls = next((k for k, lead in enumerate(leaders) if same(lead, raw)), None)
        if cls is None:
            cls = len(leaders)
            leaders.append(raw)
        out.append(cls)
    return out


def group_answers(answers: Sequence[str | None], equivalence: Equivalence | None = None) -> list[str | None]:
    """Per sample the name of its answer group (canonical form of the group's first member), None
    for no answer. Grouping is by `equivalence` (default: the grading one, see the module doc)."""
    return _group(answers, equivalence).names


def _group(answers: Sequence[str | None], equivalence: Equivalence | None = None) -> _Groups:
    classes = equivalence_classes(answers) if equivalence is None else _pairwise_classes(answers, equivalence)
    class_name: dict[int, str] = {}
    names: list[str | None] = []
    first: dict[str, int] = {}
    for i, (raw, cls) in enumerate(zip(answers, classes)):
        if cls is None:
            names.append(None)
            continue
        name = class_name.setdefault(cls, canonical_answer(raw))
        first.setdefault(name, i)
        names.append(name)
    return _Groups(names, first)


def _scores_array(scores: Sequence[float], n: int, what: str = "scores", allow_neg_inf: bool = True) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have one value per answer ({n}), got shape {arr.shape}")
    if not allow_neg_inf and np.isneginf(arr).any():
        raise ValueError(f"{what} are summed as weights, so they cannot be -inf (NaN marks a missing score)")
    return arr


def _top(tally: dict[str, float], first: dict[str, int]) -> tuple[str | None, tuple[str, ...]]:
    """The winner (highest weight, TIE_RULE among equals) and the answers tied with it."""
    if not tally:
        return None, ()
    winner = min(tally, key=lambda a: (-tally[a], first[a]))
    level = tuple(a for a in sorted(tally, key=first.__getitem__) if tally[a] == tally[winner])
    return winner, (level if len(level) > 1 else ())


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


def _score_tie(groups: _Groups, scores: np.ndarray, best: int | None, allowed: set[str] | None = None) -> tuple[str, ...]:
    """Answers other than the winner's whose best usable sample scores as high as the best one."""
    if best is None:
        return ()
    level = [name for i, name in enumerate(groups.names)
             if name is not None and (allowed is None or name in allowed) and scores[i] == scores[best]]
    level = sorted(set(level), key=groups.first_index.__getitem__)
    return tuple(level) if len(level) > 1 else ()


def _first_among(groups: _Groups, indices) -> dict[str, int]:
    """Group name -> first of `indices` carrying it: "first seen" counts only the samples that vote."""
    first: dict[str, int] = {}
    for i in indices:
        first.setdefault(groups.names[i], i)
    return first


def _ordered(tally: dict[str, float], first: dict[str, int]) -> dict[str, float]:
    return {a: float(tally[a]) for a in sorted(tally, key=first.__getitem__)}


def majority_vote(answers: Sequence[str | None], equivalence: Equivalence | None = None) -> Vote:
    """Most frequent answer; ties go to the answer that appeared first."""
    g = _group(answers, equivalence)
    tally: dict[str, float] = {}
    for name in g.names:
        if name is not None:
            tally[name] = tally.get(name, 0.0) + 1.0
    winner, tie = _top(tally, g.first_index)
    used = tuple(i for i, n in enumerate(g.names) if n is not None)
    return Vote(
        winner, _ordered(tally, g.first_index), g.first_index.get(winner) if winner is not None else None,
        "majority", "" if winner is not None else "no sample has an answer", used,
        tie, tally[winner] if tie else None, "vote",
    )


def borda_vote(answers: Sequence[str | None], scores: Sequence[float], p: float = 0.5,
               equivalence: Equivalence | None = None) -> Vote:
    """Borda count by score (Kang et al., self-certainty): rank the N scored samples by score,
    best first; rank r adds (N - r + 1)^p to its answer. p = 0 is a plain majority vote.

    N counts every sample with a score, answered or not, as the definition ranks all N responses
    (docs/METHODS.md §4): an unanswered sample holds its rank and gives its points to no answer.
    A NaN score cannot be ranked, so that sample is left out of N. Infinite scores rank first
    (+inf) or last (-inf). Equal scores share the mean of their points, so tied samples score the
    same whatever their order.
    """
    if not math.isfinite(p) or p < 0:
        raise ValueError(f"borda p must be a finite number >= 0, got {p!r}")
    g = _group(answers, equivalence)
    s = _scores_array(scores, len(g.names))
    ranked = [i for i in range(len(g.names)) if not math.isnan(s[i])]
    n = len(ranked)
    points: dict[int, float] = {}
    # walk the distinct score levels from the best; a level spanning ranks r..r+m-1 shares its points
    r = 1
    for _, level_iter in itertools.groupby(sorted(ranked, key=lambda i: -s[i]), key=lambda i: s[i]):
        level = list(level_iter)
        share = sum((n - rank + 1) ** p for rank in range(r, r + len(level))) / len(level)
        for i in level:
            points[i] = share
        r += len(level)
    usable = [i for i in ranked if g.names[i] is not None]
    tally: dict[str, float] = {}
    for i in usable:
        tally[g.names[i]] = tally.get(g.names[i], 0.0) + points[i]
    first = _first_among(g, usable)
    winner, tie = _top(tally, first)
    return Vote(
        winner, _ordered(tally, first), _best_scoring(g, s, winner) if winner is not None else None,
        f"borda(p={p:g})", "" if winner is not None else "no sample has both an answer and a score", tuple(usable),
        tie, tally[winner] if tie else None, "points",
    )


def best_of_n(answers: Sequence[str | None], scores: Sequence[float], equivalence: Equivalence | None = None) -> Vote:
    """The answer of the highest-scoring sample that has one (ties: the earlier sample).
    The tally shows each answer's best score."""
    g = _group(answers, equivalence)
    s = _scores_array(scores, len(g.names))
    best = _best_scoring(g, s, None)
    tally: dict[str, float] = {}
    for i, name in enumerate(g.names):
        if name is not None and not math.isnan(s[i]):
            tally[name] = max(tally.get(name, -math.inf), float(s[i]))
    used = tuple(i for i, n in enumerate(g.names) if n is not None and not math.isnan(s[i]))
    winner = g.names[best] if best is not None else None
    tie = _score_tie(g, s, best)
    return Vote(
        winner, _ordered(tally, g.first_index), best, "best_of_n",
        "" if winner is not None else "no sample has both an answer and a score", used,
        tie, float(s[best]) if tie else None, "score",
    )


def weighted_best_of_n(answers: Sequence[str | None], scores: Sequence[float],
                       equivalence: Equivalence | None = None) -> Vote:
    """Sum of scores per answer, highest sum wins (search-and-learn's weighted best-of-N).
    Meant for non-negative scores (PRM probabilities, self-certainty); negative scores would
    make frequent answers lose."""
    g = _group(answers, equivalence)
    s = _scores_array(scores, len(g.names), allow_neg_inf=False)
    tally: dict[str, float] = {}
    used = []
    for i, name in enumerate(g.names):
        if name is not None and not math.isnan(s[i]):
            tally[name] = tally.get(name, 0.0) + float(s[i])
            used.append(i)
    first = _first_among(g, used)
    winner, tie = _top(tally, first)
    return Vote(
        winner, _ordered(tally, first), _best_scoring(g, s, winner) if winner is not None else None,
        "weighted_best_of_n", "" if winner is not None else "no sample has both an answer and a score", tuple(used),
        tie, tally[winner] if tie else None, "weight",
    )


def best_of_majority(answers: Sequence[str | None], scores: Sequence[float], alpha: float,
                     equivalence: Equivalence | None = None) -> Vote:
    """Best-of-Majority: pi(y) = count(y) / N over all N samples (those without an answer too);
    keep answers with pi(y) >= alpha; the best-scoring sample among the kept answers wins.
    alpha = 0 is best-of-N. The tally shows pi(y) for every answer."""
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"best_of_majority alpha must be in [0, 1], got {alpha!r}")
    g = _group(answers, equivalence)
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
    tie = _score_tie(g, s, best, kept)
    return Vote(winner, _ordered(share, g.first_index), best, f"best_of_majority(alpha={alpha:g})", note, used,
                tie, float(s[best]) if tie else None, "score")


def _check_percent(eta: float, name: str) -> None:
    if not math.isfinite(eta) or not 0.0 < eta <= 100.0:
        raise ValueError(f"{name} must be in (0, 100], got {eta!r}")


def deepconf_keep(confidences: Sequence[float], keep_top_percent: float) -> list[int]:
    """Indices (ascending) that DeepConf's offline filter keeps among `confidences` (docs/METHODS.md
    §4), as the authors' code does (facebookresearch/deepconf, analysis_offline.py,
    filter_top_confidence): threshold = the (100 - eta) percentile with numpy's linear
    interpolation, keep every confidence >= threshold. So N = 16 at eta = 90 keeps 14 (the
    threshold falls between the 2nd and 3rd lowest), at eta = 10 keeps 2, and ties at the
    threshold are all kept. The threshold is found on sorted positions rather than by arithmetic
    on the values, which gives the same set for finite values and stays defined with infinities."""
    _check_percent(keep_top_percent, "keep_top_percent")
    c = np.asarray(confidences, dtype=np.float64)
    if c.ndim != 1 or np.isnan(c).any():
        raise ValueError("deepconf_keep needs a 1-D list of confidences without NaN")
    n = c.size
    if n == 0:
        return []
    v = np.sort(c)
    pos = (n - 1) * ((100.0 - keep_top_percent) / 100.0)  # numpy's "linear" virtual index
    i = min(int(math.floor(pos)), n - 1)
    frac = pos - i
    # a + frac * (b - a) lies in (a, b] when frac > 0 and a < b; every value >= it is then >= b
    threshold = v[i] if frac == 0 or i + 1 >= n or v[i] == v[i + 1] else v[i + 1]
    return [k for k in range(n) if c[k] >= threshold]


def confidence_weighted_vote(
    answers: Sequence[str | None], confidences: Sequence[float], keep_top_percent: float,
    equivalence: Equivalence | None = None,
) -> Vote:
    """DeepConf offline: drop traces without an answer (or without a confidence), keep the top
    eta% of the rest by confidence (`deepconf_keep`, the authors' rule), then vote with each
    kept trace weighted by its confidence. As in the reference, the eta% base is the answered
    traces only."""
    _check_percent(keep_top_percent, "keep_top_percent")
    g = _group(answers, equivalence)
    c = _scores_array(confidences, len(g.names), "confidences", allow_neg_inf=False)
    valid = [i for i in range(len(g.names)) if g.names[i] is not None and not math.isnan(c[i])]
    kept = [valid[k] for k in deepconf_keep([c[i] for i in valid], keep_top_percent)]
    tally: dict[str, float] = {}
    for i in kept:
        tally[g.names[i]] = tally.get(g.names[i], 0.0) + float(c[i])
    first = _first_among(g, kept)  # the reference's dict order: the kept traces in sample order
    winner, tie = _top(tally, first)
    chosen = None
    if winner is not None:
        chosen = max((i for i in kept if g.names[i] == winner), key=lambda i: (c[i], -i))
    note = (f"kept {len(kept)} of {len(valid)} answered traces (top {keep_top_percent:g}%; "
            f"{len(g.names) - len(valid)} without an answer or a confidence dropped first)")
    if winner is None:
        note = "no trace has both an answer and a confidence"
    return Vote(
        winner, _ordered(tally, first), chosen,
        f"confidence_weighted(top={keep_top_percent:g}%)", note, tuple(kept),
        tie, tally[winner] if tie else None, "weight",
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
