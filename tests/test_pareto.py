"""The Pareto front against a brute-force O(n^2) reference, ties and missing values included."""
import math
import random

import pytest

from analysis.pareto import pareto_front


def brute_force(acc, tok):
    usable = [i for i in range(len(acc)) if acc[i] is not None and tok[i] is not None
              and math.isfinite(acc[i]) and math.isfinite(tok[i])]
    front = []
    for i in usable:
        dominated = any(acc[j] >= acc[i] and tok[j] <= tok[i] and (acc[j] > acc[i] or tok[j] < tok[i])
                        for j in usable)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (tok[i], i))


@pytest.mark.parametrize("seed", range(200))
def test_matches_brute_force_on_random_points_with_ties(seed):
    rng = random.Random(seed)
    n = rng.randint(0, 12)
    # Small integer grids make equal accuracies, equal token counts and identical points common.
    acc = [rng.randint(0, 4) / 4 for _ in range(n)]
    tok = [float(rng.randint(1, 6) * 100) for _ in range(n)]
    for i in range(n):
        if rng.random() < 0.1:
            (acc if rng.random() < 0.5 else tok)[i] = rng.choice([None, math.nan, math.inf])
    assert pareto_front(acc, tok) == brute_force(acc, tok)


def test_worked_example():
    # A: cheap and weak, B: dominated by C, C: accurate and mid-priced, D: no better than C but dearer.
    acc = [0.4, 0.5, 0.8, 0.8]
    tok = [100, 300, 200, 400]
    assert pareto_front(acc, tok) == [0, 2]


def test_identical_points_both_stay_and_bad_input_is_refused():
    assert pareto_front([0.5, 0.5], [10, 10]) == [0, 1]
    assert pareto_front([], []) == []
    with pytest.raises(ValueError, match="one token count per accuracy"):
        pareto_front([0.5], [])
