"""AnalysisSettings validation and keys, reference resolution, and the combination of signals."""
import math

import numpy as np
import pytest

from analysis.confidence import TokenStats, trace_confidence, ConfidenceSettings
from analysis.logit_lens import settling_depth
from analysis.mutual_information import mi_peaks
from analysis.trace_signals import AnalysisSettings, MissingReferenceError, resolve_reference, summarise_signals


def test_settings_validate_and_have_a_stable_key():
    a = AnalysisSettings()
    assert a.key == AnalysisSettings().key and len(a.key) == 16
    # Pinned: the key is stored in databases, so it must not change between processes or versions.
    assert a.key == AnalysisSettings(**a.to_dict()).key
    assert AnalysisSettings(sigma=100.0).key != a.key
    assert AnalysisSettings(reference="self").key != a.key
    assert AnalysisSettings(reference="typed", typed_reference="43").key != AnalysisSettings(reference="typed", typed_reference="44").key
    for bad in (dict(sigma=0.0), dict(eps=-1.0), dict(rho=1.5), dict(g=-0.1), dict(k=0), dict(window=0),
                dict(layer=0), dict(reference="nope"), dict(lens_dtype="float16"), dict(tau=float("nan"))):
        with pytest.raises(ValueError):
            AnalysisSettings(**bad)
    with pytest.raises(MissingReferenceError, match="Type a reference"):
        AnalysisSettings(reference="typed", typed_reference="  ")


def test_reference_resolution_says_what_is_missing():
    assert resolve_reference("stored", " 43 ", "44") == "43"
    assert resolve_reference("self", None, "44") == "44"
    assert resolve_reference("typed", None, None, "x") == "x"
    with pytest.raises(MissingReferenceError, match="no stored reference answer"):
        resolve_reference("stored", None, "44")
    with pytest.raises(MissingReferenceError, match="no final answer"):
        resolve_reference("self", "43", "")


def _inputs(n_t=40, n_layers=6, seed=0):
    rng = np.random.default_rng(seed)
    mi = rng.normal(1.0, 0.1, n_t)
    mi[[5, 17]] = [3.0, 4.0]  # two clear outliers
    jsd = rng.uniform(0, math.log(2), (n_layers, n_t))
    jsd[-1] = 0.0
    stats = TokenStats(rng.uniform(0, 3, n_t), rng.uniform(5, 10, n_t), rng.uniform(1, 8, n_t))
    return mi, jsd, stats, -rng.exponential(1, n_t)


def test_summary_follows_the_card_rules():
    mi, jsd, stats, lp = _inputs()
    s = AnalysisSettings(g=0.3, rho=0.5, window=8)
    n_t = len(mi)
    tokens, summary = summarise_signals(mi, jsd, stats, lp, ["x"] * n_t, np.arange(n_t), np.zeros(n_t, np.int8), s)
    peaks, thr = mi_peaks(mi, 1.5)
    assert np.array_equal(tokens.is_peak, peaks) and set(np.flatnonzero(peaks)) == {5, 17}
    assert summary.mi_threshold == thr and summary.n_peaks == 2 and summary.peak_ratio == 2 / n_t
    depth = settling_depth(jsd, 0.3)
    assert np.array_equal(tokens.settling_depth, depth)
    assert summary.deep_band_start == 3  # ceil(0.5 * 6)
    assert summary.dtr == pytest.approx(np.mean(depth >= 3)) and 0 <= summary.dtr <= 1
    conf = trace_confidence(stats.confidence, ConfidenceSettings(window=8))
    assert summary.lowest_group_confidence == conf.lowest_group and summary.tail_confidence == conf.tail
    assert summary.self_certainty == pytest.approx(stats.self_certainty.mean())
    assert summary.mean_entropy == pytest.approx(stats.entropy.mean())
    assert summary.mean_mi == pytest.approx(mi.mean())


def test_mismatched_lengths_are_refused():
    mi, jsd, stats, lp = _inputs()
    with pytest.raises(ValueError, match="jsd_lt"):
        summarise_signals(mi, jsd[:, :-1], stats, lp, ["x"] * 40, np.arange(40), np.zeros(40, np.int8), AnalysisSettings())
    with pytest.raises(ValueError, match="text"):
        summarise_signals(mi, jsd, stats, lp, ["x"] * 39, np.arange(40), np.zeros(40, np.int8), AnalysisSettings())
