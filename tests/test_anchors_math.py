"""analysis/anchors.py against direct slow computations (docs/METHODS.md, Thought Anchors)."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest

from analysis.anchors import (
    NO_ANSWER,
    AnchorMath,
    Rollout,
    answer_kl,
    answer_shares,
    semantically_different,
    sentence_importance,
    top_anchors,
)


def slow_kl(p: list, q: list, alpha: float) -> float:
    """KL from the definition, with exact fractions for the smoothed probabilities."""
    cats = []
    for a in p + q:
        a = NO_ANSWER if a is None else a
        if a not in cats:
            cats.append(a)
    a = Fraction(alpha).limit_denominator(10**6)
    k = len(cats)

    def prob(xs, c):
        n = sum(1 for x in xs if (NO_ANSWER if x is None else x) == c)
        return (n + a) / (len(xs) + a * k)

    return sum(float(prob(p, c)) * math.log(float(prob(p, c)) / float(prob(q, c))) for c in cats)


@pytest.mark.parametrize("p,q,alpha", [
    (["43"] * 8, ["1", "2", "3", "4", "5", "6", "7", "8"], 1.0),
    (["a", "a", "b"], ["b", None, None, "c"], 0.5),
    ([None, None], [None], 1.0),
    (["x", "y"], ["y", "x"], 0.01),
    (["7"] * 3 + ["9"], ["9"] * 5, 2.0),
])
def test_kl_matches_direct_computation(p, q, alpha):
    assert answer_kl(p, q, alpha) == pytest.approx(slow_kl(p, q, alpha), rel=1e-9, abs=1e-12)


def test_kl_is_zero_for_equal_distributions_and_nan_for_an_empty_side():
    assert answer_kl(["a", "b"], ["b", "a"], 1.0) == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(answer_kl([], ["a"], 1.0))
    assert math.isnan(answer_kl(["a"], [], 1.0))


def test_smoothing_keeps_disjoint_supports_finite_and_larger_alpha_shrinks_it():
    strong = answer_kl(["a"] * 8, ["b"] * 8, 0.1)
    weak = answer_kl(["a"] * 8, ["b"] * 8, 1.0)
    assert math.isfinite(strong) and strong > weak > 0


def test_semantic_filter_matches_a_direct_threshold():
    sims = [0.95, 0.8, 0.79999, -0.2, math.nan, 0.5]
    assert semantically_different(sims, 0.8) == [s < 0.8 or math.isnan(s) for s in sims]


def _rollouts(answers, sims=None, correct=None):
    sims = sims or [math.nan] * len(answers)
    correct = correct or [None] * len(answers)
    return [Rollout(a, c, s) for a, c, s in zip(answers, correct, sims)]


def test_sentence_importance_against_direct_definitions():
    free = [
        _rollouts(["1", "2", "3", "4"], [0.1, 0.9, 0.2, 0.95], [False] * 4),  # cut 0
        _rollouts(["5", "43", "6", "7"], [0.3, 0.85, 0.99, 0.1], [False, True, False, False]),  # cut 1
        _rollouts(["43"] * 4, [0.9, 0.2, 0.3, 0.4], [True] * 4),  # cut 2
    ]
    forced = [_rollouts(["1", "1"]), _rollouts([None, "2"]), _rollouts(["43", "43"])]
    settings = AnchorMath(alpha=0.5, similarity_threshold=0.8)
    scores = sentence_importance(free, forced, settings)
    by = {(s.kind, s.index): s for s in scores}
    assert len(scores) == 6
    for i in range(2):
        after = [r.answer for r in free[i + 1]]
        assert by[("resampling", i)].kl == pytest.approx(slow_kl(after, [r.answer for r in free[i]], 0.5))
        kept = [r.answer for r in free[i] if not r.similarity >= 0.8]
        assert by[("counterfactual", i)].kl == pytest.approx(slow_kl(after, kept, 0.5))
        assert by[("counterfactual", i)].n_before == len(kept)
        assert by[("forced", i)].kl == pytest.approx(slow_kl([r.answer for r in forced[i + 1]],
                                                             [r.answer for r in forced[i]], 0.5))
    assert by[("resampling", 1)].accuracy_change == pytest.approx(1.0 - 0.25)
    # kept at cut 1: "5" and "7" (similarities 0.3 and 0.1), both wrong; "43" (0.85) was filtered out
    assert by[("counterfactual", 1)].accuracy_before == 0.0 and by[("counterfactual", 1)].n_before == 2
    direct = [slow_kl([r.answer for r in free[i + 1]], [r.answer for r in free[i]], 0.5) for i in range(2)]
    assert [s.index for s in top_anchors(scores, "resampling", 2)] == sorted(range(2), key=lambda i: -direct[i])


def test_counterfactual_is_nan_when_every_resample_is_similar():
    free = [_rollouts(["1", "2"], [0.9, 0.95]), _rollouts(["3", "3"])]
    cf = [s for s in sentence_importance(free, None) if s.kind == "counterfactual"][0]
    assert math.isnan(cf.kl) and cf.n_before == 0
    assert top_anchors([cf], "counterfactual") == []


def test_bad_input_gets_clear_messages():
    with pytest.raises(ValueError, match="two cuts"):
        sentence_importance([_rollouts(["1"])], None)
    with pytest.raises(ValueError, match="forced rollouts cover 1 cuts"):
        sentence_importance([_rollouts(["1"]), _rollouts(["2"])], [_rollouts(["1"])])
    with pytest.raises(ValueError, match="alpha"):
        AnchorMath(alpha=0)
    with pytest.raises(ValueError, match="cosine"):
        AnchorMath(similarity_threshold=2.0)
    with pytest.raises(ValueError, match="kind must be"):
        top_anchors([], "nope")


def test_answer_shares_counts_no_answer_apart():
    assert answer_shares(_rollouts(["a", None, "a", "b"])) == [("a", 2), (NO_ANSWER, 1), ("b", 1)]
