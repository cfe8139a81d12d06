"""The per-prompt budget oracle: the best any per-prompt choice of thinking budget could do.

Input: a sweep over a prompt set, as two [n_prompts, n_budgets] arrays: each prompt's accuracy at
each budget (the share of its samples graded correct) and its mean thinking tokens there (the
cost). The oracle picks one budget per prompt to maximise mean accuracy subject to a mean cost
(docs/METHODS.md §9). Two solvers:
- `exact_frontier`: a knapsack over prompts that keeps, for every reachable total accuracy, the
  least total cost (exact; accuracies of k/N samples take few distinct sums).
- `lagrangian_frontier`: per prompt, argmax(accuracy - lambda * cost) for every multiplier where
  the choice changes; its points are the vertices of the frontier's upper concave hull, each
  optimal at its own cost, and `lagrangian_at` completes a target cost between vertices by
  upgrading prompts greedily over the discrete budgets.
Tokens saved at equal accuracy compare the oracle with the best fixed budget, with a bootstrap
interval over prompts.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.run_metrics import e3, ock_score, wilson_interval

__all__ = [
    "FrontierPoint",
    "OracleSettings",
    "PolicyRow",
    "Savings",
    "budget_for",
    "exact_frontier",
    "fit_escalation_threshold",
    "fit_probe_mapping",
    "fixed_points",
    "frontier_accuracy_at",
    "lagrangian_at",
    "lagrangian_frontier",
    "policy_row",
    "tokens_saved",
]

_ROUND = 9  # decimals when merging equal accuracy sums (floating-point sums of k/N)


@dataclass(frozen=True)
class OracleSettings:
    n_bootstrap: int = 1000  # resamples of the prompts for the savings interval
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_bootstrap, int) or self.n_bootstrap < 0:
            raise ValueError(f"OracleSettings.n_bootstrap must be an int >= 0, got {self.n_bootstrap!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"OracleSettings.confidence must be in (0, 1), got {self.confidence!r}")


@dataclass(frozen=True)
class FrontierPoint:
    mean_cost: float  # mean thinking tokens per prompt
    mean_accuracy: float  # in [0, 1]
    choice: tuple[int, ...]  # per prompt, the index of the budget it gets


@dataclass(frozen=True)
class Savings:
    best_fixed_index: int  # the fixed budget with the highest mean accuracy (the cheaper on a tie)
    best_fixed_accuracy: float
    best_fixed_cost: float
    oracle_cost: float  # least mean cost at which the oracle reaches best_fixed_accuracy
    saved_tokens: float  # best_fixed_cost - oracle_cost, per prompt
    saved_fraction: float  # saved_tokens / best_fixed_cost (0 when that cost is 0)
    interval: tuple[float, float] | None  # bootstrap interval of saved_fraction; None without resamples


def _check(accuracy: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    acc_pb = np.asarray(accuracy, dtype=np.float64)
    cost_pb = np.asarray(cost, dtype=np.float64)
    if acc_pb.ndim != 2 or acc_pb.shape != cost_pb.shape or 0 in acc_pb.shape:
        raise ValueError(f"accuracy and cost must be non-empty [prompts, budgets] arrays of one shape, "
                         f"got {acc_pb.shape} and {cost_pb.shape}")
    if not (np.isfinite(acc_pb).all() and np.isfinite(cost_pb).all()):
        raise ValueError("accuracy and cost must be finite: leave out prompts with an unknown grade")
    if (cost_pb < 0).any() or (acc_pb < 0).any() or (acc_pb > 1).any():
        raise ValueError("cost must be >= 0 and accuracy in [0, 1]")
    return acc_pb, cost_pb


def fixed_points(accuracy: np.ndarray, cost: np.ndarray) -> list[FrontierPoint]:
    """One point per fixed budget (every prompt gets budget b): the L1 curve."""
    acc_pb, cost_pb = _check(accuracy, cost)
    n_prompts = acc_pb.shape[0]
    return [FrontierPoint(float(cost_pb[:, b].mean()), float(acc_pb[:, b].mean()), (b,) * n_prompts)
            for b in range(acc_pb.shape[1])]


def exact_frontier(accuracy: np.ndarray, cost: np.ndarray) -> list[FrontierPoint]:
    """Every Pareto-optimal (mean cost, mean accuracy) of a per-prompt choice, cheapest first.

    Knapsack over prompts: a state is a total accuracy so far (rounded to merge equal sums) with
    its least total cost and the choice behind it; after each prompt, dominated states (no more
    accurate than a cheaper one) are dropped, so the state count stays at the frontier's size."""
    acc_pb, cost_pb = _check(accuracy, cost)
    n_prompts, n_budgets = acc_pb.shape
    acc_s, cost_s = np.zeros(1), np.zeros(1)  # [states]
    choice_sp = np.zeros((1, 0), dtype=np.int64)  # [states, prompts so far]
    for p in range(n_prompts):
        acc_c = np.round((acc_s[:, None] + acc_pb[p][None, :]).ravel(), _ROUND)  # [states * budgets]
        cost_c = (cost_s[:, None] + cost_pb[p][None, :]).ravel()
        parent = np.repeat(np.arange(len(acc_s)), n_budgets)
        budget = np.tile(np.arange(n_budgets), len(acc_s))
        # Most accurate first, cheapest first within an accuracy; keep a state only when it is
        # strictly cheaper than every more accurate one.
        order = np.lexsort((cost_c, -acc_c))
        cheapest_before = np.minimum.accumulate(np.concatenate(([np.inf], cost_c[order][:-1])))
        keep = order[cost_c[order] < cheapest_before]
        acc_s, cost_s = acc_c[keep], cost_c[keep]
        choice_sp = np.concatenate([choice_sp[parent[keep]], budget[keep][:, None]], axis=1)
    by_cost = np.argsort(cost_s, kind="stable")
    return [FrontierPoint(float(cost_s[i] / n_prompts), float(acc_s[i] / n_prompts),
                          tuple(int(b) for b in choice_sp[i])) for i in by_cost]


