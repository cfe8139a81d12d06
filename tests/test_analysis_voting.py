"""Selection rules without a reward model (analysis/voting.py)."""
from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from analysis.voting import (
    Vote,
    best_of_majority,
    best_of_n,
    borda_vote,
    confidence_weighted_vote,
    deepconf_online_threshold,
    majority_vote,
    weighted_best_of_n,
)

NAN = float("nan")


def test_majority_groups_canonical_forms_by_value():
    v = majority_vote(["17", "17.0", "18", "3/4", "0.75", "\\frac{3}{4}", None])
    assert v.winner == "3/4"
    assert v.tally == {"17": 2.0, "18": 1.0, "3/4": 3.0}
    assert v.chosen_index == 3
    assert v.rule == "majority"
    assert v.used_indices == (0, 1, 2, 3, 4, 5)


def test_majority_tie_goes_to_first_occurrence():
    assert majority_vote(["5", "6", "6", "5"]).winner == "5"
    assert majority_vote(["6", "5", "5", "6"]).winner == "6"
    v = majority_vote([None, "b", "a", "a", "b"])
    assert (v.winner, v.chosen_index) == ("b", 1)


def test_majority_with_no_answers():
    v = majority_vote([None, None])
    assert (v.winner, v.tally, v.chosen_index) == (None, {}, None)
    assert v.note
    assert majority_vote([]).winner is None


def _brute_majority(answers):
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def test_majority_matches_brute_force():
    rng = random.Random(0)
    for _ in range(300):
        answers = [rng.choice(["1", "2", "3", "x", None]) for _ in range(rng.randint(0, 9))]
        assert majority_vote(answers).winner == _brute_majority(answers)


def test_borda_hand_checked():
    answers = ["a", "b", "b", "c"]
    scores = [0.9, 0.5, 0.4, 0.8]
    # ranks: 0 -> 1, 3 -> 2, 1 -> 3, 2 -> 4 ; rank r adds (4 - r + 1)^p
    v = borda_vote(answers, scores, p=0.5)
    assert v.tally == pytest.approx({"a": 2.0, "b": math.sqrt(2) + 1.0, "c": math.sqrt(3)})
    assert (v.winner, v.chosen_index, v.rule) == ("b", 1, "borda(p=0.5)")
    assert borda_vote(answers, scores, p=1.0).tally == {"a": 4.0, "b": 3.0, "c": 3.0}
    assert borda_vote(answers, scores, p=1.0).winner == "a"


def test_borda_p0_is_majority():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 8)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        scores = [rng.random() for _ in range(n)]
        b, m = borda_vote(answers, scores, p=0.0), majority_vote(answers)
        assert b.winner == m.winner and b.tally == m.tally


def _brute_borda(answers, scores, p):
    """Plain Borda averaged over every order of the scored samples that respects the scores. All N
    scored samples hold ranks, as the definition ranks all N; unanswered ones give no points."""
    ranked = [i for i in range(len(answers)) if not math.isnan(scores[i])]
    n = len(ranked)
    total: dict[str, float] = {}
    orders = [o for o in itertools.permutations(ranked) if all(scores[o[k]] >= scores[o[k + 1]] for k in range(n - 1))]
    for order in orders:
        for r, i in enumerate(order, start=1):
            if answers[i] is not None:
                total[answers[i]] = total.get(answers[i], 0.0) + (n - r + 1) ** p / len(orders)
    return total


def test_borda_matches_brute_force_with_ties():
    rng = random.Random(2)
    for _ in range(150):
        n = rng.randint(1, 6)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        scores = [rng.choice([0.1, 0.2, 0.3, NAN]) for _ in range(n)]  # many ties
        p = rng.choice([0.0, 0.5, 1.0, 2.0])
        assert borda_vote(answers, scores, p).tally == pytest.approx(_brute_borda(answers, scores, p))


def test_borda_validates():
    with pytest.raises(ValueError):
        borda_vote(["a"], [1.0], p=-1)
    with pytest.raises(ValueError):
        borda_vote(["a", "b"], [1.0])
    v = borda_vote(["a", "b", "b"], [math.inf, 1.0, 0.5], p=1.0)  # an infinite score is ranked, not refused
    assert v.tally == {"a": 3.0, "b": 3.0} and v.winner == "a" and v.tie == ("a", "b")


