"""Deep-thinking tokens (docs/METHODS.md §2): logit-lens JSD to the final layer, settling depth, DTR.

Layers are 1-based in everything this module returns (depth 1..L), 0-based only as array axes.
Divergences are in nats, so they lie in [0, ln 2].
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

LN2 = math.log(2.0)
# log-probs below this are exp-underflow zeros in any float type; clamping them keeps
# 0 * log 0 terms at 0 instead of NaN (-inf - -inf) without changing any probability.
_LOG_FLOOR = -1.0e4
# Smallest m we take a log of: below float32's normal range, so it only replaces exact zeros.
_TINY = 1.0e-38
# Rows per JSD block: 8 x V float32 temporaries (1.5 MB at V = 49,152) stay in a 2-4 MB L2.
_JSD_BLOCK_ROWS = 8


@dataclass(frozen=True)
class DTRSettings:
    """Deep-thinking ratio and Think@n parameters.

    g: settling threshold on the running-minimum JSD, nats.
    rho: deep band = layers l >= ceil(rho * L). The paper's alternative wording
        ceil((1 - rho) L) is this rule with rho replaced by 1 - rho.
    prefix_tokens: Think@n ranks samples by the DTR of this many leading tokens.
    keep_fraction: Think@n keeps ceil(keep_fraction * n) samples (at least one).
    """

    g: float = 0.5
    rho: float = 0.85
    prefix_tokens: int = 50
    keep_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.g) and self.g >= 0):
            raise ValueError(f"DTRSettings.g must be finite and >= 0, got {self.g!r}")
        if not (math.isfinite(self.rho) and 0 < self.rho <= 1):
            raise ValueError(f"DTRSettings.rho must be in (0, 1], got {self.rho!r}")
        if isinstance(self.prefix_tokens, bool) or not isinstance(self.prefix_tokens, int) or self.prefix_tokens < 1:
            raise ValueError(f"DTRSettings.prefix_tokens must be an int >= 1, got {self.prefix_tokens!r}")
        if not (math.isfinite(self.keep_fraction) and 0 < self.keep_fraction <= 1):
            raise ValueError(f"DTRSettings.keep_fraction must be in (0, 1], got {self.keep_fraction!r}")


LogProbFn = Callable[[torch.Tensor], torch.Tensor]  # hidden [n, d] -> natural log-probs [n, V]


def _jsd_rows(lp_nv: torch.Tensor, p_nv: torch.Tensor, lq_nv: torch.Tensor) -> torch.Tensor:
    """JSD(p || q) per row, float64 [n], nats. lp_nv is already clamped and p_nv = exp(lp_nv).

    Kept as (KL(p||m) + KL(q||m)) / 2 so that for p ~ q each summand carries the small difference
    directly, where H(m) - (H(p) + H(q)) / 2 would cancel. log m comes from log(p + q), not
    logaddexp; where both underflow, the clamp keeps 0 * finite = 0. Sums stay in the input dtype
    (torch's CPU sum is pairwise: ~1e-7 relative in float32). Together these ran 2.4x faster than
    logaddexp with float64 accumulators (V = 49152, one thread).
    """
    lq = lq_nv.clamp_min(_LOG_FLOOR)
    q = lq.exp()
    lm = (p_nv + q).log_().clamp_min_(_LOG_FLOOR).sub_(LN2)
    terms = (lq - lm).mul_(q).addcmul_(p_nv, lp_nv - lm)
    return terms.sum(-1).double().mul_(0.5).clamp_(0.0, LN2)


def _jsd_rows_from_logits(p_nv: torch.Tensor, p_log_p_n: torch.Tensor, logits_nv: torch.Tensor) -> torch.Tensor:
    """JSD(p || softmax(logits)) per row, float64 [n], nats; p_log_p_n = sum(p * log p) per row.

    The entropy form JSD = (sum p log p + sum q log q) / 2 - sum m log m, with q and its
    normalisation taken from the raw logits in the same passes: 7 passes over [n, V] instead of
    log-softmax + _jsd_rows' 13 (1.4x faster per block at V = 49,152). Its float32 cancellation
    costs ~1e-6 nats, far below anything the settling threshold or the heatmap resolves.
    Where p and q both underflow, u = p + q is clamped to a tiny value, so u log u stays 0.
    """
    x = logits_nv.to(p_nv.dtype, copy=True)
    x.sub_(x.amax(-1, keepdim=True))
    q = x.exp()
    total = q.sum(-1, keepdim=True)
    q_log_q = (q * x).sum(-1) / total[:, 0] - total[:, 0].log()  # sum q (x - log total), q normalised
    u = q.div_(total).add_(p_nv).clamp_min_(_TINY)  # p + q = 2m
    u_log_u = (u * u.log()).sum(-1)
    # sum m log m = (sum u log u) / 2 - ln 2, since sum u = 2.
    return (0.5 * (p_log_p_n + q_log_q) - 0.5 * u_log_u + LN2).double().clamp_(0.0, LN2)


def jsd_rows(final_logprobs_nv: torch.Tensor, logprobs_nv: torch.Tensor) -> np.ndarray:
    """JSD(p_final || q) for n matching rows of log-probabilities [n, V]: float64 [n], nats."""
    if final_logprobs_nv.shape != logprobs_nv.shape or final_logprobs_nv.ndim != 2:
        raise ValueError(f"need two [n, V] arrays of the same shape, got {tuple(final_logprobs_nv.shape)} "
                         f"and {tuple(logprobs_nv.shape)}")
    out = np.zeros(final_logprobs_nv.shape[0], dtype=np.float64)
    with torch.no_grad():
        for b0 in range(0, len(out), _JSD_BLOCK_ROWS):
            b1 = min(b0 + _JSD_BLOCK_ROWS, len(out))
            lp = _summable(final_logprobs_nv[b0:b1]).clamp_min(_LOG_FLOOR)
            out[b0:b1] = _jsd_rows(lp, lp.exp(), _summable(logprobs_nv[b0:b1]).to(lp.dtype)).cpu().numpy()
    return out


def _summable(lp: torch.Tensor) -> torch.Tensor:
    if not lp.is_floating_point() or lp.dtype in (torch.float16, torch.bfloat16):
        return lp.float()  # half-precision sums over 10^5 terms lose the small divergences
    return lp


def jsd_to_final(
    hidden_ltd,
    to_logprobs: LogProbFn,
    chunk_tokens: int = 128,
    final_logprobs_tv: torch.Tensor | None = None,
    normalized: bool = True,
) -> np.ndarray:
    """D[l, t] = JSD(p_{t,L} || p_{t,l}) for every layer and token: float64 [L, T], nats.

    hidden_ltd: [L, T, d] (tensor, array, or a sequence of L [T, d] arrays): the output of each
        decoder block 1..L at the positions that produced the tokens, all *before* the final norm
        (HF's hidden_states[-1] is already normed: use a hook on the last block, and drop
        hidden_states[0], the embeddings).
    to_logprobs: applies the final norm and the unembedding and returns log_softmax over the
        vocabulary; it is applied to every layer, so layer L gives the real sampling distribution.
    chunk_tokens: rows per to_logprobs call; peak memory is a few [chunk_tokens, V] arrays.
    final_logprobs_tv: to_logprobs(hidden_ltd[-1]) [T, V] when the caller already has it (it needs
        the final distribution for confidence anyway), saving one unembedding per token.
    normalized: False when to_logprobs returns raw logits (any float dtype, e.g. a bfloat16
        product): each cache-sized block is then log-softmaxed in float32 where it is used, which
        saves two passes over every [chunk_tokens, V] array. final_logprobs_tv stays normalized.
    Row L is exactly 0 by definition (JSD of a distribution with itself) and is not computed.

    Two chunk sizes on purpose: the unembedding product wants many rows per call (M = 128 ran 1.6x
    faster per row than M = 32), the JSD wants few, so that its [rows, V] temporaries stay in L2
    (8-row blocks ran 2.5x faster than 32-row ones at V = 49,152; BENCHMARKS.md).
    """
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be an int >= 1, got {chunk_tokens!r}")
    n_layers = len(hidden_ltd)
    if n_layers < 1:
        raise ValueError("hidden_ltd has no layers")
    n_t = len(hidden_ltd[0])
    if any(len(hidden_ltd[l]) != n_t for l in range(n_layers)):
        raise ValueError("every layer of hidden_ltd must have the same number of tokens")
    out_lt = np.zeros((n_layers, n_t), dtype=np.float64)

    def layer_chunk(l: int, t0: int, t1: int) -> torch.Tensor:
        h = hidden_ltd[l][t0:t1]
        h = h if isinstance(h, torch.Tensor) else torch.as_tensor(np.asarray(h))
        lp = to_logprobs(h)
        if lp.ndim != 2 or lp.shape[0] != t1 - t0:
            raise ValueError(f"to_logprobs returned shape {tuple(lp.shape)} for {t1 - t0} rows")
        return lp if not normalized else _summable(lp)

    def final_chunk(t0: int, t1: int) -> torch.Tensor:
        if final_logprobs_tv is not None:
            return _summable(final_logprobs_tv[t0:t1])
        final = layer_chunk(n_layers - 1, t0, t1)
        return final if normalized else torch.log_softmax(_summable(final), dim=-1)

    if final_logprobs_tv is not None and tuple(final_logprobs_tv.shape[:1]) != (n_t,):
        raise ValueError(f"final_logprobs_tv has {final_logprobs_tv.shape[0]} rows for {n_t} tokens")
    with torch.no_grad():
        for t0 in range(0, n_t, chunk_tokens):
            t1 = min(t0 + chunk_tokens, n_t)
            lp_final = final_chunk(t0, t1).clamp_min(_LOG_FLOOR)
            p_final = lp_final.exp()
            p_log_p = None if normalized else (p_final * lp_final).sum(-1)
            for l in range(n_layers - 1):
                head = layer_chunk(l, t0, t1)
                for b0 in range(0, t1 - t0, _JSD_BLOCK_ROWS):
                    b1 = min(b0 + _JSD_BLOCK_ROWS, t1 - t0)
                    if normalized:
                        jsd = _jsd_rows(lp_final[b0:b1], p_final[b0:b1], head[b0:b1].to(lp_final.dtype))
                    else:
                        jsd = _jsd_rows_from_logits(p_final[b0:b1], p_log_p[b0:b1], head[b0:b1])
                    out_lt[l, t0 + b0 : t0 + b1] = jsd.cpu().numpy()
    return out_lt


def settling_depth(jsd_lt, g: float = 0.5) -> np.ndarray:
    """c_t = min { l : min_{j<=l} D[j, t] <= g }, 1-based: int64 [T] in 1..L.

    Raises if some token never settles (impossible for jsd_to_final output, whose last row is 0)
    or if D has NaNs, rather than inventing a depth.
    """
    d_lt = np.asarray(jsd_lt, dtype=np.float64)
    if d_lt.ndim != 2 or d_lt.shape[0] < 1:
        raise ValueError(f"jsd_lt must be [L, T] with L >= 1, got shape {d_lt.shape}")
    if np.isnan(d_lt).any():
        raise ValueError("jsd_lt contains NaN")
    # The paper's running minimum; the first layer where it reaches g is also the first layer
    # where D itself does, so this is the first crossing of g.
    settled_lt = np.minimum.accumulate(d_lt, axis=0) <= g
    if not settled_lt[-1].all():
        bad = np.flatnonzero(~settled_lt[-1])
        raise ValueError(f"{bad.size} token(s) never reach JSD <= g={g} (first: t={bad[0]}); the last layer must be ~0")
    return settled_lt.argmax(axis=0).astype(np.int64) + 1


def deep_band_start(n_layers: int, rho: float = 0.85) -> int:
    """First deep layer, ceil(rho * L), 1-based.

    The product is rounded to 9 decimals first so that binary noise cannot push an exact integer
    up a layer (0.55 * 100 = 55.00000000000001 would otherwise give 56).
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
    if not (math.isfinite(rho) and 0 < rho <= 1):
        raise ValueError(f"rho must be in (0, 1], got {rho!r}")
    return max(1, math.ceil(round(rho * n_layers, 9)))


def deep_thinking_mask(depth_t, n_layers: int, rho: float = 0.85) -> np.ndarray:
    """bool [T]: token settles in the deep band (depth >= ceil(rho * L))."""
    depth = np.asarray(depth_t)
    if depth.size and (depth.min() < 1 or depth.max() > n_layers):
        raise ValueError(f"depths must lie in 1..{n_layers}")
    return depth >= deep_band_start(n_layers, rho)


def deep_thinking_ratio(depth_t, n_layers: int, rho: float = 0.85) -> float:
    """Fraction of deep-thinking tokens, in [0, 1]; NaN for an empty trace (no tokens, no ratio)."""
    mask = deep_thinking_mask(depth_t, n_layers, rho)
    return float(mask.mean()) if mask.size else float("nan")


def prefix_dtr(depth_t, n_layers: int, settings: DTRSettings = DTRSettings()) -> float:
    """DTR over the first settings.prefix_tokens tokens (all of them if the trace is shorter)."""
    return deep_thinking_ratio(np.asarray(depth_t)[: settings.prefix_tokens], n_layers, settings.rho)


@dataclass(frozen=True)
class ThinkAtNResult:
    answer: Hashable | None  # None when no kept sample has an answer
    kept: tuple[int, ...]  # sample indices kept, best prefix DTR first
    votes: dict  # answer -> number of kept samples voting for it


def think_at_n_select(
    dtr_prefix_per_sample: Sequence[float],
    answers: Sequence[Hashable | None],
    keep_fraction: float = 0.5,
) -> ThinkAtNResult:
    """Think@n: rank samples by prefix DTR, keep the top ceil(keep_fraction * n), majority-vote.

    answers must already be canonical (equal answers compare equal); None marks a sample with no
    extractable answer: it can be kept but does not vote. Ranking ties keep sample order, NaN DTRs
    rank last. A vote tie goes to the answer whose best-ranked voter ranks highest.
    """
    dtr = np.asarray(dtr_prefix_per_sample, dtype=np.float64)
    if dtr.ndim != 1 or dtr.size != len(answers):
        raise ValueError(f"need one prefix DTR per answer, got {dtr.shape} and {len(answers)}")
    if not (math.isfinite(keep_fraction) and 0 < keep_fraction <= 1):
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction!r}")
    n = dtr.size
    if n == 0:
        return ThinkAtNResult(answer=None, kept=(), votes={})
    key = np.where(np.isnan(dtr), -np.inf, dtr)
    order = np.argsort(-key, kind="stable")
    kept = tuple(int(i) for i in order[: max(1, math.ceil(keep_fraction * n))])
    votes = Counter(answers[i] for i in kept if answers[i] is not None)
    if not votes:
        return ThinkAtNResult(answer=None, kept=kept, votes={})
    first_rank = {}
    for rank, i in enumerate(kept):
        first_rank.setdefault(answers[i], rank)
    best = max(votes, key=lambda a: (votes[a], -first_rank[a]))
    return ThinkAtNResult(answer=best, kept=kept, votes=dict(votes))
