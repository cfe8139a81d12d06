"""Quantile-bin correlation protocol and word counts at MI peaks."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from analysis.signal_correlation import CorrelationSettings, binned_signal_correlation, peak_word_counts


def test_five_bins_by_hand():
    signal = np.arange(10.0)
    correct = [False, False, False, False, True, False, True, True, True, True]
    res = binned_signal_correlation(signal, correct)
    np.testing.assert_allclose(res.edges, [0, 1.8, 3.6, 5.4, 7.2, 9])
    assert res.counts.tolist() == [2, 2, 2, 2, 2]
    np.testing.assert_allclose(res.mean_signal, [0.5, 2.5, 4.5, 6.5, 8.5])
    np.testing.assert_allclose(res.accuracy, [0, 0, 0.5, 1, 1])
    assert res.r == pytest.approx(6 / math.sqrt(40), rel=1e-12)  # 0.9487
    assert res.reason is None and res.n_dropped == 0


def test_order_of_samples_does_not_matter_and_sign_flips():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=125)
    correct = rng.random(125) < 1 / (1 + np.exp(-3 * signal))
    perm = rng.permutation(125)
    a = binned_signal_correlation(signal, correct)
    b = binned_signal_correlation(signal[perm], correct[perm])
    assert a.r == pytest.approx(b.r, rel=1e-12)
    assert a.counts.tolist() == [25] * 5
    assert a.r > 0.8
    assert binned_signal_correlation(-signal, correct).r == pytest.approx(-a.r, rel=1e-12)


def test_ties_leave_bins_empty_and_they_are_skipped():
    signal = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], dtype=float)
    correct = np.array([0, 0, 0, 0, 0, 0, 1, 0, 1, 1], dtype=bool)
    res = binned_signal_correlation(signal, correct)
    np.testing.assert_allclose(res.edges, [0, 0, 0, 0.4, 2.2, 4])
    assert res.counts.tolist() == [0, 0, 6, 2, 2]
    assert np.isnan(res.accuracy[:2]).all() and np.isnan(res.mean_signal[:2]).all()
    np.testing.assert_allclose(res.accuracy[2:], [0, 0.5, 1])
    np.testing.assert_allclose(res.mean_signal[2:], [0, 1.5, 3.5])
    assert res.r == pytest.approx(np.corrcoef([0, 1.5, 3.5], [0, 0.5, 1])[0, 1], rel=1e-12)


def test_degenerate_inputs_give_nan_with_reason():
    const = binned_signal_correlation(np.full(10, 0.3), [True, False] * 5)
    assert math.isnan(const.r) and const.reason == "signal is constant"
    assert const.counts.sum() == 10

    few = binned_signal_correlation([0.1, 0.5, 0.9], [True, False, True])
    assert math.isnan(few.r) and few.reason == "fewer samples (3) than bins (5)"

    flat_acc = binned_signal_correlation(np.arange(20.0), np.ones(20, dtype=bool))
    assert math.isnan(flat_acc.r) and flat_acc.reason == "accuracy is the same in every bin"
    np.testing.assert_allclose(flat_acc.accuracy, 1.0)

    empty = binned_signal_correlation([], [])
    assert math.isnan(empty.r) and empty.reason == "no samples with a finite signal"

    with_nan = binned_signal_correlation([np.nan, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [True] + [False] * 5 + [True] * 5)
    assert with_nan.n_dropped == 1 and with_nan.counts.sum() == 10 and with_nan.r > 0.8


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        binned_signal_correlation([1.0, 2.0], [True])
    with pytest.raises(ValueError):
        binned_signal_correlation([1.0, 2.0], [0.5, 1.0])
    with pytest.raises(ValueError):
        CorrelationSettings(n_bins=1)


def test_other_bin_counts():
    res = binned_signal_correlation(np.arange(8.0), [0, 0, 1, 1, 0, 1, 1, 1], CorrelationSettings(n_bins=2))
    assert res.counts.tolist() == [4, 4]
    np.testing.assert_allclose(res.accuracy, [0.5, 0.75])
    assert res.r == pytest.approx(1.0)  # two points always lie on a line


def test_peak_word_counts():
    texts = [[" So", ",", " the", " answer"], ["Wait", "!\n", " So", "\u201d", " don't,", " ="]]
    masks = [np.array([True, True, False, False]), [True, True, True, True, True, True]]
    counts = peak_word_counts(texts, masks)
    assert counts == Counter({"So": 2, "Wait": 1, "don't": 1, "=": 1})
    assert peak_word_counts(texts, [[False] * 4, [False] * 6]) == Counter()
    assert peak_word_counts([[" so", " So"]], [[True, True]]) == Counter({"so": 1, "So": 1})  # case kept
    with pytest.raises(ValueError):
        peak_word_counts(texts, masks[:1])
    with pytest.raises(ValueError):
        peak_word_counts([[" a", " b"]], [[True]])
