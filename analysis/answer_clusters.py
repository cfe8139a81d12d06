"""Free-text answers grouped by meaning: greedy leader clustering of unit-normalised embeddings.

Votes need answers that compare equal; free-text answers ("Paris", "It is Paris.", "The capital is
Paris") rarely do. Clustering their embeddings at a cosine threshold gives the groups a vote or a
reviewer can count.

Rule (deterministic, order-dependent by design: the first answer of a group names it):
answers are visited in order; answer i joins the existing cluster whose *leader* (first member)
is most similar to it, if that similarity is >= threshold (the earliest cluster on ties);
otherwise it leads a new cluster. Cluster labels are 0, 1, ... in order of their leaders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnswerClusters:
    labels: np.ndarray  # int64 [N], cluster of each answer
    leaders: np.ndarray  # int64 [C], index of each cluster's first answer

    @property
    def n_clusters(self) -> int:
        return len(self.leaders)

    def sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.n_clusters).tolist() if len(self.labels) else []


def cluster_answers(embeddings: np.ndarray, threshold: float) -> AnswerClusters:
    """Greedy leader clustering of [N, D] unit-length rows at a cosine `threshold` in [-1, 1]."""
    e = np.asarray(embeddings)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be an [answers, dim] matrix, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("embeddings contain NaN or infinite values")
    if len(e) and np.any(np.abs(np.linalg.norm(e.astype(np.float64), axis=1) - 1.0) > 1e-3):
        raise ValueError("embeddings must be unit-normalised rows (cosine = dot product)")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
    labels = np.empty(len(e), dtype=np.int64)
    leaders: list[int] = []
    for i in range(len(e)):
        if leaders:
            sims = e[leaders] @ e[i]
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                labels[i] = best
                continue
        labels[i] = len(leaders)
        leaders.append(i)
    return AnswerClusters(labels, np.asarray(leaders, dtype=np.int64))
