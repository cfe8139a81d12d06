"""Logit-lens JSD, settling depth, deep-thinking ratio and Think@n (docs/METHODS.md §2)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis.logit_lens import (
    LN2,
    DTRSettings,
    deep_band_start,
    deep_thinking_mask,
    deep_thinking_ratio,
    jsd_to_final,
    prefix_dtr,
    settling_depth,
    think_at_n_select,
)


def tiny_lens(d: int, n_vocab: int, seed: int = 0, dtype=torch.float64):
    """A final RMSNorm + unembedding, like a decoder's head, as the caller would supply it."""
    g = torch.Generator().manual_seed(seed)
    weight = (1 + 0.1 * torch.randn(d, generator=g, dtype=torch.float64)).to(dtype)
    w_u = (torch.randn(d, n_vocab, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    calls = []

    def to_logprobs(h):
        calls.append(h.shape[0])
        h = h.to(dtype)
        normed = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * weight
        return torch.log_softmax(normed @ w_u, dim=-1)

    return to_logprobs, calls


def reference_jsd(hidden_ltd: np.ndarray, to_logprobs) -> np.ndarray:
    """Explicit float64 formula: p, q as probabilities, m = (p + q) / 2, two KL sums."""
    n_layers, n_t, _ = hidden_ltd.shape
    out = np.zeros((n_layers, n_t))
    final = np.exp(to_logprobs(torch.tensor(hidden_ltd[-1])).double().numpy())
    for l in range(n_layers):
        q = np.exp(to_logprobs(torch.tensor(hidden_ltd[l])).double().numpy())
        for t in range(n_t):
            p_t, q_t = final[t], q[t]
            m = 0.5 * (p_t + q_t)
            out[l, t] = 0.5 * np.sum(p_t * np.log(p_t / m)) + 0.5 * np.sum(q_t * np.log(q_t / m))
    return out


def test_jsd_matches_explicit_formula_and_invariants():
    rng = np.random.default_rng(0)
    n_layers, n_t, d, n_vocab = 6, 11, 8, 50
    # later layers drift towards the last one, as in a real residual stream
    base = rng.normal(size=(n_t, d))
    hidden = np.stack([base + rng.normal(scale=2.0 * (n_layers - l) / n_layers, size=(n_t, d)) for l in range(n_layers)])
    to_logprobs, calls = tiny_lens(d, n_vocab)
    got = jsd_to_final(hidden, to_logprobs, chunk_tokens=4)
    rows_per_call = list(calls)
    want = reference_jsd(hidden, to_logprobs)
    assert got.shape == (n_layers, n_t) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    assert (got >= 0).all() and (got <= LN2).all()
    assert (got[-1] == 0).all()
    assert got[0].mean() > got[-2].mean() > 0  # the fixture really drifts
    assert max(rows_per_call) == 4  # never more than chunk_tokens rows at once
    assert sum(rows_per_call) == n_layers * n_t  # each (layer, token) pushed through the head once


def test_jsd_accepts_a_list_of_layers_float32_and_chunk_sizes_agree():
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(4, 9, 6)).astype(np.float32)
    to_logprobs, _ = tiny_lens(6, 40, seed=3, dtype=torch.float32)
    a = jsd_to_final([torch.tensor(hidden[l]) for l in range(4)], to_logprobs, chunk_tokens=2)
    b = jsd_to_final(torch.tensor(hidden), to_logprobs, chunk_tokens=128)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a, reference_jsd(hidden.astype(np.float64), tiny_lens(6, 40, seed=3)[0]), atol=2e-6)


def test_jsd_blocks_and_a_supplied_final_layer_give_the_reference():
    # 21 tokens in 16-token lens calls: JSD blocks of 8 rows end mid-chunk and at a ragged tail.
    rng = np.random.default_rng(4)
    hidden = rng.normal(size=(5, 21, 6))
    to_logprobs, calls = tiny_lens(6, 30, seed=5)
    want = reference_jsd(hidden, to_logprobs)
    calls.clear()
    final = to_logprobs(torch.tensor(hidden[-1]))
    got = jsd_to_final(hidden, to_logprobs, chunk_tokens=16, final_logprobs_tv=final)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    assert sum(calls) == 1 * 21 + 4 * 21  # the final layer is not pushed through the head again
    with pytest.raises(ValueError, match="rows"):
        jsd_to_final(hidden, to_logprobs, final_logprobs_tv=final[:5])


def test_jsd_from_raw_logits_normalizes_each_block():
    # Log-probs shifted by a different constant per row are valid raw logits of the same distributions.
    rng = np.random.default_rng(6)
    hidden = rng.normal(size=(4, 19, 5))
    to_logprobs, _ = tiny_lens(5, 25, seed=7)
    shift = torch.tensor(rng.normal(scale=10.0, size=(19, 1)))
    to_logits = lambda h: to_logprobs(h) + shift[: h.shape[0]]  # noqa: E731  (chunk_tokens >= 19: one call per layer)
    want = reference_jsd(hidden, to_logprobs)
    np.testing.assert_allclose(jsd_to_final(hidden, to_logits, normalized=False), want, rtol=1e-10, atol=1e-14)
    final = to_logprobs(torch.tensor(hidden[-1]))
    got = jsd_to_final(hidden, to_logits, normalized=False, final_logprobs_tv=final)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


