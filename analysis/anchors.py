"""Which sentences matter: resampling, counterfactual and forced-answer importance (docs/METHODS.md §8).

Pure functions over rollouts already generated and graded (generation/anchors.py makes them). A cut c
(0..M for M sentences) is the point before sentence c: cut 0 is the empty thinking, cut M the whole
thinking. Rollouts from cut c continue the thinking S_1..S_c (0-based: sentences before index c).

- P_c: answer distribution of the free rollouts from cut c; F_c: of the forced-answer rollouts
  (end of thinking forced right after the prefix).
- resampling importance of sentence i (0-based): KL(P_{i+1} || P_i).
- counterfactual importance: KL(P_{i+1} || P^cf_i), where P^cf_i counts only the rollouts from cut i
  whose regenerated first sentence has cosine similarity below `similarity_threshold` with the
  original sentence i (Bogdan et al. 2025 keep the "different" resamples the same way).
- forced-answer importance: KL(F_{i+1} || F_i).
- accuracy change: acc(after) - acc(before) on the same pairs, when a reference exists.

KL uses additive (Lidstone) smoothing over the union of answers seen in either distribution, so it
is finite when one side never produced an answer the other did; "no answer" is one more category.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

IMPORTANCE_KINDS = ("resampling", "counterfactual", "forced")
NO_ANSWER = "∅"  # the category of rollouts that stated no answer


@dataclass(frozen=True)
class AnchorMath:
    """Parameters of the importance scores (docs/METHODS.md §8).

    alpha: additive smoothing constant added to every answer count before normalising (1.0 =
    Laplace). Small N (8 samples) makes unsmoothed KL infinite whenever one side misses an answer;
    alpha = 1 keeps it finite and shrinks differences resting on one or two samples.
    similarity_threshold: a regenerated sentence counts as semantically different when its cosine
    with the original is below this (the paper's default; a setting, shown with the results).
    """

    alpha: float = 1.0
    similarity_threshold: float = 0.8

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
            raise ValueError(f"AnchorMath.alpha must be a finite number > 0, got {a!r}")
        t = self.similarity_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not -1.0 <= t <= 1.0:
            raise ValueError(f"AnchorMath.similarity_threshold is a cosine in [-1, 1], got {t!r}")


@dataclass(frozen=True)
class Rollout:
    """One continuation from a cut: its answer class, grade, and how close its new first sentence
    is to the original sentence at that cut (NaN for forced rollouts and for the last cut)."""

    answer: Hashable | None  # an answer class (e.g. analysis.answers.answer_key); None = no answer
    correct: bool | None = None  # None = ungraded (no reference, or the rollout did not finish)
    similarity: float = math.nan


@dataclass(frozen=True)
class SentenceImportance:
    index: int  # 0-based sentence index
    kind: str  # one of IMPORTANCE_KINDS
    kl: float  # nats; NaN when a side has no rollouts
    accuracy_before: float  # NaN without graded rollouts
    accuracy_after: float
    n_before: int  # rollouts counted on each side (after the semantic filter for counterfactual)
    n_after: int

    @property
    def accuracy_change(self) -> float:
        return self.accuracy_after - self.accuracy_before


def _category(answer: Hashable | None) -> Hashable:
    return NO_ANSWER if answer is None else answer


def smoothed_distribution(answers: Sequence[Hashable | None], support: Sequence[Hashable], alpha: float) -> list[float]:
    """(count(a) + alpha) / (n + alpha * |support|) for each a in support (None answers count as NO_ANSWER)."""
    counts = Counter(_category(a) for a in answers)
    total = len(answers) + alpha * len(support)
    return [(counts.get(a, 0) + alpha) / total for a in support]


def answer_kl(p_answers: Sequence[Hashable | None], q_answers: Sequence[Hashable | None], alpha: float) -> float:
    """KL(P || Q) in nats between the smoothed answer distributions of two rollout sets; NaN if either is empty.

    Support: every category seen in either set (order of first appearance, P then Q)."""
    if not p_answers or not q_answers:
        return math.nan
    support = list(dict.fromkeys(_category(a) for a in [*p_answers, *q_answers]))
    p = smoothed_distribution(p_answers, support, alpha)
    q = smoothed_distribution(q_answers, support, alpha)
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))


def semantically_different(similarities: Sequence[float], threshold: float) -> list[bool]:
    """Which regenerated sentences count as different from the original: cosine < threshold.

    NaN (no regenerated sentence: the model ended thinking at once) counts as different, since the
    sentence was dropped."""
    return [not (s >= threshold) for s in similarities]


def accuracy(rollouts: Sequence[Rollout]) -> float:
    graded = [r.correct for r in rollouts if r.correct is not None]
    return sum(graded) / len(graded) if graded else math.nan


def _score(index: int, kind: str, before: Sequence[Rollout], after: Sequence[Rollout], alpha: float) -> SentenceImportance:
    return SentenceImportance(index, kind, answer_kl([r.answer for r in after], [r.answer for r in before], alpha),
                              accuracy(before), accuracy(after), len(before), len(after))


def sentence_importance(
    free: Sequence[Sequence[Rollout]],
    forced: Sequence[Sequence[Rollout]] | None,
    settings: AnchorMath = AnchorMath(),
) -> list[SentenceImportance]:
    """Importance of each of the M sentences, every kind, from rollouts per cut.

    free[c] / forced[c]: rollouts from cut c, for c in 0..M (so len == M + 1); forced may be None
    (not run). Returns M rows per kind, kinds in IMPORTANCE_KINDS order, sentences in order.
    """
    n_cuts = len(free)
    if n_cuts < 2:
        raise ValueError("importance needs rollouts at two cuts at least (one sentence: before and after it)")
    if forced is not None and len(forced) != n_cuts:
        raise ValueError(f"forced rollouts cover {len(forced)} cuts but free rollouts cover {n_cuts}")
    out: list[SentenceImportance] = []
    for i in range(n_cuts - 1):
        out.append(_score(i, "resampling", free[i], free[i + 1], settings.alpha))
    for i in range(n_cuts - 1):
        keep = semantically_different([r.similarity for r in free[i]], settings.similarity_threshold)
        different = [r for r, k in zip(free[i], keep) if k]
        out.append(_score(i, "counterfactual", different, free[i + 1], settings.alpha))
    if forced is not None:
        for i in range(n_cuts - 1):
            out.append(_score(i, "forced", forced[i], forced[i + 1], settings.alpha))
    return out


def answer_shares(rollouts: Sequence[Rollout]) -> list[tuple[Hashable, int]]:
    """(answer category, count) for the bars of one cut, most frequent first (ties: first seen)."""
    counts = Counter(_category(r.answer) for r in rollouts)
    return sorted(counts.items(), key=lambda kv: -kv[1])


def top_anchors(scores: Sequence[SentenceImportance], kind: str, k: int = 5) -> list[SentenceImportance]:
    """The k sentences with the largest finite KL of `kind`, largest first (ties: earlier sentence)."""
    if kind not in IMPORTANCE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(IMPORTANCE_KINDS)}, not {kind!r}")
    rows = [s for s in scores if s.kind == kind and math.isfinite(s.kl)]
    return sorted(rows, key=lambda s: (-s.kl, s.index))[:k]
