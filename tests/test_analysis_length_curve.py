"""Accuracy against thinking length (analysis/length_curve.py)."""
from __future__ import annotations

import random

import pytest

from analysis.length_curve import (
    CurvePoint,
    LengthCurveSettings,
    LengthSample,
    best_point,
    budget_curve,
    decline_point,
    length_samples,
    quantile_curve,
)
from analysis.run_metrics import wilson_interval

T, F = True, False


def _budget_samples():
    rows = [
        # (tokens, correct, budget)
        (90, T, 100), (100, T, 100), (100, F, 100), (80, T, 100),
        (150, T, 200), (200, T, 200),
        (300, F, 400), (400, F, 400), (390, F, 400), (350, T, 400),
        (500, T, None),
        (95, None, 100), (410, None, 400),
    ]
    return length_samples([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def test_budget_curve_points():
    curve = budget_curve(_budget_samples())
    assert curve.mode == "budget"
    assert [p.label for p in curve.points] == ["budget 100", "budget 200", "budget 400", "no budget"]
    assert [p.budget for p in curve.points] == [100, 200, 400, None]
    assert [(p.n, p.n_correct) for p in curve.points] == [(4, 3), (2, 2), (4, 1), (1, 1)]
    assert [p.accuracy for p in curve.points] == [0.75, 1.0, 0.25, 1.0]
    assert [p.mean_tokens for p in curve.points] == [92.5, 175.0, 360.0, 500.0]
    assert (curve.points[0].min_tokens, curve.points[0].max_tokens) == (80, 100)
    assert curve.points[0].sample_ids == (0, 1, 2, 3)
    assert (curve.n_unknown, curve.unknown_ids) == (2, (11, 12))
    assert (curve.points[1].ci_low, curve.points[1].ci_high) == pytest.approx(wilson_interval(2, 2))
    assert curve.points[1].ci_low == pytest.approx(0.3424, abs=1e-4)


def test_budget_curve_best_and_decline():
    curve = budget_curve(_budget_samples())
    # 1.0 twice: the cheaper point (175 tokens) is the best; 0.25 at 360 tokens < 0.342
    assert curve.best.label == "budget 200"
    assert curve.decline.label == "budget 400"


def _pt(acc: float, n: int, tokens: float) -> CurvePoint:
    k = round(acc * n)
    lo, hi = wilson_interval(k, n)
    return CurvePoint(f"{tokens}", tokens, int(tokens), int(tokens), n, k, k / n, lo, hi, ())


def test_decline_needs_a_drop_below_the_best_lower_bound():
    # best 0.8 of 100 (lower bound ~0.711): 0.75 is noise, 0.6 is a decline
    pts = [_pt(0.5, 100, 100), _pt(0.8, 100, 200), _pt(0.75, 100, 300), _pt(0.6, 100, 400)]
    assert best_point(pts).mean_tokens == 200
    assert decline_point(pts).mean_tokens == 400
    # a drop *before* the best is not a decline; nothing after it drops
    assert decline_point([_pt(0.1, 100, 100), _pt(0.8, 100, 200), _pt(0.78, 100, 300)]) is None
    # order of the input does not matter: "after" means longer
    assert decline_point(list(reversed(pts))).mean_tokens == 400
    assert best_point([]) is None and decline_point([]) is None


def test_quantile_curve_equal_count_bins():
    samples = length_samples(
        list(range(1, 11)), [T, T, T, T, F, F, F, T, F, F], ids=list("abcdefghij")
    )
    curve = quantile_curve(samples, LengthCurveSettings(n_bins=2))
    assert curve.mode == "quantile"
    assert [p.label for p in curve.points] == ["1-5 tokens", "6-10 tokens"]
    assert [p.accuracy for p in curve.points] == [0.8, 0.2]
    assert [p.sample_ids for p in curve.points] == [tuple("abcde"), tuple("fghij")]
    assert [p.mean_tokens for p in curve.points] == [3.0, 8.0]
    assert curve.best.label == "1-5 tokens"
    assert curve.decline.label == "6-10 tokens"  # 0.2 < wilson(4, 5) lower bound 0.376


def test_quantile_curve_keeps_ties_together_and_drops_empty_bins():
    samples = length_samples([5, 5, 5, 10, 20], [T, F, T, T, T])
    curve = quantile_curve(samples, LengthCurveSettings(n_bins=2))
    assert [p.sample_ids for p in curve.points] == [(0, 1, 2), (3, 4)]
    curve = quantile_curve(length_samples([5, 5, 5, 5, 10], [T] * 5), LengthCurveSettings(n_bins=4))
    assert [p.sample_ids for p in curve.points] == [(0, 1, 2, 3), (4,)]
    one = quantile_curve(length_samples([7, 7, 7], [T, F, T]), LengthCurveSettings(n_bins=5))
    assert len(one.points) == 1 and one.points[0].n == 3


def test_quantile_curve_bins_are_balanced_and_ordered():
    rng = random.Random(0)
    n = 103
    samples = length_samples([rng.randrange(10_000) for _ in range(n)], [rng.random() < 0.5 for _ in range(n)])
    curve = quantile_curve(samples)
    sizes = [p.n for p in curve.points]
    assert len(sizes) == 5 and sum(sizes) == n and max(sizes) - min(sizes) <= 2
    for a, b in zip(curve.points, curve.points[1:]):
        assert a.max_tokens <= b.min_tokens
    assert sorted(i for p in curve.points for i in p.sample_ids) == list(range(n))


def test_unknown_correctness_is_excluded_and_counted():
    samples = length_samples([10, 20, 30], [None, None, None])
    for curve in (quantile_curve(samples), budget_curve(samples)):
        assert curve.points == () and curve.n_unknown == 3 and curve.unknown_ids == (0, 1, 2)
        assert curve.best is None and curve.decline is None


def test_settings_and_inputs_validate():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            LengthCurveSettings(n_bins=bad)
    with pytest.raises(ValueError):
        LengthCurveSettings(z=0)
    with pytest.raises(ValueError):
        LengthSample(0, -5, True)
    with pytest.raises(ValueError):
        length_samples([1, 2], [T])
