"""Accuracy against thinking length, to show (or fail to show) the overthinking inverted U.

Two ways to get the x axis (docs/METHODS.md §6): controlled budgets (one point per budget) or
free-running samples binned by length quantiles. Each point carries a Wilson interval and the ids
of the samples behind it, so the UI can open them. Samples of unknown correctness (no reference)
cannot be placed on an accuracy axis: they are left out and counted on the curve. Samples that did
not finish (stopped, failed) are ungraded too and counted apart as "not finished" (docs/METHODS.md §6).
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from analysis.run_metrics import wilson_interval

__all__ = [
    "CurvePoint",
    "LengthCurve",
    "LengthCurveSettings",
    "LengthSample",
    "best_point",
    "budget_curve",
    "decline_point",
    "length_samples",
    "quantile_curve",
]


@dataclass(frozen=True)
class LengthCurveSettings:
    n_bins: int = 5  # quantile bins for free-running samples (the DTR paper uses 5)
    z: float = 1.96  # Wilson interval width; 1.96 is 95%

    def __post_init__(self) -> None:
        if not isinstance(self.n_bins, int) or isinstance(self.n_bins, bool) or self.n_bins < 1:
            raise ValueError(f"LengthCurveSettings.n_bins must be an int >= 1, got {self.n_bins!r}")
        if not isinstance(self.z, (int, float)) or not math.isfinite(self.z) or self.z <= 0:
            raise ValueError(f"LengthCurveSettings.z must be a positive number, got {self.z!r}")


DEFAULT_SETTINGS = LengthCurveSettings()


@dataclass(frozen=True)
class LengthSample:
    sample_id: Hashable  # what the UI uses to open the sample (row index, trace id)
    n_thinking_tokens: int
    correct: bool | None
    budget: int | None = None  # thinking budget it ran under; None: free-running
    finished: bool = True  # False: stopped or failed; never on the accuracy axis, whatever `correct` says

    def __post_init__(self) -> None:
        if self.n_thinking_tokens < 0:
            raise ValueError(f"n_thinking_tokens must be >= 0, got {self.n_thinking_tokens}")


def length_samples(
    n_thinking_tokens: Sequence[int],
    correct: Sequence[bool | None],
    budgets: Sequence[int | None] | None = None,
    ids: Sequence[Hashable] | None = None,
    finished: Sequence[bool] | None = None,
) -> list[LengthSample]:
    """Parallel columns to samples; ids default to row positions, finished to all True."""
    n = len(n_thinking_tokens)
    if len(correct) != n or any(c is not None and len(c) != n for c in (budgets, ids, finished)):
        raise ValueError("length_samples needs columns of equal length")
    return [
        LengthSample(
            ids[i] if ids is not None else i,
            int(n_thinking_tokens[i]),
            None if correct[i] is None else bool(correct[i]),
            budgets[i] if budgets is not None else None,
            bool(finished[i]) if finished is not None else True,
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class CurvePoint:
    label: str
    mean_tokens: float  # x: mean thinking tokens of the graded samples here
    min_tokens: int
    max_tokens: int
    n: int  # graded samples
    n_correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    sample_ids: tuple[Hashable, ...]
    budget: int | None = None  # set on budget curves


def best_point(points: Sequence[CurvePoint]) -> CurvePoint | None:
    """Highest accuracy; among equals the one with fewer tokens (the cheaper way to get there)."""
    if not points:
        return None
    return min(points, key=lambda p: (-p.accuracy, p.mean_tokens))


def decline_point(points: Sequence[CurvePoint]) -> CurvePoint | None:
    """The first point longer than the best whose accuracy falls below the best's Wilson lower
    bound: evidence of a decline past the best length, not just noise. None when there is none."""
    best = best_point(points)
    if best is None:
        return None
    later = sorted((p for p in points if p.mean_tokens > best.mean_tokens), key=lambda p: p.mean_tokens)
    return next((p for p in later if p.accuracy < best.ci_low), None)


@dataclass(frozen=True)
class LengthCurve:
    mode: str  # "budget" or "quantile"
    points: tuple[CurvePoint, ...]  # in order of the x axis
    n_unknown: int  # finished samples left out for unknown correctness (no reference)
    unknown_ids: tuple[Hashable, ...]
    n_not_finished: int = 0  # samples left out because they did not finish (counted apart)
    not_finished_ids: tuple[Hashable, ...] = ()

    @property
    def best(self) -> CurvePoint | None:
        return best_point(self.points)

    @property
    def decline(self) -> CurvePoint | None:
        return decline_point(self.points)


def _point(label: str, members: Sequence[LengthSample], z: float, budget: int | None = None) -> CurvePoint:
    tokens = [s.n_thinking_tokens for s in members]
    k = sum(1 for s in members if s.correct)
    lo, hi = wilson_interval(k, len(members), z)
    return CurvePoint(
        label=label,
        mean_tokens=sum(tokens) / len(tokens),
        min_tokens=min(tokens),
        max_tokens=max(tokens),
        n=len(members),
        n_correct=k,
        accuracy=k / len(members),
        ci_low=lo,
        ci_high=hi,
        sample_ids=tuple(s.sample_id for s in members),
        budget=budget,
    )


def _split_unknown(
    samples: Sequence[LengthSample],
) -> tuple[list[LengthSample], tuple[Hashable, ...], tuple[Hashable, ...]]:
    """(graded finished samples, ids of finished ungraded ones, ids of not-finished ones)."""
    graded = [s for s in samples if s.finished and s.correct is not None]
    unknown = tuple(s.sample_id for s in samples if s.finished and s.correct is None)
    return graded, unknown, tuple(s.sample_id for s in samples if not s.finished)


def budget_curve(samples: Sequence[LengthSample], settings: LengthCurveSettings = DEFAULT_SETTINGS) -> LengthCurve:
    """One point per thinking budget, in budget order; free-running samples (budget None) form a
    last "no budget" point. x is the mean tokens actually spent, which can sit well below the budget."""
    graded, unknown, unfinished = _split_unknown(samples)
    groups: dict[int | None, list[LengthSample]] = {}
    for s in graded:
        groups.setdefault(s.budget, []).append(s)
    order = sorted(groups, key=lambda b: (b is None, b or 0))
    points = tuple(
        _point("no budget" if b is None else f"budget {b}", groups[b], settings.z, budget=b) for b in order
    )
    return LengthCurve("budget", points, len(unknown), unknown, len(unfinished), unfinished)


def quantile_curve(samples: Sequence[LengthSample], settings: LengthCurveSettings = DEFAULT_SETTINGS) -> LengthCurve:
    """Graded samples in n_bins equal-count bins by thinking length (quantile bins).

    A sample's bin is floor(r * n_bins / N), r = how many graded samples are strictly shorter, so
    equal lengths always share a bin: heavy ties give fewer, uneven bins rather than splitting
    identical samples across points. Empty bins are dropped.
    """
    graded, unknown, unfinished = _split_unknown(samples)
    if not graded:
        return LengthCurve("quantile", (), len(unknown), unknown, len(unfinished), unfinished)
    lengths = np.array([s.n_thinking_tokens for s in graded], dtype=np.int64)
    shorter = np.searchsorted(np.sort(lengths), lengths, side="left")
    which = np.minimum(shorter * settings.n_bins // len(graded), settings.n_bins - 1)
    points = []
    for b in range(settings.n_bins):
        members = [s for s, w in zip(graded, which) if w == b]
        if members:
            lo = min(s.n_thinking_tokens for s in members)
            hi = max(s.n_thinking_tokens for s in members)
            points.append(_point(f"{lo}-{hi} tokens", members, settings.z))
    return LengthCurve("quantile", tuple(points), len(unknown), unknown, len(unfinished), unfinished)
