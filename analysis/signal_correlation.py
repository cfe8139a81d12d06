"""Signal-vs-accuracy protocol (docs/METHODS.md §2, §6) and the words found at MI peaks (§1).

Protocol: split samples into quantile bins of a per-sample signal (DTR, length, self-certainty,
...), take accuracy per bin, and report Pearson r between bin mean signal and bin accuracy.
"""
from __future__ import annotations

import math
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class CorrelationSettings:
    n_bins: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ValueError(f"CorrelationSettings.n_bins must be an int >= 2, got {self.n_bins!r}")


@dataclass(frozen=True)
class BinnedCorrelation:
    """Per-bin arrays have n_bins entries; an empty bin has count 0 and NaN mean/accuracy."""

    edges: np.ndarray  # float64 [n_bins + 1], signal quantiles 0, 1/n, ..., 1
    mean_signal: np.ndarray  # float64 [n_bins]
    accuracy: np.ndarray  # float64 [n_bins], in [0, 1]
    counts: np.ndarray  # int64 [n_bins]
    r: float  # Pearson r over non-empty bins; NaN when undefined (see reason)
    reason: str | None  # why r is NaN, else None
    n_dropped: int  # samples ignored for a non-finite signal


def binned_signal_correlation(signal, correct, settings: CorrelationSettings = CorrelationSettings()) -> BinnedCorrelation:
    """Quantile-bin samples by signal, accuracy per bin, Pearson r(bin mean signal, bin accuracy).

    Edges are the linear-interpolation quantiles j/k (numpy's default). Bin i holds
    edges[i] <= s < edges[i+1], the last bin also s == edges[-1]; values tied at an inner edge all
    go to the upper bin, so heavy ties can leave bins empty, and empty bins are left out of r
    rather than invented. Membership is decided on ranks (`quantile_bins`), not by comparing with
    the float edges, which round (0..5 in 5 bins gives an edge 0.6000000000000001 for 0.6).
    `edges` are reported for display only.
    """
    s = np.asarray(signal, dtype=np.float64).ravel()
    ok = np.asarray(correct).ravel()
    if s.shape != ok.shape:
        raise ValueError(f"signal has {s.size} samples, correct has {ok.size}")
    if ok.dtype != bool and not np.isin(ok, (0, 1)).all():
        raise ValueError("correct must be boolean (or 0/1)")
    ok = ok.astype(bool)
    finite = np.isfinite(s)
    n_dropped = int((~finite).sum())
    s, ok = s[finite], ok[finite]
    k = settings.n_bins
    nan_k = np.full(k, np.nan)

    if s.size == 0:
        return BinnedCorrelation(np.full(k + 1, np.nan), nan_k, nan_k.copy(), np.zeros(k, np.int64), float("nan"), "no samples with a finite signal", n_dropped)

    edges = np.quantile(s, np.linspace(0.0, 1.0, k + 1))
    bin_of = quantile_bins(s, k)
    counts = np.bincount(bin_of, minlength=k).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_signal = np.bincount(bin_of, weights=s, minlength=k) / counts
        accuracy = np.bincount(bin_of, weights=ok.astype(np.float64), minlength=k) / counts

    nonempty = counts > 0
    reason = None
    if s.size < k:
        reason = f"fewer samples ({s.size}) than bins ({k})"
    elif np.all(s == s[0]):
        reason = "signal is constant"
    elif nonempty.sum() < 2:
        reason = "fewer than 2 non-empty bins"
    else:
        x, y = mean_signal[nonempty], accuracy[nonempty]
        if np.all(y == y[0]):
            reason = "accuracy is the same in every bin"
        elif np.all(x == x[0]):
            reason = "bin mean signal is the same in every bin"
    r = float("nan") if reason else _pearson(mean_signal[nonempty], accuracy[nonempty])
    return BinnedCorrelation(edges, mean_signal, accuracy, counts, r, reason, n_dropped)


def quantile_bins(values, n_bins: int) -> np.ndarray:
    """Bin index (int64 [N]) of each value among n_bins linear-interpolation quantile bins, exactly.

    The inner edge j (j = 1..n_bins-1) sits at sorted position p_j = j (N-1) / n_bins, between
    sorted values v[floor p_j] and v[ceil p_j]. A value s is at or above that edge exactly when
    ceil(p_j) <= b, b = (number of values <= s) - 1: the interpolated edge never exceeds
    v[ceil p_j] and lies above every value below v[ceil p_j]. So s's bin is the number of j with
    ceil(j (N-1) / n_bins) <= b, computed in integers (docs/METHODS.md §6). Tie-free, this puts
    rank r in bin min(floor(r n_bins / (N-1)), n_bins-1).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if np.isnan(v).any():
        raise ValueError("quantile_bins needs values without NaN")
    last_rank = np.searchsorted(np.sort(v), v, side="right") - 1  # b per value
    j = np.arange(1, n_bins, dtype=np.int64)
    edge_rank = -((-j * (n - 1)) // n_bins)  # ceil(j (N-1) / n_bins), non-decreasing in j
    return np.searchsorted(edge_rank, last_rank, side="right").astype(np.int64)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    r = float((dx * dy).sum() / math.sqrt((dx * dx).sum() * (dy * dy).sum()))
    return max(-1.0, min(1.0, r))  # rounding can step just outside [-1, 1]


def _normalise_word(text: str) -> str:
    # Unicode-aware so full-width commas and curly quotes go too; symbols such as "=" or "+" are
    # kept (they are tokens worth seeing at peaks), as are inner characters and case ("don't", "So").
    def edge(ch: str) -> bool:
        return ch.isspace() or unicodedata.category(ch)[0] in "PZ"

    start, end = 0, len(text)
    while start < end and edge(text[start]):
        start += 1
    while end > start and edge(text[end - 1]):
        end -= 1
    return text[start:end]


def peak_word_counts(tokens_text: Sequence[Sequence[str]], peak_masks: Sequence) -> Counter:
    """Counter of normalised token words at MI peaks, pooled over traces.

    tokens_text[i][t] is the decoded text of token t of trace i and peak_masks[i] its [T] bool
    mask. Tokens that are only whitespace/punctuation are not counted.
    """
    if len(tokens_text) != len(peak_masks):
        raise ValueError(f"{len(tokens_text)} traces of text but {len(peak_masks)} peak masks")
    counts: Counter = Counter()
    for i, (texts, mask) in enumerate(zip(tokens_text, peak_masks)):
        m = np.asarray(mask, dtype=bool)
        if m.shape != (len(texts),):
            raise ValueError(f"trace {i}: {len(texts)} tokens but peak mask of shape {m.shape}")
        for t in np.flatnonzero(m):
            word = _normalise_word(texts[t])
            if word:
                counts[word] += 1
    return counts
