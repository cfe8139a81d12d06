"""Reviewer agreement: textbook kappa values and a slow, direct reference computation."""
import math
import random

import pytest

from analysis.agreement import VERDICTS, cohen_kappa, pairwise_agreement, percent_agreement, trace_agrees


def _from_table(table: dict[tuple[str, str], int]) -> tuple[list[str], list[str]]:
    a, b = [], []
    for (x, y), n in table.items():
        a += [x] * n
        b += [y] * n
    return a, b


def _reference_kappa(a, b) -> float:
    """kappa from its definition, the chance term as the share of agreeing (i, j) pairs over all n^2."""
    n = len(a)
    p_o = sum(1 for i in range(n) if a[i] == b[i]) / n
    p_e = sum(1 for i in range(n) for j in range(n) if a[i] == b[j]) / (n * n)
    return math.nan if p_e == 1 else (p_o - p_e) / (1 - p_e)


@pytest.mark.parametrize(
    "table, p_o, kappa",
    [
        # Wikipedia, "Cohen's kappa", simple example: 50 grant proposals, p_o = 0.7, p_e = 0.5.
        ({("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15}, 70.0, 0.4),
        # Wikipedia, same agreement with different kappas: 0.1304 and 0.2593 at p_o = 0.6.
        ({("yes", "yes"): 45, ("yes", "no"): 15, ("no", "yes"): 25, ("no", "no"): 15}, 60.0, 0.1304),
        ({("yes", "yes"): 25, ("yes", "no"): 35, ("no", "yes"): 5, ("no", "no"): 35}, 60.0, 0.2593),
    ],
)
def test_textbook_values(table, p_o, kappa):
    a, b = _from_table(table)
    assert percent_agreement(a, b) == pytest.approx(p_o)
    assert cohen_kappa(a, b) == pytest.approx(kappa, abs=5e-5)


def test_perfect_and_chance_level_agreement():
    a = ["correct", "looping", "incorrect", "correct"]
    assert cohen_kappa(a, a) == 1.0
    # Reviewer b says the opposite label every time on a balanced 2-category set: kappa = -1.
    assert cohen_kappa(["x", "y"] * 5, ["y", "x"] * 5) == pytest.approx(-1.0)


def test_undefined_cases_are_nan():
    assert math.isnan(cohen_kappa([], []))
    assert math.isnan(percent_agreement([], []))
    assert math.isnan(cohen_kappa(["correct"] * 4, ["correct"] * 4))  # p_e = 1
    with pytest.raises(ValueError, match="pair up"):
        cohen_kappa(["a"], [])


def test_matches_the_direct_reference_on_random_verdicts():
    rng = random.Random(7)
    for trial in range(200):
        n = rng.randint(1, 40)
        cats = VERDICTS[: rng.randint(1, len(VERDICTS))]
        a = [rng.choice(cats) for _ in range(n)]
        # Correlated second reviewer: copies a with some probability.
        b = [x if rng.random() < 0.6 else rng.choice(cats) for x in a]
        expected = _reference_kappa(a, b)
        got = cohen_kappa(a, b)
        if math.isnan(expected):
            assert math.isnan(got), (a, b)
        else:
            assert got == pytest.approx(expected, abs=1e-12), (a, b)


def test_pairwise_agreement_over_traces():
    verdicts = {
        1: {"alice": "correct", "bob": "correct"},
        2: {"alice": "looping", "bob": "correct", "carol": "looping"},
        3: {"alice": "incorrect"},  # one reviewer: no comparison
        4: {"bob": "incorrect", "carol": "incorrect"},
    }
    overall = pairwise_agreement(verdicts)
    assert overall.n_traces == 3
    by_pair = {(p.reviewer_a, p.reviewer_b): p for p in overall.pairs}
    assert set(by_pair) == {("alice", "bob"), ("alice", "carol"), ("bob", "carol")}
    ab = by_pair[("alice", "bob")]
    assert (ab.n_shared, ab.n_agree, ab.percent) == (2, 1, 50.0)
    assert ab.kappa == pytest.approx(cohen_kappa(["correct", "looping"], ["correct", "correct"]))
    assert (by_pair[("alice", "carol")].n_shared, by_pair[("alice", "carol")].n_agree) == (1, 1)
    # Pooled: 1/1 on trace 1, 1 of 3 pairs on trace 2, 1/1 on trace 4 -> 3 of 5.
    assert overall.n_pairs == 5 and overall.percent == pytest.approx(60.0)
    defined = [p.kappa for p in overall.pairs if not math.isnan(p.kappa)]
    assert overall.mean_kappa == pytest.approx(sum(defined) / len(defined))
    assert trace_agrees(verdicts[1]) is True and trace_agrees(verdicts[2]) is False and trace_agrees(verdicts[3]) is None


def test_no_shared_traces_gives_nan():
    overall = pairwise_agreement({1: {"alice": "correct"}, 2: {"bob": "looping"}})
    assert overall.pairs == () and overall.n_pairs == 0
    assert math.isnan(overall.percent) and math.isnan(overall.mean_kappa)
