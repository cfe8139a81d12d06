"""Token- and trace-level confidence signals from log-probs (docs/METHODS.md §4).

All logs are natural: entropies and self-certainty are in nats. Inputs are log-softmax rows,
either the full vocabulary [T, V] (torch or numpy, processed in row chunks so V = 152k is fine)
or, for the DeepConf confidence only, the top-k log-probs per token [T, k].
Voting (Borda, DeepConf filtering) lives elsewhere; this module only scores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# See analysis/logit_lens.py: keeps 0 * log 0 at 0 for -inf log-probs.
_LOG_FLOOR = -1.0e4
# Full rows must be normalized: |logsumexp| above this means logits or a truncated vocabulary
# (loose enough for bf16 log-softmax output).
_NORM_TOL = 1e-2


@dataclass(frozen=True)
class ConfidenceSettings:
    """k: top-k log-probs per DeepConf token confidence. window: group size in tokens (stride 1).
    bottom_fraction: share of lowest groups averaged by the bottom-fraction score."""

    k: int = 20
    window: int = 2048
    bottom_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("k", "window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ConfidenceSettings.{name} must be an int >= 1, got {v!r}")
        if not (math.isfinite(self.bottom_fraction) and 0 < self.bottom_fraction <= 1):
            raise ValueError(f"ConfidenceSettings.bottom_fraction must be in (0, 1], got {self.bottom_fraction!r}")


def _rows(logprobs, name: str) -> torch.Tensor:
    t = logprobs.detach() if isinstance(logprobs, torch.Tensor) else torch.as_tensor(np.asarray(logprobs))
    if t.ndim != 2:
        raise ValueError(f"{name} must be [T, V], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must hold floating log-probs, got {t.dtype}")
    return t


def _chunks(n: int, size: int):
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"chunk_tokens must be an int >= 1, got {size!r}")
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _top_confidence(lp_nx: torch.Tensor, k: int) -> torch.Tensor:
    if lp_nx.shape[1] < k:
        raise ValueError(
            f"DeepConf confidence needs at least k={k} log-probs per token, got {lp_nx.shape[1]}; "
            "lower ConfidenceSettings.k to what was stored"
        )
    if bool(torch.isnan(lp_nx).any()):
        raise ValueError("log-probs contain NaN")
    top = lp_nx if lp_nx.shape[1] == k else torch.topk(lp_nx, k, dim=-1, sorted=False).values
    return -top.sum(-1, dtype=torch.float64) / k


def token_confidence(logprobs_tx, k: int = 20, chunk_tokens: int = 256) -> np.ndarray:
    """DeepConf C_t = -(1/k) sum_{j<=k} log p_t(top-j): float64 [T].

    logprobs_tx: [T, V] full rows or [T, k'] top-k' rows (k' >= k; unsorted is fine, the k
    largest are used). A -inf among the top k (fewer than k tokens possible) gives C_t = inf.
    """
    lp = _rows(logprobs_tx, "logprobs_tx")
    out = np.empty(lp.shape[0], dtype=np.float64)
    with torch.no_grad():
        for a, b in _chunks(lp.shape[0], chunk_tokens):
            out[a:b] = _top_confidence(lp[a:b], k).cpu().numpy()
    return out


@dataclass(frozen=True)
class TokenStats:
    entropy: np.ndarray  # float64 [T], nats
    self_certainty: np.ndarray  # float64 [T], nats: KL(U || p_t)
    confidence: np.ndarray  # float64 [T], DeepConf C_t


def token_stats(logprobs_tv, k: int | None = 20, chunk_tokens: int = 64) -> TokenStats:
    """Entropy, self-certainty and DeepConf confidence (NaN when k is None) from full rows, one pass.

    Self-certainty KL(U || p) = -(1/V) sum_j log p(j) - log V is +inf when some log p(j) = -inf
    (a masked token): that is its true value, and clamping would return an arbitrary number.
    Selection rules rank it above every finite score (analysis/voting.py, docs/METHODS.md §4).
    """
    lp = _rows(logprobs_tv, "logprobs_tv")
    n_t, n_v = lp.shape
    ent = np.empty(n_t, dtype=np.float64)
    sc = np.empty(n_t, dtype=np.float64)
    conf = np.empty(n_t, dtype=np.float64)
    with torch.no_grad():
        for a, b in _chunks(n_t, chunk_tokens):
            rows = lp[a:b]
            if bool(torch.isnan(rows).any()):
                raise ValueError("log-probs contain NaN")
            lse = torch.logsumexp(rows.float() if rows.itemsize < 4 else rows, dim=-1).abs().max()
            if float(lse) > _NORM_TOL:
                raise ValueError(
                    f"rows are not log-softmax over the full vocabulary (|logsumexp| up to {float(lse):.3g})"
                )
            safe = rows.clamp_min(_LOG_FLOOR)
            ent[a:b] = (-(safe.exp() * safe).sum(-1, dtype=torch.float64)).cpu().numpy()
            sc[a:b] = (-rows.sum(-1, dtype=torch.float64) / n_v - math.log(n_v)).cpu().numpy()
            conf[a:b] = np.nan if k is None else _top_confidence(rows, k).cpu().numpy()
    return TokenStats(entropy=ent, self_certainty=sc, confidence=conf)


def token_entropy(logprobs_tv, chunk_tokens: int = 64) -> np.ndarray:
    """H(p_t) = -sum_j p_t(j) log p_t(j), nats: float64 [T]."""
    return token_stats(logprobs_tv, k=None, chunk_tokens=chunk_tokens).entropy


def token_self_certainty(logprobs_tv, chunk_tokens: int = 64) -> np.ndarray:
    """KL(U || p_t) = -(1/V) sum_j log p_t(j) - log V over the full vocabulary, nats: float64 [T]."""
    return token_stats(logprobs_tv, k=None, chunk_tokens=chunk_tokens).self_certainty


def trace_self_certainty(self_certainty_t, response_mask=None) -> float:
    """Mean token self-certainty over response tokens (mask selects them); NaN if there are none."""
    sc = np.asarray(self_certainty_t, dtype=np.float64)
    if response_mask is not None:
        mask = np.asarray(response_mask, dtype=bool)
        if mask.shape != sc.shape:
            raise ValueError(f"response_mask shape {mask.shape} != self_certainty_t shape {sc.shape}")
        sc = sc[mask]
    return float(sc.mean()) if sc.size else float("nan")


def group_confidence(conf_t, window: int = 2048) -> np.ndarray:
    """Sliding-window means of token confidence, stride 1: float64 [T - window + 1].

    A trace shorter than the window is one group, its whole mean ([1]); an empty trace has none.
    """
    c = np.asarray(conf_t, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"conf_t must be 1-D, got shape {c.shape}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    if c.size == 0:
        return np.empty(0, dtype=np.float64)
    if c.size < window:
        return np.array([c.mean()])
    csum = np.concatenate(([0.0], np.cumsum(c)))
    return (csum[window:] - csum[:-window]) / window


@dataclass(frozen=True)
class TraceConfidence:
    lowest_group: float  # min over sliding-window means
    bottom_fraction: float  # mean of the lowest max(1, floor(G * fraction)) window means
    tail: float  # mean of the last `window` tokens (the whole trace if shorter)
    mean: float  # mean over all tokens
    n_groups: int


def trace_confidence(conf_t, settings: ConfidenceSettings = ConfidenceSettings()) -> TraceConfidence:
    """DeepConf trace scores from token confidences.

    The bottom-fraction count max(1, floor(G * fraction)) follows the DeepConf reference code
    (facebookresearch/deepconf, analysis_offline.py). Empty trace: all NaN.
    """
    c = np.asarray(conf_t, dtype=np.float64)
    groups = group_confidence(c, settings.window)
    if groups.size == 0:
        nan = float("nan")
        return TraceConfidence(nan, nan, nan, nan, 0)
    n_bottom = max(1, int(groups.size * settings.bottom_fraction))
    bottom = np.partition(groups, n_bottom - 1)[:n_bottom]
    return TraceConfidence(
        lowest_group=float(groups.min()),
        bottom_fraction=float(bottom.mean()),
        tail=float(c[-settings.window :].mean()),
        mean=float(c.mean()),
        n_groups=int(groups.size),
    )
