"""Reasoning that repeats itself: near-duplicate steps found from their sentence embeddings.

Definition (what the tests check against a double loop):
- embeddings E is [S, D], one unit-length row per step, in trace order; sim(i, j) = E_i . E_j.
- Only eligible steps take part (a bool mask [S]; e.g. steps too short to mean anything).
- Step i *repeats* when some eligible earlier step j < i has sim(i, j) >= threshold. Its
  `repeat_of` is the j with the highest similarity (the earliest such j on ties); -1 otherwise.
- `best_similarity[i]` is that highest similarity over eligible earlier steps (nan when there is
  none), so a display can show how close a step came even when it is below the threshold.
- The first occurrence is never marked, only what comes after it: a trace that says one thing
  three times has two repeated steps.
- repeat_share = repeated eligible steps / eligible steps (None when no step is eligible).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Rows of the similarity matrix computed at once: bounds memory at ROW_BLOCK x S floats.
ROW_BLOCK = 1024
_UNIT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class LoopMarks:
    repeat_of: np.ndarray  # int64 [S], index of the earlier step repeated, -1 if none
    best_similarity: np.ndarray  # float32 [S], nan where no eligible earlier step exists
    eligible: np.ndarray  # bool [S]

    @property
    def n_steps(self) -> int:
        return len(self.repeat_of)

    @property
    def n_eligible(self) -> int:
        return int(self.eligible.sum())

    @property
    def n_repeated(self) -> int:
        return int((self.repeat_of >= 0).sum())

    @property
    def repeat_share(self) -> float | None:
        return self.n_repeated / self.n_eligible if self.n_eligible else None


def _check(embeddings: np.ndarray, threshold: float, eligible: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(embeddings)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be a [steps, dim] matrix, got shape {e.shape}")
    if not np.issubdtype(e.dtype, np.floating):
        raise TypeError(f"embeddings must be floating point, got {e.dtype}")
    if not np.all(np.isfinite(e)):
        raise ValueError("embeddings contain NaN or infinite values")
    if len(e):
        norms = np.linalg.norm(e.astype(np.float64), axis=1)
        if np.any(np.abs(norms - 1.0) > _UNIT_TOLERANCE):
            raise ValueError("embeddings must be unit-normalised rows (cosine = dot product)")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
    mask = np.ones(len(e), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if mask.shape != (len(e),):
        raise ValueError(f"eligible must have one flag per step ({len(e)}), got shape {mask.shape}")
    return e.astype(np.float32, copy=False), mask


def mark_loops(embeddings: np.ndarray, threshold: float, eligible: np.ndarray | None = None) -> LoopMarks:
    """Mark each step that repeats an earlier eligible step (see the module docstring)."""
    e, mask = _check(embeddings, threshold, eligible)
    n = len(e)
    repeat_of = np.full(n, -1, dtype=np.int64)
    best = np.full(n, np.nan, dtype=np.float32)
    for lo in range(0, n, ROW_BLOCK):
        hi = min(n, lo + ROW_BLOCK)
        sims = e[lo:hi] @ e[:hi].T  # [block, hi]
        # Only earlier, eligible columns count: j < i, so mask j >= i and ineligible j.
        cols = np.arange(hi)
        rows = np.arange(lo, hi)[:, None]
        sims = np.where((cols[None, :] < rows) & mask[None, :hi], sims, -np.inf)
        if hi > 1:
            arg = np.argmax(sims, axis=1)  # first maximum: the earliest step on ties
            top = sims[np.arange(hi - lo), arg]
        else:
            arg = np.zeros(hi - lo, dtype=np.int64)
            top = np.full(hi - lo, -np.inf, dtype=np.float32)
        has = np.isfinite(top) & mask[lo:hi]
        best[lo:hi] = np.where(has, top, np.nan)
        repeat_of[lo:hi] = np.where(has & (top >= threshold), arg, -1)
    return LoopMarks(repeat_of, best, mask)
