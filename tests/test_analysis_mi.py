"""mi_curve against the literal docs/METHODS.md §1 formula, and the IQR peak rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.mutual_information import MISettings, mi_curve, mi_peaks


def slow_mi(hidden_td: np.ndarray, reference_d: np.ndarray, sigma: float = 50.0, eps: float = 1e-5) -> np.ndarray:
    """Literal estimator: explicit kernel, explicit H, explicit inverse, trace of a matmul."""
    d = reference_d.shape[0]
    eye = np.eye(d)
    centering = eye - np.ones((d, d)) / d

    def r_matrix(v):
        kernel = np.exp(-((v[:, None] - v[None, :]) ** 2) / (2 * sigma**2))
        kt = kernel @ centering
        return kt @ np.linalg.inv(kt + eps * d * eye)

    r_y = r_matrix(reference_d)
    return np.array([np.trace(r_matrix(v) @ r_y) for v in hidden_td])


def hidden_like(rng, n_t: int, d: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian bulk plus a few huge coordinates, the shape of real residual streams."""
    h = rng.normal(0.0, scale, (n_t, d))
    h[:, :3] *= 20.0
    y = rng.normal(0.0, scale, d)
    y[:3] *= 20.0
    return h, y


CASES = [(16, 30.0), (32, 100.0), (48, 300.0), (64, 50.0), (64, 8.0)]


@pytest.mark.parametrize("d,scale", CASES)
@pytest.mark.parametrize(
    "settings",
    [MISettings(), MISettings(tol=0.0), MISettings(max_rank=2)],
    ids=["lowrank", "exact", "lowrank-fallback"],
)
def test_matches_literal_formula(d, scale, settings):
    rng = np.random.default_rng(d + int(scale))
    h, y = hidden_like(rng, 12, d, scale)
    expected = slow_mi(h, y, settings.sigma, settings.eps)
    got = mi_curve(h, y, settings, batch_size=5)
    assert got.shape == (12,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=0)


def test_other_sigma_and_eps_and_torch_input():
    rng = np.random.default_rng(7)
    h, y = hidden_like(rng, 6, 40, 60.0)
    s = MISettings(sigma=200.0, eps=1e-3)
    got = mi_curve(torch.tensor(h, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), s)
    # float32 input is converted to float64 first; compare with the same rounded inputs
    h32, y32 = h.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(got, slow_mi(h32, y32, 200.0, 1e-3), rtol=1e-8)
    assert not np.allclose(got, slow_mi(h, y), rtol=1e-3)  # sigma and eps do matter