def _lagrangian_choice(acc_pb: np.ndarray, cost_pb: np.ndarray, lam: float) -> tuple[int, ...]:
    # Ties go to the cheaper budget, then the lower index, so lambda -> choice is a step function.
    score = acc_pb - lam * cost_pb
    best = score.max(axis=1, keepdims=True)
    tied = np.isclose(score, best, rtol=0.0, atol=1e-12)
    masked_cost = np.where(tied, cost_pb, np.inf)
    return tuple(int(i) for i in masked_cost.argmin(axis=1))


def lagrangian_frontier(accuracy: np.ndarray, cost: np.ndarray) -> list[FrontierPoint]:
    """The vertices of the oracle frontier's upper concave hull, cheapest first.

    For a multiplier lambda >= 0 each prompt takes argmax(accuracy - lambda * cost) on its own;
    the choice changes only where two of a prompt's budgets score equal, so trying lambda just
    around every such breakpoint (and 0, and beyond the largest) finds every vertex."""
    acc_pb, cost_pb = _check(accuracy, cost)
    n_prompts = acc_pb.shape[0]
    breaks = {0.0}
    for p in range(n_prompts):
        d_acc = acc_pb[p][:, None] - acc_pb[p][None, :]
        d_cost = cost_pb[p][:, None] - cost_pb[p][None, :]
        usable = (d_cost > 0) & (d_acc > 0)
        breaks.update(float(v) for v in (d_acc[usable] / d_cost[usable]))
    ordered = sorted(breaks)
    top = (ordered[-1] if ordered else 0.0) * 2 + 1.0
    probes = [0.0, top] + [lam * f for lam in ordered for f in (1 - 1e-9, 1 + 1e-9)]
    points: dict[tuple[int, ...], FrontierPoint] = {}
    for lam in probes:
        choice = _lagrangian_choice(acc_pb, cost_pb, lam)
        if choice not in points:
            idx = np.arange(n_prompts), np.array(choice)
            points[choice] = FrontierPoint(float(cost_pb[idx].mean()), float(acc_pb[idx].mean()), choice)
    by_cost = sorted(points.values(), key=lambda q: (q.mean_cost, -q.mean_accuracy))
    hull: list[FrontierPoint] = []
    for q in by_cost:  # a probe just off a breakpoint can land on a point under the hull: drop it
        if hull and q.mean_accuracy <= hull[-1].mean_accuracy + 1e-12:
            continue
        hull.append(q)
    return hull


