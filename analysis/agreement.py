"""Agreement between reviewers on trace verdicts: percent agreement and Cohen's kappa.

Cohen's kappa corrects the observed agreement p_o for the agreement p_e two reviewers would reach
by chance if each kept their own verdict frequencies: kappa = (p_o - p_e) / (1 - p_e). It is
defined for two reviewers; with more, each pair that shares traces gets its own kappa and the
overall figure is their mean (Light's kappa, Light 1971), weighted by nothing.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

# What a reviewer can say about a whole trace.
VERDICTS = ("correct", "incorrect", "overthought", "underthought", "looping")


@dataclass(frozen=True)
class PairAgreement:
    """Two reviewers over the traces both gave a verdict on."""

    reviewer_a: str
    reviewer_b: str
    n_shared: int
    n_agree: int
    percent: float  # 0..100; NaN when n_shared == 0
    kappa: float  # NaN when undefined (no shared traces, or chance agreement is certain)


@dataclass(frozen=True)
class OverallAgreement:
    pairs: tuple[PairAgreement, ...]
    n_traces: int  # traces with verdicts from at least two reviewers
    n_pairs: int  # (trace, reviewer pair) comparisons pooled into `percent`
    percent: float  # pooled over every comparison; NaN when there is none
    mean_kappa: float  # Light's kappa: mean of the defined pairwise kappas; NaN when none is


def percent_agreement(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Share of positions where a and b hold the same verdict, in percent; NaN for empty input."""
    _check_paired(a, b)
    if not a:
        return math.nan
    return 100.0 * sum(x == y for x, y in zip(a, b)) / len(a)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two reviewers' verdicts on the same items (a[i] and b[i] rate item i).

    NaN when undefined: no items, or both reviewers gave one and the same verdict to everything
    (p_e = 1, so any agreement is already expected by chance).
    """
    _check_paired(a, b)
    n = len(a)
    if n == 0:
        return math.nan
    p_o = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    p_e = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if p_e >= 1.0:
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


def pairwise_agreement(verdicts: Mapping[int, Mapping[str, str]]) -> OverallAgreement:
    """Agreement from {trace_id: {reviewer: verdict}} (only traces with >= 2 reviewers count)."""
    shared: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    n_traces = 0
    for by_reviewer in verdicts.values():
        if len(by_reviewer) < 2:
            continue
        n_traces += 1
        for ra, rb in combinations(sorted(by_reviewer), 2):
            xs, ys = shared.setdefault((ra, rb), ([], []))
            xs.append(by_reviewer[ra])
            ys.append(by_reviewer[rb])
    pairs = tuple(
        PairAgreement(ra, rb, len(xs), sum(x == y for x, y in zip(xs, ys)), percent_agreement(xs, ys), cohen_kappa(xs, ys))
        for (ra, rb), (xs, ys) in sorted(shared.items())
    )
    n_pairs = sum(p.n_shared for p in pairs)
    percent = 100.0 * sum(p.n_agree for p in pairs) / n_pairs if n_pairs else math.nan
    kappas = [p.kappa for p in pairs if not math.isnan(p.kappa)]
    mean_kappa = sum(kappas) / len(kappas) if kappas else math.nan
    return OverallAgreement(pairs, n_traces, n_pairs, percent, mean_kappa)


def trace_agrees(by_reviewer: Mapping[str, str]) -> bool | None:
    """Whether every reviewer of one trace gave the same verdict; None with fewer than two."""
    if len(by_reviewer) < 2:
        return None
    return len(set(by_reviewer.values())) == 1


def _check_paired(a: Sequence[Hashable], b: Sequence[Hashable]) -> None:
    if len(a) != len(b):
        raise ValueError(f"verdict lists must pair up item by item: {len(a)} vs {len(b)}")
