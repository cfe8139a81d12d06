"""analysis/budget_oracle.py against brute force over every per-prompt choice on small sets."""
import itertools

import numpy as np
import pytest

from analysis.budget_oracle import (OracleSettings, exact_frontier, fixed_points, frontier_accuracy_at,
                                    lagrangian_at, lagrangian_frontier, tokens_saved)


def _brute(acc, cost):
    """All (mean cost, mean accuracy) of every choice, and the Pareto set by direct comparison."""
    n_p, n_b = acc.shape
    every = []
    for choice in itertools.product(range(n_b), repeat=n_p):
        idx = np.arange(n_p), np.array(choice)
        every.append((cost[idx].mean(), acc[idx].mean()))
    pareto = {(round(c, 9), round(a, 9)) for c, a in every
              if not any((c2 <= c and a2 > a + 1e-12) or (c2 < c - 1e-12 and a2 >= a) for c2, a2 in every)}
    return every, pareto


def _random_sweep(rng, n_p, n_b, samples=4):
    acc = rng.integers(0, samples + 1, (n_p, n_b)) / samples
    cost = np.sort(rng.uniform(5, 300, (n_p, n_b)), axis=1)  # more budget, more tokens
    return acc, cost


@pytest.mark.parametrize("seed", range(12))
def test_exact_frontier_is_the_brute_force_pareto_set(seed):
    rng = np.random.default_rng(seed)
    acc, cost = _random_sweep(rng, int(rng.integers(1, 6)), int(rng.integers(1, 5)))
    every, pareto = _brute(acc, cost)
    got = {(round(q.mean_cost, 9), round(q.mean_accuracy, 9)) for q in exact_frontier(acc, cost)}
    assert got == pareto
    for q in exact_frontier(acc, cost):  # the stated choice gives the stated point
        idx = np.arange(acc.shape[0]), np.array(q.choice)
        assert cost[idx].mean() == pytest.approx(q.mean_cost) and acc[idx].mean() == pytest.approx(q.mean_accuracy)
    # at any mean budget the frontier is the best any choice does within it
    for budget in np.linspace(cost.min(), cost.max(), 9):
        best = max((a for c, a in every if c <= budget + 1e-9), default=None)
        assert frontier_accuracy_at(exact_frontier(acc, cost), budget) == (pytest.approx(best) if best is not None else None)


@pytest.mark.parametrize("seed", range(12))
def test_lagrangian_vertices_agree_with_the_exact_knapsack(seed):
    rng = np.random.default_rng(100 + seed)
    acc, cost = _random_sweep(rng, int(rng.integers(1, 6)), int(rng.integers(2, 5)))
    exact = exact_frontier(acc, cost)
    hull = lagrangian_frontier(acc, cost)
    for vertex in hull:  # a Lagrangian solution is optimal at its own cost
        assert frontier_accuracy_at(exact, vertex.mean_cost) == pytest.approx(vertex.mean_accuracy)
    # the hull is concave: slopes decrease
    slopes = [(b.mean_accuracy - a.mean_accuracy) / (b.mean_cost - a.mean_cost) for a, b in zip(hull, hull[1:])]
    assert all(s1 >= s2 - 1e-9 for s1, s2 in zip(slopes, slopes[1:]))
    # completed between vertices: feasible, never above the exact frontier, never below the vertex under it
    for budget in np.linspace(hull[0].mean_cost, cost.max(), 7):
        point = lagrangian_at(acc, cost, budget)
        assert point.mean_cost <= budget + 1e-9
        assert point.mean_accuracy <= frontier_accuracy_at(exact, budget) + 1e-12
        assert point.mean_accuracy >= frontier_accuracy_at(hull, budget) - 1e-12


def test_frontier_is_at_least_every_fixed_budget_at_its_mean_cost():
    acc, cost = _random_sweep(np.random.default_rng(7), 8, 4)
    exact = exact_frontier(acc, cost)
    for fixed in fixed_points(acc, cost):
        assert frontier_accuracy_at(exact, fixed.mean_cost) >= fixed.mean_accuracy - 1e-12