def lagrangian_at(accuracy: np.ndarray, cost: np.ndarray, mean_budget: float) -> FrontierPoint:
    """A per-prompt choice within `mean_budget` (mean cost per prompt): the hull vertex at or under
    it, completed by upgrading one prompt at a time to the budget that adds the most accuracy per
    token among those that still fit. Exact at hull vertices; at or below the exact frontier between."""
    acc_pb, cost_pb = _check(accuracy, cost)
    n_prompts = acc_pb.shape[0]
    hull = lagrangian_frontier(acc_pb, cost_pb)
    under = [q for q in hull if q.mean_cost <= mean_budget + 1e-12]
    if not under:
        raise ValueError(f"no choice fits a mean budget of {mean_budget:g}: the cheapest needs {hull[0].mean_cost:g}")
    choice = list(under[-1].choice)
    spare = mean_budget * n_prompts - sum(cost_pb[p, b] for p, b in enumerate(choice))
    while True:
        best, best_rate = None, 0.0
        for p, b in enumerate(choice):
            for c in range(acc_pb.shape[1]):
                gain, extra = acc_pb[p, c] - acc_pb[p, b], cost_pb[p, c] - cost_pb[p, b]
                if gain > 0 and extra <= spare + 1e-9:
                    rate = gain / extra if extra > 0 else math.inf
                    if rate > best_rate:
                        best, best_rate = (p, c, extra), rate
        if best is None:
            break
        p, c, extra = best
        choice[p] = c
        spare -= extra
    idx = np.arange(n_prompts), np.array(choice)
    return FrontierPoint(float(cost_pb[idx].mean()), float(acc_pb[idx].mean()), tuple(choice))


def frontier_accuracy_at(frontier: Sequence[FrontierPoint], mean_budget: float) -> float | None:
    """The frontier's accuracy within a mean budget (a step function); None below its cheapest point."""
    fits = [q.mean_accuracy for q in frontier if q.mean_cost <= mean_budget + 1e-9]
    return max(fits) if fits else None


def _cheapest_at(frontier: Sequence[FrontierPoint], target_accuracy: float) -> float:
    return min(q.mean_cost for q in frontier if q.mean_accuracy >= target_accuracy - 1e-12)


def _savings_point(acc_pb: np.ndarray, cost_pb: np.ndarray) -> tuple[int, float, float, float]:
    mean_acc, mean_cost = acc_pb.mean(axis=0), cost_pb.mean(axis=0)
    best = max(range(acc_pb.shape[1]), key=lambda b: (round(mean_acc[b], _ROUND), -mean_cost[b]))
    oracle = _cheapest_at(exact_frontier(acc_pb, cost_pb), float(mean_acc[best]))
    return best, float(mean_acc[best]), float(mean_cost[best]), oracle


def tokens_saved(accuracy: np.ndarray, cost: np.ndarray, settings: OracleSettings = OracleSettings()) -> Savings:
    """Tokens the oracle saves at the best fixed budget's accuracy, with a percentile bootstrap over
    prompts (each resample picks its own best fixed budget, as a user would)."""
    acc_pb, cost_pb = _check(accuracy, cost)
    best, best_acc, best_cost, oracle_cost = _savings_point(acc_pb, cost_pb)
    saved = best_cost - oracle_cost
    fraction = saved / best_cost if best_cost > 0 else 0.0
    interval = None
    if settings.n_bootstrap:
        rng = np.random.default_rng(settings.seed)
        n_prompts = acc_pb.shape[0]
        fractions = []
        for _ in range(settings.n_bootstrap):
            pick = rng.integers(0, n_prompts, n_prompts)
            _, _, b_cost, o_cost = _savings_point(acc_pb[pick], cost_pb[pick])
            fractions.append((b_cost - o_cost) / b_cost if b_cost > 0 else 0.0)
        tail = (1 - settings.confidence) / 2 * 100
        low, high = np.percentile(fractions, [tail, 100 - tail])
        interval = (float(low), float(high))
    return Savings(best, best_acc, best_cost, oracle_cost, saved, fraction, interval)


@dataclass(frozen=True)
class PolicyRow:
    """One line of the Budgets table: a fixed budget, the oracle or a policy, over the same prompts."""

    label: str
    accuracy: float  # mean over prompts of the per-prompt accuracy (a policy: its selection graded 0/1)
    ci_low: float  # Wilson 95% over prompts, from the rounded number of correct prompts
    ci_high: float
    mean_thinking_tokens: float  # per prompt
    e3: float  # accuracy^2 / mean thinking tokens (docs/METHODS.md §6), on thinking tokens
    ock_score: float  # OckScore on thinking tokens per prompt (docs/METHODS.md §6)
    saved_vs_best_fixed: float | None  # tokens per prompt saved against the best fixed budget;
    # None when the row's accuracy is below the best fixed budget's (not "equal accuracy")


