"""Entropy, self-certainty and DeepConf confidence against slow loops (docs/METHODS.md §4)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis.confidence import (
    ConfidenceSettings,
    group_confidence,
    token_confidence,
    token_entropy,
    token_self_certainty,
    token_stats,
    trace_confidence,
    trace_self_certainty,
)


def random_logprobs(rng, n_t: int, n_vocab: int, temp: float = 2.0) -> np.ndarray:
    logits = rng.normal(scale=temp, size=(n_t, n_vocab))
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def slow_entropy(lp):
    return np.array([-sum(math.exp(x) * x for x in row if x > -math.inf) for row in lp])


def slow_self_certainty(lp):
    n_v = lp.shape[1]
    return np.array([-sum(row) / n_v - math.log(n_v) for row in lp])


def slow_confidence(lp, k):
    return np.array([-sum(sorted(row, reverse=True)[:k]) / k for row in lp])


def slow_groups(conf, window):
    if len(conf) < window:
        return [sum(conf) / len(conf)]
    return [sum(conf[i : i + window]) / window for i in range(len(conf) - window + 1)]


def test_token_level_signals_match_loops():
    rng = np.random.default_rng(0)
    lp = random_logprobs(rng, 13, 37)
    stats = token_stats(lp, k=20, chunk_tokens=4)
    np.testing.assert_allclose(stats.entropy, slow_entropy(lp), rtol=1e-12)
    np.testing.assert_allclose(stats.self_certainty, slow_self_certainty(lp), rtol=1e-12)
    np.testing.assert_allclose(stats.confidence, slow_confidence(lp, 20), rtol=1e-12)
    np.testing.assert_allclose(token_entropy(torch.tensor(lp)), stats.entropy, rtol=1e-12)
    np.testing.assert_allclose(token_self_certainty(lp), stats.self_certainty, rtol=1e-12)
    np.testing.assert_allclose(token_confidence(lp, k=20, chunk_tokens=5), stats.confidence, rtol=1e-12)
    assert (stats.entropy > 0).all() and (stats.entropy < math.log(37)).all()
    assert (stats.self_certainty > 0).all()


def test_known_values():
    n_v = 8
    uniform = np.full((1, n_v), -math.log(n_v))
    s = token_stats(uniform, k=3)
    assert s.entropy[0] == pytest.approx(math.log(n_v), rel=1e-14)
    assert s.self_certainty[0] == pytest.approx(0.0, abs=1e-14)
    assert s.confidence[0] == pytest.approx(math.log(n_v), rel=1e-14)
    # two equally likely tokens, the rest impossible: H = ln 2, KL(U || p) infinite
    two = np.full((1, n_v), -math.inf)
    two[0, :2] = -math.log(2)
    s = token_stats(two, k=2)
    assert s.entropy[0] == pytest.approx(math.log(2), rel=1e-14)
    assert s.self_certainty[0] == math.inf
    assert s.confidence[0] == pytest.approx(math.log(2), rel=1e-14)


def test_confidence_from_top_k_rows():
    rng = np.random.default_rng(1)
    full = random_logprobs(rng, 9, 100)
    top20 = -np.sort(-full, axis=1)[:, :20]
    shuffled = rng.permuted(top20, axis=1)
    np.testing.assert_allclose(token_confidence(top20, 20), slow_confidence(full, 20), rtol=1e-12)
    np.testing.assert_allclose(token_confidence(shuffled, 20), slow_confidence(full, 20), rtol=1e-12)
    np.testing.assert_allclose(token_confidence(top20, 5), slow_confidence(full, 5), rtol=1e-12)
    with pytest.raises(ValueError, match="k=20"):
        token_confidence(top20[:, :5], 20)


def test_float32_torch_rows_and_validation():
    rng = np.random.default_rng(2)
    lp = random_logprobs(rng, 6, 500)
    s32 = token_stats(torch.tensor(lp, dtype=torch.float32))
    np.testing.assert_allclose(s32.entropy, slow_entropy(lp), rtol=1e-5)
    np.testing.assert_allclose(s32.self_certainty, slow_self_certainty(lp), rtol=1e-5)
    with pytest.raises(ValueError, match="log-softmax"):
        token_stats(lp + 1.0)  # logits, not log-probs
    with pytest.raises(ValueError, match="NaN"):
        token_stats(np.full((1, 4), np.nan))
    with pytest.raises(ValueError):
        token_stats(lp[0])  # 1-D


def test_trace_self_certainty_over_response_tokens():
    sc = np.array([5.0, 1.0, 2.0, 3.0])
    assert trace_self_certainty(sc) == 2.75
    assert trace_self_certainty(sc, [False, True, True, True]) == 2.0
    assert math.isnan(trace_self_certainty(sc, [False] * 4))


def test_group_confidence_matches_loop():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 12.0, 257)
    for window in (1, 2, 16, 100, 257, 300):
        np.testing.assert_allclose(group_confidence(conf, window), slow_groups(list(conf), window), rtol=1e-12)
    assert group_confidence(conf, 16).shape == (242,)
    assert group_confidence(conf, 300).shape == (1,)
    assert group_confidence(np.array([]), 4).shape == (0,)


def test_trace_scores_by_hand():
    conf = np.array([5.0, 5.0, 1.0, 1.0, 5.0, 5.0, 3.0])
    s = trace_confidence(conf, ConfidenceSettings(window=2, bottom_fraction=0.5))
    # window means: 5, 3, 1, 3, 5, 4 -> lowest 1; bottom floor(6 * 0.5) = 3 groups: 1, 3, 3
    assert s.n_groups == 6
    assert s.lowest_group == 1.0
    assert s.bottom_fraction == pytest.approx(7 / 3)
    assert s.tail == 4.0
    assert s.mean == pytest.approx(25 / 7)
    # 10% of 6 groups floors to 0: at least one group, so it equals the lowest
    assert trace_confidence(conf, ConfidenceSettings(window=2)).bottom_fraction == 1.0


def test_trace_scores_short_and_empty_traces():
    conf = np.array([2.0, 4.0, 9.0])
    s = trace_confidence(conf, ConfidenceSettings(window=2048))
    assert s.n_groups == 1 and s.lowest_group == s.bottom_fraction == s.tail == s.mean == 5.0
    e = trace_confidence(np.array([]))
    assert e.n_groups == 0 and math.isnan(e.lowest_group) and math.isnan(e.tail)


def test_trace_scores_match_loops_on_long_trace():
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.0, 20.0, 3000)
    s = trace_confidence(conf)  # defaults: window 2048, bottom 10%
    groups = slow_groups(list(conf), 2048)
    assert s.n_groups == 953
    assert s.lowest_group == pytest.approx(min(groups), rel=1e-12)
    assert s.bottom_fraction == pytest.approx(np.mean(sorted(groups)[:95]), rel=1e-12)
    assert s.tail == pytest.approx(np.mean(conf[-2048:]), rel=1e-12)


def test_settings_validate():
    for bad in (dict(k=0), dict(window=0), dict(bottom_fraction=0.0), dict(bottom_fraction=1.5), dict(k=2.0)):
        with pytest.raises(ValueError):
            ConfidenceSettings(**bad)
