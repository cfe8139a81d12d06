"""The accuracy-vs-tokens Pareto front of a set of runs: maximise accuracy, minimise tokens.

Point j dominates point i when acc_j >= acc_i and tokens_j <= tokens_i with at least one strict.
The front is every point no other point dominates; two identical points do not dominate each
other, so both stay on it. Points with a missing or non-finite coordinate take no part (they
neither join the front nor dominate anything).
"""
from __future__ import annotations

import math
from collections.abc import Sequence


def _usable(value: float | None) -> bool:
    return value is not None and not isinstance(value, bool) and math.isfinite(value)


def pareto_front(accuracy: Sequence[float | None], tokens: Sequence[float | None]) -> list[int]:
    """Indices of the non-dominated points, ordered by tokens ascending (then index).

    O(n log n): visit token groups from cheapest; a group's most accurate points are on the front
    exactly when they beat every accuracy seen at strictly fewer tokens.
    """
    if len(accuracy) != len(tokens):
        raise ValueError(f"pareto_front needs one token count per accuracy ({len(accuracy)} vs {len(tokens)})")
    points = [i for i in range(len(accuracy)) if _usable(accuracy[i]) and _usable(tokens[i])]
    points.sort(key=lambda i: (tokens[i], i))
    front: list[int] = []
    best_cheaper = -math.inf
    k = 0
    while k < len(points):
        group_end = k
        while group_end < len(points) and tokens[points[group_end]] == tokens[points[k]]:
            group_end += 1
        group = points[k:group_end]
        top = max(accuracy[i] for i in group)
        if top > best_cheaper:
            front.extend(i for i in group if accuracy[i] == top)
        best_cheaper = max(best_cheaper, top)
        k = group_end
    return front