def policy_row(label: str, accuracy_p: Sequence[float], tokens_p: Sequence[float], savings: Savings) -> PolicyRow:
    """Summarise a per-prompt accuracy and thinking-token list against the best fixed budget."""
    acc = np.asarray(accuracy_p, dtype=np.float64)
    tok = np.asarray(tokens_p, dtype=np.float64)
    if acc.shape != tok.shape or acc.ndim != 1 or not len(acc):
        raise ValueError("accuracy and tokens must be one non-empty value per prompt")
    mean_acc, mean_tok = float(acc.mean()), float(tok.mean())
    low, high = wilson_interval(int(round(acc.sum())), len(acc))
    saved = savings.best_fixed_cost - mean_tok if mean_acc >= savings.best_fixed_accuracy - 1e-12 else None
    return PolicyRow(label, mean_acc, low, high, mean_tok, e3(mean_acc, mean_tok), ock_score(100 * mean_acc, mean_tok),
                     saved)


def fit_probe_mapping(confidence_p: Sequence[float], accuracy_pb: np.ndarray, cost_pb: np.ndarray,
                      budgets: Sequence[int], n_bins: int = 2) -> tuple[tuple[float, int], ...]:
    """adaptive_probe's mapping, fitted on calibration prompts (docs/METHODS.md §9): sort them by
    the probe's confidence, cut into n_bins bins of (nearly) equal count, and give each bin the
    budget with the highest mean accuracy over its prompts (the cheaper on a tie). Returns
    (lowest confidence in the bin, budget) per bin, thresholds increasing; bins that pick the same
    budget as the bin below are merged."""
    acc_pb, cost_pb = _check(accuracy_pb, cost_pb)
    conf = np.asarray(confidence_p, dtype=np.float64)
    if conf.shape != (acc_pb.shape[0],) or not np.isfinite(conf).all():
        raise ValueError("one finite confidence per calibration prompt is needed")
    if len(budgets) != acc_pb.shape[1] or n_bins < 1:
        raise ValueError("one budget per column and n_bins >= 1")
    order = np.argsort(conf, kind="stable")
    mapping: list[tuple[float, int]] = []
    for members in np.array_split(order, min(n_bins, len(order))):
        mean_acc, mean_cost = acc_pb[members].mean(axis=0), cost_pb[members].mean(axis=0)
        best = max(range(len(budgets)), key=lambda b: (round(mean_acc[b], _ROUND), -mean_cost[b]))
        threshold = float(conf[members].min())
        if mapping and (mapping[-1][1] == budgets[best] or threshold <= mapping[-1][0]):
            continue  # same budget as the bin below (or tied confidences): one bin
        mapping.append((threshold, int(budgets[best])))
    return tuple(mapping)


def budget_for(mapping: Sequence[tuple[float, int]], confidence: float) -> int:
    """The budget of the highest threshold at or below `confidence`; below all (or NaN): the first bin's."""
    if not mapping:
        raise ValueError("an empty budget mapping: fit one first")
    chosen = mapping[0][1]
    for threshold, budget in mapping:
        if confidence >= threshold:
            chosen = budget
    return chosen


def fit_escalation_threshold(confidence: Sequence[float], small_correct: Sequence[bool],
                             large_correct: Sequence[bool]) -> float:
    """tiered's threshold, fitted on calibration prompts (docs/METHODS.md §9): prompts whose small-model
    self-certainty is below it go to the larger model. Chosen to maximise the calibration accuracy of
    the two together; on a tie, the lowest threshold (the fewest escalations). Candidates: every
    calibration confidence, and one below them all (never escalate)."""
    conf = np.asarray(confidence, dtype=np.float64)
    small, large = np.asarray(small_correct, dtype=bool), np.asarray(large_correct, dtype=bool)
    if not (conf.shape == small.shape == large.shape) or conf.ndim != 1 or not len(conf) or not np.isfinite(conf).all():
        raise ValueError("one finite confidence and two grades per calibration prompt are needed")
    candidates = [float(conf.min()) - 1.0] + sorted(set(conf.tolist())) + [float(conf.max()) + 1.0]
    best, best_acc = candidates[0], -1.0
    for tau in candidates:  # ascending: a later candidate wins only when strictly more accurate
        acc = float(np.where(conf < tau, large, small).mean())
        if acc > best_acc + 1e-12:
            best, best_acc = tau, acc
    return best