def test_tokens_saved_on_a_hand_computed_case():
    # Prompt 0 is easy (right at every budget), prompt 1 needs the big budget.
    acc = np.array([[1.0, 1.0], [0.0, 1.0]])
    cost = np.array([[10.0, 100.0], [10.0, 100.0]])
    s = tokens_saved(acc, cost, OracleSettings(n_bootstrap=0))
    assert s.best_fixed_index == 1 and s.best_fixed_accuracy == 1.0 and s.best_fixed_cost == 100.0
    assert s.oracle_cost == 55.0 and s.saved_tokens == 45.0 and s.saved_fraction == pytest.approx(0.45)
    assert s.interval is None
    boot = tokens_saved(acc, cost, OracleSettings(n_bootstrap=200, seed=1))
    low, high = boot.interval
    assert 0.0 <= low <= 0.45 <= high <= 0.9  # resamples of [easy, hard] save between 0% and 90%


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="shape"):
        exact_frontier(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        exact_frontier(np.array([[np.nan]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match="no choice fits"):
        lagrangian_at(np.array([[1.0]]), np.array([[50.0]]), 10.0)
    with pytest.raises(ValueError, match="n_bootstrap"):
        OracleSettings(n_bootstrap=-1)


def test_probe_mapping_picks_each_bins_best_budget_by_direct_computation():
    from analysis.budget_oracle import budget_for, fit_probe_mapping

    # Four calibration prompts: the two least confident need the big budget, the two most do not.
    conf = [0.9, 0.1, 0.8, 0.2]
    acc = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.5], [0.0, 1.0]])
    cost = np.array([[10.0, 90.0], [10.0, 95.0], [12.0, 80.0], [11.0, 99.0]])
    mapping = fit_probe_mapping(conf, acc, cost, (16, 128), n_bins=2)
    # direct: low bin = prompts 1, 3 -> budget 128 best (1.0 vs 0.0); high bin = prompts 0, 2 -> 16 (1.0 vs 0.75)
    assert mapping == ((0.1, 128), (0.8, 16))
    assert budget_for(mapping, 0.05) == 128 and budget_for(mapping, 0.5) == 128 and budget_for(mapping, 0.85) == 16
    # one bin: the best fixed budget of the calibration prompts (here 128: 0.875 vs 0.5)
    assert fit_probe_mapping(conf, acc, cost, (16, 128), n_bins=1) == ((0.1, 128),)
    # equal budgets in neighbouring bins merge into one
    assert fit_probe_mapping(conf, np.ones((4, 2)), cost, (16, 128), n_bins=4) == ((0.1, 16),)
    with pytest.raises(ValueError, match="confidence"):
        fit_probe_mapping([0.1], acc, cost, (16, 128))
    with pytest.raises(ValueError, match="empty"):
        budget_for((), 0.3)


def test_policy_row_saved_only_at_equal_accuracy():
    from analysis.budget_oracle import policy_row

    s = tokens_saved(np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([[10.0, 100.0], [10.0, 100.0]]),
                     OracleSettings(n_bootstrap=0))
    assert policy_row("p", [1.0, 1.0], [20.0, 60.0], s).saved_vs_best_fixed == 60.0
    assert policy_row("p", [1.0, 0.0], [5.0, 5.0], s).saved_vs_best_fixed is None
    row = policy_row("p", [1.0, 0.0], [5.0, 5.0], s)
    assert row.accuracy == 0.5 and row.e3 == pytest.approx(0.25 / 5.0)


def test_escalation_threshold_against_every_threshold():
    from analysis.budget_oracle import fit_escalation_threshold

    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(1, 7))
        conf = rng.integers(0, 5, n).astype(float)  # ties on purpose
        small, large = rng.random(n) < 0.5, rng.random(n) < 0.7
        tau = fit_escalation_threshold(conf, small, large)
        acc = lambda t: np.where(conf < t, large, small).mean()  # noqa: E731
        every = np.concatenate([conf, [conf.min() - 1, conf.max() + 1]])
        best = max(acc(t) for t in every)
        assert acc(tau) == pytest.approx(best)
        # the fewest escalations among the best thresholds
        assert (conf < tau).sum() == min((conf < t).sum() for t in every if acc(t) == pytest.approx(best))
    # the large model never helps: never escalate
    assert fit_escalation_threshold([0.2, 0.9], [True, True], [False, True]) < 0.2
