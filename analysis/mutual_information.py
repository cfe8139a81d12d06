"""Mutual-information curve m_t between generated steps and a reference (docs/METHODS.md §1).

The estimator is the authors' normalized HSIC: each d-dim vector is d scalar samples,
K_ij = exp(-(v_i - v_j)^2 / (2 sigma^2)), H = I - 11^T/d, K~ = K H, R = K~ (K~ + c I)^-1 with
c = eps * d, and m_t = trace(R_{h_t} R_{h_y}).

Two exact rewrites make it cheap; both are proved here once and tested against the literal
formula in tests/test_analysis_mi.py:

1. Symmetric form. In an orthonormal basis whose first vector is 1/sqrt(d), K H + c I is block
   upper-triangular with diagonal blocks (c, S + c I), where S is K restricted to the complement
   of 1 (S ~ H K H). The trace of a product of two such matrices only sees the diagonal blocks, so
       m_t = trace(R^s_t R^s_y),   R^s = S (S + c I)^-1 = H K H (H K H + c I)^-1,
   which is symmetric positive semi-definite with eigenvalues in [0, 1).
2. Factored form. With S = F F^T (F: [d, r]), R^s = F (F^T F + c I)^-1 F^T (push-through
   identity), so only r x r systems are solved.

The reference side is factored once by an eigendecomposition: R^s_y = W W^T, W = V diag(sqrt(f)),
f = lam / (lam + c). Every token then costs one of:
- fast path: a pivoted Cholesky factor of its kernel, K ~ G G^T, built column by column from the
  d scalars (the d x d kernel is never formed), F = H G, then m_t = ||L_A^-1 F^T W||_F^2 with
  L_A the Cholesky factor of F^T F + c I. Hidden states have a few huge coordinates and a tight
  bulk, so the kernel has low numerical rank (SmolLM2-135M, sigma = 50: rank 15-45 of 576);
- exact path: Cholesky of S + c I, m_t = <L^-1 W, L^-1 S W>_F (a Frobenius inner product, never a
  d x d matmul); used when tol == 0 or a token needs more than max_rank columns.

Error budget of the fast path (absolute, in units of m_t): dropping reference components with
total f mass delta changes m_t by at most delta, because each v^T R^s_t v lies in [0, 1]; stopping
the pivoted Cholesky with residual trace E changes R^s_t by at most E / c in trace norm, and
||R^s_y||_2 < 1. Each side gets tol / 2. Residual diagonals below _PIVOT_FLOOR are treated as
rounding noise, which bounds the certificate at about _PIVOT_FLOOR / eps ~ 1e-9 when tol is
smaller: the same order as the rounding error of the exact path itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

# Residual kernel diagonal (the kernel diagonal is exactly 1) below which pivots are rounding noise.
_PIVOT_FLOOR = 1e-14
# Working-set cap for the exact path's d x d float64 buffers.
_EXACT_BATCH_BYTES = 1 << 30


@dataclass(frozen=True)
class MISettings:
    """Parameters of the HSIC estimator and the peak rule.

    sigma: Gaussian kernel width, in the units of the hidden-state coordinates (paper grid 50-400).
    eps: ridge, scaled by d inside the estimator (c = eps * d).
    peak_tau: IQR multiplier of the peak rule.
    tol: absolute bound on |m_t - exact m_t| allowed to the low-rank fast path; 0 selects the
        exact Cholesky path for every token (about 100x slower at d = 576).
    max_rank: pivoted-Cholesky columns per token before that token falls back to the exact path.
    """

    sigma: float = 50.0
    eps: float = 1e-5
    peak_tau: float = 1.5
    tol: float = 1e-9
    max_rank: int = 128

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"MISettings.sigma must be a positive finite number, got {self.sigma!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"MISettings.eps must be a positive finite number, got {self.eps!r}")
        if not (math.isfinite(self.peak_tau) and self.peak_tau >= 0):
            raise ValueError(f"MISettings.peak_tau must be finite and >= 0, got {self.peak_tau!r}")
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"MISettings.tol must be finite and >= 0, got {self.tol!r}")
        if isinstance(self.max_rank, bool) or not isinstance(self.max_rank, int) or self.max_rank < 1:
            raise ValueError(f"MISettings.max_rank must be an int >= 1, got {self.max_rank!r}")


ProgressFn = Callable[[int, int], None]  # (tokens done, tokens total)


def _as_float64(x, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _centered_kernel_(x_bd: torch.Tensor, inv_2s2: float, out_bdd: torch.Tensor) -> torch.Tensor:
    """H K H for each row of x_bd, written into out_bdd (in place: this is the memory-bound step)."""
    k = torch.sub(x_bd[:, :, None], x_bd[:, None, :], out=out_bdd)
    k.square_().mul_(-inv_2s2).exp_()
    row_mean = k.mean(-1, keepdim=True)  # K is symmetric, so row and column means coincide
    k.sub_(row_mean).sub_(row_mean.transpose(-1, -2)).add_(row_mean.mean(-2, keepdim=True))
    return k


def _reference_factor(y_d: torch.Tensor, sigma: float, c: float, drop_mass: float) -> torch.Tensor:
    """W [d, r_y] with W W^T = R^s_y, minus the smallest components whose f mass is <= drop_mass."""
    d = y_d.shape[0]
    s = _centered_kernel_(y_d[None], 0.5 / sigma**2, y_d.new_empty(1, d, d))[0]
    lam, vec = torch.linalg.eigh(s)  # ascending; negative values are rounding of a PSD matrix
    lam = lam.clamp_min(0.0)
    f = lam / (lam + c)
    n_drop = int((torch.cumsum(f, 0) <= drop_mass).sum())
    n_drop = max(n_drop, int((f <= 0).sum()))
    return vec[:, n_drop:] * f[n_drop:].sqrt()


def _pivoted_cholesky(x_bd: torch.Tensor, inv_2s2: float, trace_budget: float, max_rank: int):
    """Per row b, G_b [r, d] with K_b ~ G_b^T G_b and residual trace <= trace_budget.

    Returns (G [B, r, d], converged [B] bool). Factor columns are stored as rows so each step
    writes and reads contiguous memory. Rows that stopped early get zero columns, which is
    harmless downstream: a zero column of F leaves m_t unchanged.
    """
    n_b, d = x_bd.shape
    cols = min(max_rank, d)
    g_brd = x_bd.new_empty(n_b, cols, d)
    resid_bd = torch.ones_like(x_bd)  # exp(0) = 1 on the kernel diagonal
    rows = torch.arange(n_b, device=x_bd.device)
    used = 0
    for k in range(cols):
        pmax, piv = resid_bd.max(-1)
        active = (resid_bd.sum(-1) > trace_budget) & (pmax > _PIVOT_FLOOR)
        if not bool(active.any()):
            break
        col = torch.exp((x_bd - x_bd[rows, piv][:, None]).square_().mul_(-inv_2s2))
        if k:
            g_piv = g_brd[rows, :k, piv]  # [B, k]
            col -= torch.bmm(g_piv[:, None, :], g_brd[:, :k, :])[:, 0, :]
        scale = torch.where(active, pmax.clamp_min(_PIVOT_FLOOR).rsqrt(), torch.zeros_like(pmax))
        col.mul_(scale[:, None])
        g_brd[:, k, :] = col
        resid_bd.sub_(col.square()).clamp_min_(0.0)
        resid_bd[rows[active], piv[active]] = 0.0
        used = k + 1
    pmax = resid_bd.max(-1).values
    converged = (resid_bd.sum(-1) <= trace_budget) | (pmax <= _PIVOT_FLOOR)
    return g_brd[:, :used, :], converged


def _mi_lowrank(x_bd, w_dr, inv_2s2, c, trace_budget, max_rank):
    """(m [B], converged [B]); rows not converged carry garbage and must be recomputed."""
    g_brd, converged = _pivoted_cholesky(x_bd, inv_2s2, trace_budget, max_rank)
    n_b, r, _ = g_brd.shape
    if r == 0:  # every kernel was at the noise floor: constant vectors, R^s = 0
        return x_bd.new_zeros(n_b), converged
    ft_brd = g_brd - g_brd.mean(-1, keepdim=True)  # (H G)^T
    a_brr = ft_brd @ ft_brd.transpose(-1, -2)
    a_brr.diagonal(dim1=-2, dim2=-1).add_(c)
    chol, info = torch.linalg.cholesky_ex(a_brr)
    proj = ft_brd @ w_dr  # F^T W: [B, r, r_y]
    sol = torch.linalg.solve_triangular(chol, proj, upper=False)
    return sol.square().sum((-1, -2)), converged & (info == 0)


def _mi_exact(x_bd, w_dr, inv_2s2, c, buf_bdd):
    s = _centered_kernel_(x_bd, inv_2s2, buf_bdd[: x_bd.shape[0]])
    sw = s @ w_dr  # [B, d, r_y], taken before the ridge goes onto the diagonal
    s.diagonal(dim1=-2, dim2=-1).add_(c)
    chol, info = torch.linalg.cholesky_ex(s)
    if bool((info != 0).any()):  # S is PSD and c >= 2e-5, so only a bug can land here
        raise FloatingPointError("Cholesky of the ridged centred kernel failed")
    lw = torch.linalg.solve_triangular(chol, w_dr.expand(x_bd.shape[0], *w_dr.shape), upper=False)
    lsw = torch.linalg.solve_triangular(chol, sw, upper=False)
    return (lw * lsw).sum((-1, -2))  # <L^-1 W, L^-1 S W>_F = trace(W^T (S + cI)^-1 S W)


def mi_curve(
    hidden_td,
    reference_d,
    settings: MISettings = MISettings(),
    batch_size: int = 256,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """m_t = trace(R_{h_t} R_{h_y}) for every generated step: float64 [T].

    hidden_td: [T, d] last-block outputs (before the final norm) at the positions that produced
        tokens 1..T, prompt positions excluded. HF `hidden_states[-1]` is *after* the final norm
        (transformers overwrites it with last_hidden_state); take the block output from a hook.
    reference_d: [d] the same block's last-position output over the reference text alone.
    batch_size: tokens per batched solve; progress(done, total) is called after each batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    h_td = _as_float64(hidden_td, "hidden_td")
    y_d = _as_float64(reference_d, "reference_d").to(h_td.device)
    if h_td.ndim != 2 or y_d.ndim != 1 or h_td.shape[1] != y_d.shape[0]:
        raise ValueError(f"need hidden_td [T, d] and reference_d [d], got {tuple(h_td.shape)} and {tuple(y_d.shape)}")
    n_t, d = h_td.shape
    if d < 2:
        raise ValueError("the estimator needs d >= 2 coordinates")
    out_t = np.empty(n_t, dtype=np.float64)
    if n_t == 0:
        return out_t

    c = settings.eps * d
    inv_2s2 = 0.5 / settings.sigma**2
    exact_only = settings.tol == 0
    w_dr = _reference_factor(y_d, settings.sigma, c, settings.tol / 2)
    trace_budget = settings.tol / 2 * c
    exact_batch = max(1, min(batch_size, _EXACT_BATCH_BYTES // (3 * d * d * 8)))
    buf_bdd = None

    def exact(x_bd: torch.Tensor) -> torch.Tensor:
        nonlocal buf_bdd
        if buf_bdd is None:
            buf_bdd = x_bd.new_empty(exact_batch, d, d)
        parts = [_mi_exact(x_bd[i : i + exact_batch], w_dr, inv_2s2, c, buf_bdd) for i in range(0, x_bd.shape[0], exact_batch)]
        return torch.cat(parts)

    with torch.no_grad():
        for start in range(0, n_t, batch_size):
            x_bd = h_td[start : start + batch_size]
            if exact_only:
                m_b = exact(x_bd)
            else:
                m_b, ok = _mi_lowrank(x_bd, w_dr, inv_2s2, c, trace_budget, settings.max_rank)
                if not bool(ok.all()):
                    m_b[~ok] = exact(x_bd[~ok])
            out_t[start : start + x_bd.shape[0]] = m_b.cpu().numpy()
            if progress is not None:
                progress(min(start + batch_size, n_t), n_t)
    return out_t


def mi_peaks(m_t, tau: float = 1.5) -> tuple[np.ndarray, float]:
    """IQR peak rule over one trace: (peak_mask [T] bool, threshold) with m_t > Q3 + tau * IQR.

    Quartiles use numpy's default linear interpolation between order statistics (the
    "type 7" rule). Non-finite m_t values are ignored for the quartiles and never peaks; a
    trace with no finite value has threshold NaN and no peaks.
    """
    m = np.asarray(m_t, dtype=np.float64)
    if m.ndim != 1:
        raise ValueError(f"m_t must be 1-D, got shape {m.shape}")
    if not math.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau!r}")
    finite = np.isfinite(m)
    if not finite.any():
        return np.zeros(m.shape, dtype=bool), float("nan")
    q1, q3 = np.percentile(m[finite], [25.0, 75.0])
    threshold = float(q3 + tau * (q3 - q1))
    return finite & (m > threshold), threshold