def test_known_values():
    # Constant vector: the centred kernel is 0, so R = 0 and m = 0 whatever the reference.
    y = np.linspace(-100, 100, 16)
    assert mi_curve(np.full((1, 16), 3.0), y)[0] == pytest.approx(0.0, abs=1e-12)
    # Two-valued vector {-a, a} and the same vector as reference: centred kernel has rank 1 with
    # eigenvalue lam = d/2 * (1 - exp(-2 a^2 / sigma^2)); m = (lam / (lam + eps d))^2.
    d, a, sigma, eps = 8, 40.0, 50.0, 1e-5
    v = np.array([-a, a] * (d // 2))
    lam = d / 2 * (1 - np.exp(-2 * a**2 / sigma**2))
    want = (lam / (lam + eps * d)) ** 2
    assert mi_curve(v[None], v, MISettings())[0] == pytest.approx(want, rel=1e-10)
    assert mi_curve(v[None], v, MISettings(tol=0))[0] == pytest.approx(want, rel=1e-10)


def test_batching_and_progress_do_not_change_values():
    rng = np.random.default_rng(3)
    h, y = hidden_like(rng, 23, 24, 40.0)
    seen = []
    a = mi_curve(h, y, batch_size=4, progress=lambda done, total: seen.append((done, total)))
    b = mi_curve(h, y, batch_size=64)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert seen == [(4, 23), (8, 23), (12, 23), (16, 23), (20, 23), (23, 23)]


def test_token_order_is_kept():
    rng = np.random.default_rng(5)
    h, y = hidden_like(rng, 9, 20, 50.0)
    forward = mi_curve(h, y)
    backward = mi_curve(h[::-1].copy(), y)
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-12)
    assert np.ptp(forward) > 0.01  # the test would be vacuous on a flat curve


def test_input_validation():
    y = np.zeros(8)
    assert mi_curve(np.zeros((0, 8)), y).shape == (0,)
    with pytest.raises(ValueError):
        mi_curve(np.zeros((3, 7)), y)
    with pytest.raises(ValueError):
        mi_curve(np.full((2, 8), np.nan), y)
    with pytest.raises(ValueError):
        mi_curve(np.zeros((2, 8)), y, batch_size=0)
    for bad in (dict(sigma=0.0), dict(eps=-1.0), dict(peak_tau=float("nan")), dict(tol=-1e-9), dict(max_rank=0)):
        with pytest.raises(ValueError):
            MISettings(**bad)


# ---- peaks -----------------------------------------------------------------------------------


def test_peaks_iqr_rule_by_hand():
    # values 1..8 plus 40: Q1 = 3, Q3 = 7 (linear interpolation on 9 values: positions 2 and 6),
    # IQR = 4, threshold = 7 + 1.5 * 4 = 13.
    m = np.array([3.0, 1, 40, 2, 5, 4, 8, 6, 7])
    mask, thr = mi_peaks(m, 1.5)
    assert thr == 13.0
    assert mask.tolist() == [False, False, True, False, False, False, False, False, False]


def test_peaks_linear_interpolation_and_strictness():
    # 4 values 0, 10, 20, 30: linear quartiles at positions 0.75 and 2.25 -> Q1 = 7.5, Q3 = 22.5.
    mask, thr = mi_peaks(np.array([0.0, 10, 20, 30]), 0.5)
    assert thr == pytest.approx(22.5 + 0.5 * 15.0)  # 30.0: the top value equals it, not above
    assert thr == 30.0 and not mask.any()
    mask, thr = mi_peaks(np.array([0.0, 10, 20, 30]), 0.0)
    assert thr == 22.5 and mask.tolist() == [False, False, False, True]


def test_peaks_are_per_trace_and_handle_degenerate_curves():
    flat = np.full(10, 2.0)
    mask, thr = mi_peaks(flat, 1.5)
    assert thr == 2.0 and not mask.any()  # nothing is strictly above a flat line
    mask, thr = mi_peaks(np.array([]), 1.5)
    assert mask.shape == (0,) and np.isnan(thr)
    m = np.array([1.0, 2, np.nan, 3, 100])
    mask, thr = mi_peaks(m, 1.5)
    # quartiles over 1, 2, 3, 100: Q1 = 1.75, Q3 = 27.25, threshold = 27.25 + 1.5 * 25.5 = 65.5
    assert thr == pytest.approx(65.5) and mask.tolist() == [False, False, False, False, True]


def test_peaks_on_a_curve_from_mi_curve_are_rare():
    rng = np.random.default_rng(11)
    h, y = hidden_like(rng, 200, 32, 40.0)
    h[[17, 111]] = y + rng.normal(0, 0.1, 32)  # two steps that nearly equal the reference
    m = mi_curve(h, y)
    mask, thr = mi_peaks(m, MISettings().peak_tau)
    assert mask[17] and mask[111]
    assert mask.sum() < 0.05 * len(m)


def test_heavy_tailed_hidden_states_use_a_truncated_factor_and_still_match():
    # Real residual streams (SmolLM2-135M, measured) have median |v| ~ 15 and a few coordinates in
    # the hundreds; a t(3) bulk plus two fixed huge coordinates reproduces their kernel rank.
    import analysis.mutual_information as mi

    rng = np.random.default_rng(21)
    d = 192
    h = 20 * rng.standard_t(3, size=(5, d))
    h[:, 0], h[:, 1] = 500.0, -300.0
    y = 20 * rng.standard_t(3, size=d)
    y[0], y[1] = 480.0, -310.0
    s = MISettings()
    g_brd, converged = mi._pivoted_cholesky(torch.tensor(h), 0.5 / s.sigma**2, s.tol / 2 * s.eps * d, s.max_rank)
    assert converged.all() and g_brd.shape[1] < d // 3  # the fast path really is low rank here
    np.testing.assert_allclose(mi_curve(h, y, s), slow_mi(h, y), rtol=1e-8)


def test_top_informative_ranks_the_largest_finite_values():
    from analysis.trace_signals import top_informative

    m = np.array([0.2, np.nan, 0.9, 0.5, 0.9, -np.inf, 0.1])
    np.testing.assert_array_equal(top_informative(m, 3), [2, 4, 3])  # ties keep position order
    np.testing.assert_array_equal(top_informative(m, 10), [2, 4, 3, 0, 6])  # non-finite never listed
    assert top_informative(np.array([]), 5).size == 0
    with pytest.raises(ValueError, match="k must be"):
        top_informative(m, -1)