def test_best_of_n_ignores_missing_answers_and_scores():
    v = best_of_n(["a", None, "b", "c"], [0.1, 0.9, 0.5, NAN])
    assert (v.winner, v.chosen_index) == ("b", 2)
    assert v.tally == {"a": 0.1, "b": 0.5}
    assert best_of_n(["a", "b"], [0.5, 0.5]).chosen_index == 0  # tie: the earlier sample
    assert best_of_n([None], [1.0]).winner is None


def test_weighted_best_of_n_sums_scores():
    v = weighted_best_of_n(["a", "b", "b"], [0.9, 0.5, 0.5])
    assert (v.winner, v.chosen_index) == ("b", 1)
    assert v.tally == {"a": 0.9, "b": 1.0}
    assert best_of_n(["a", "b", "b"], [0.9, 0.5, 0.5]).winner == "a"


def test_best_of_majority_hand_checked():
    answers = ["a", "a", "b", "c", "c", None]
    scores = [0.1, 0.2, 0.9, 0.3, 0.4, 0.99]
    v = best_of_majority(answers, scores, alpha=0.3)
    # shares over all 6 samples, the unanswered one included
    assert v.tally == pytest.approx({"a": 2 / 6, "b": 1 / 6, "c": 2 / 6})
    assert (v.winner, v.chosen_index) == ("c", 4)
    assert "a, c" in v.note
    assert best_of_majority(answers, scores, alpha=1 / 3).winner == "c"  # exactly 2/6 is kept
    assert best_of_majority(answers, scores, alpha=0.5).winner is None


def test_best_of_majority_alpha0_is_best_of_n():
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 8)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        scores = [rng.random() for _ in range(n)]
        a, b = best_of_majority(answers, scores, 0.0), best_of_n(answers, scores)
        assert (a.winner, a.chosen_index) == (b.winner, b.chosen_index)
    with pytest.raises(ValueError):
        best_of_majority(["a"], [1.0], alpha=1.5)


def test_confidence_weighted_vote_hand_checked():
    answers = ["a", "b", "b", "a", "c"]
    conf = [10.0, 6.0, 7.0, 1.0, 9.0]
    v = confidence_weighted_vote(answers, conf, keep_top_percent=60)
    assert v.tally == {"a": 10.0, "b": 7.0, "c": 9.0}  # kept samples 0, 4, 2
    assert (v.winner, v.chosen_index, v.used_indices) == ("a", 0, (0, 2, 4))
    full = confidence_weighted_vote(answers, conf, keep_top_percent=100)
    assert full.tally == {"a": 11.0, "b": 13.0, "c": 9.0}
    assert (full.winner, full.chosen_index) == ("b", 2)
    assert confidence_weighted_vote(answers, conf, keep_top_percent=10).winner == "a"  # at least one kept


def test_confidence_weighted_vote_drops_unanswered_traces_first():
    # as the DeepConf reference: the most confident trace has no answer, so it is dropped before
    # the top eta% is taken, and cannot use up a slot
    v = confidence_weighted_vote([None, "a", "b"], [9.0, 5.0, 1.0], keep_top_percent=33)
    assert v.winner == "a" and v.used_indices == (1,)
    assert "1 without an answer" in v.note
    assert confidence_weighted_vote([None, None], [1.0, 2.0], 50).winner is None
    with pytest.raises(ValueError):
        confidence_weighted_vote(["a"], [1.0], keep_top_percent=0)


def test_deepconf_online_threshold():
    warm = [float(x) for x in range(1, 11)]
    assert deepconf_online_threshold(warm, 10) == pytest.approx(9.1)
    assert deepconf_online_threshold(warm, 90) == pytest.approx(1.9)
    assert deepconf_online_threshold([3.0], 50) == 3.0
    with pytest.raises(ValueError):
        deepconf_online_threshold([], 10)
    with pytest.raises(ValueError):
        deepconf_online_threshold([1.0, NAN], 10)
    with pytest.raises(ValueError):
        deepconf_online_threshold([1.0], 0)


def test_vote_is_frozen():
    v = majority_vote(["1"])
    assert isinstance(v, Vote)
    with pytest.raises(Exception):
        v.winner = "2"