def test_jsd_extremes_disjoint_and_identical_supports():
    # Layer 0 puts all mass on token 0, the final layer on token 1; layer 1 equals the final one.
    def to_logprobs(h):
        lp = torch.full((h.shape[0], 3), -math.inf, dtype=torch.float64)
        lp[torch.arange(h.shape[0]), h[:, 0].long()] = 0.0
        return lp

    hidden = torch.tensor([[[0.0], [0.0]], [[1.0], [1.0]], [[1.0], [1.0]]])
    got = jsd_to_final(hidden, to_logprobs)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, [[LN2, LN2], [0.0, 0.0], [0.0, 0.0]], atol=1e-15)


def test_settling_depth_uses_running_minimum_and_is_one_based():
    jsd = np.array(
        [
            [0.90, 0.30, 0.40, 0.60],
            [0.40, 0.60, 0.70, 0.55],
            [0.10, 0.60, 0.60, 0.50],
            [0.00, 0.00, 0.00, 0.00],
        ]
    )
    # token 0 first <= 0.5 at layer 2; token 1 at layer 1; token 2 at layer 1 even though layers
    # 2-3 go back above g (once settled, always settled); token 3 reaches exactly g at layer 3
    # (<= is inclusive).
    assert settling_depth(jsd, 0.5).tolist() == [2, 1, 1, 3]
    assert settling_depth(jsd, 0.35).tolist() == [3, 1, 4, 4]
    assert settling_depth(jsd, 0.0).tolist() == [4, 4, 4, 4]


def test_settling_depth_rejects_unsettled_or_nan():
    with pytest.raises(ValueError, match="never reach"):
        settling_depth(np.array([[0.6], [0.6]]), 0.5)
    with pytest.raises(ValueError):
        settling_depth(np.array([[np.nan], [0.0]]), 0.5)


def test_deep_band_start_rounding():
    assert deep_band_start(100, 0.55) == 55  # 0.55 * 100 = 55.00000000000001 in binary
    assert deep_band_start(10, 0.7) == 7
    assert deep_band_start(28, 0.85) == 24  # ceil(23.8)
    assert deep_band_start(20, 0.85) == 17
    assert deep_band_start(36, 0.85) == 31  # ceil(30.6)
    assert deep_band_start(30, 0.15) == 5  # the "(1 - rho) L" reading is rho -> 1 - rho
    assert deep_band_start(1, 0.85) == 1
    with pytest.raises(ValueError):
        deep_band_start(0, 0.85)
    with pytest.raises(ValueError):
        deep_band_start(10, 0.0)


def test_mask_and_ratio():
    depth = np.array([24, 23, 28, 1, 25, 2])
    assert deep_thinking_mask(depth, 28, 0.85).tolist() == [True, False, True, False, True, False]
    assert deep_thinking_ratio(depth, 28, 0.85) == 0.5
    assert deep_thinking_ratio(depth, 28, 0.95) == 1 / 6  # band starts at 27
    assert math.isnan(deep_thinking_ratio(np.array([], dtype=int), 28, 0.85))
    with pytest.raises(ValueError):
        deep_thinking_mask(np.array([0, 3]), 28, 0.85)
    with pytest.raises(ValueError):
        deep_thinking_mask(np.array([29]), 28, 0.85)


def test_end_to_end_ratio_in_unit_interval():
    rng = np.random.default_rng(4)
    n_layers = 8
    hidden = np.cumsum(rng.normal(size=(n_layers, 30, 6)), axis=0)
    to_logprobs, _ = tiny_lens(6, 30, seed=5)
    depth = settling_depth(jsd_to_final(hidden, to_logprobs), 0.5)
    assert depth.min() >= 1 and depth.max() <= n_layers
    dtr = deep_thinking_ratio(depth, n_layers, 0.85)
    assert 0.0 <= dtr <= 1.0
    assert dtr == np.mean(depth >= 7)


def test_prefix_dtr_uses_first_tokens():
    depth = np.array([10] * 50 + [1] * 50)
    assert prefix_dtr(depth, 10) == 1.0
    assert prefix_dtr(depth, 10, DTRSettings(prefix_tokens=100)) == 0.5
    assert prefix_dtr(depth[:20], 10) == 1.0


def test_think_at_n_keeps_top_half_then_votes():
    dtr = [0.1, 0.5, 0.3, 0.4, 0.2, 0.6]
    answers = ["a", "b", "a", "c", "a", "c"]  # plain majority would say "a"
    res = think_at_n_select(dtr, answers)
    assert res.kept == (5, 1, 3)
    assert res.votes == {"c": 2, "b": 1}
    assert res.answer == "c"


def test_think_at_n_ties_odd_n_none_and_nan():
    # vote tie 1-1: the answer of the best-ranked sample wins
    assert think_at_n_select([0.9, 0.8, 0.1, 0.2], ["x", "y", "x", "x"]).answer == "x"
    assert think_at_n_select([0.8, 0.9, 0.1, 0.2], ["x", "y", "x", "x"]).answer == "y"
    # odd n keeps ceil(n / 2); NaN DTR ranks last; None does not vote
    res = think_at_n_select([np.nan, 0.2, 0.3, 0.1, 0.4], ["z", None, "q", "q", "r"])
    assert res.kept == (4, 2, 1)
    assert res.votes == {"r": 1, "q": 1} and res.answer == "r"
    assert think_at_n_select([0.5], [None]).answer is None
    assert think_at_n_select([], []).kept == ()
    with pytest.raises(ValueError):
        think_at_n_select([0.1, 0.2], ["a"])


def test_settings_validate():
    DTRSettings()
    for bad in (dict(g=-0.1), dict(rho=0.0), dict(rho=1.5), dict(prefix_tokens=0), dict(keep_fraction=0.0)):
        with pytest.raises(ValueError):
            DTRSettings(**bad)
