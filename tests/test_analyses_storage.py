"""Analyses in DuckDB: round trip, replacement, listing and the not-yet-analysed query."""

import numpy as np
import pytest

from analysis.confidence import TokenStats
from analysis.trace_signals import AnalysisSettings, TraceAnalysis, summarise_signals
from storage.analyses import (
    analysis_settings_in_use, analysis_token_words, get_analysis, list_analyses, save_analysis, unanalysed_trace_ids,
)
from storage.testing import make_record
from storage.traces import save_trace


def make_analysis(n_t=12, n_layers=5, model="m", settings=AnalysisSettings(window=4), seed=0) -> TraceAnalysis:
    rng = np.random.default_rng(seed)
    mi = rng.normal(1, 0.1, n_t)
    mi[3] = 5.0
    jsd = rng.uniform(0, 0.69, (n_layers, n_t))
    jsd[-1] = 0
    stats = TokenStats(rng.uniform(0, 3, n_t), rng.uniform(5, 9, n_t), rng.uniform(1, 5, n_t))
    texts = ["<b>So</b>", " Wait", "é", " So"] * (n_t // 4)
    tokens, summary = summarise_signals(mi, jsd, stats, -rng.exponential(1, n_t), texts, np.arange(n_t),
                                        np.zeros(n_t, np.int8), settings)
    return TraceAnalysis(model, settings, settings.reference, "5", tokens, summary, notes=["a note"], elapsed_s=0.5)


def test_round_trip_keeps_every_signal(db_config):
    trace_id = save_trace(db_config, make_record())
    a = make_analysis()
    save_analysis(db_config, trace_id, a)
    got = get_analysis(db_config, trace_id, "m", a.settings.key).analysis
    assert got.settings == a.settings and got.summary == a.summary and got.notes == ["a note"]
    assert got.tokens.text == a.tokens.text
    for name in ("mi", "is_peak", "settling_depth", "is_deep", "token_id", "phase"):
        assert np.array_equal(getattr(got.tokens, name), getattr(a.tokens, name)), name
    for name in ("entropy", "logprob", "self_certainty", "confidence"):
        np.testing.assert_allclose(getattr(got.tokens, name), getattr(a.tokens, name), rtol=1e-6)
    np.testing.assert_allclose(got.tokens.jsd_lt, a.tokens.jsd_lt, rtol=1e-6)
    assert get_analysis(db_config, trace_id, "other-model", a.settings.key) is None
    assert get_analysis(db_config, trace_id, "m", AnalysisSettings(sigma=60.0).key) is None


def test_rerun_replaces_and_lists(db_config):
    t1, t2 = save_trace(db_config, make_record(seed=1)), save_trace(db_config, make_record(seed=2, correct=False))
    save_analysis(db_config, t1, make_analysis(seed=1))
    save_analysis(db_config, t1, make_analysis(seed=2))
    save_analysis(db_config, t2, make_analysis(seed=3))
    key = AnalysisSettings(window=4).key
    frame = list_analyses(db_config, "m", key)
    assert list(frame["trace_id"]) == [t1, t2] and list(frame["correct"]) == [True, False]
    assert analysis_settings_in_use(db_config).iloc[0]["n_traces"] == 2
    words = analysis_token_words(db_config, "m", key)
    assert words.num_rows == 24 and sum(words.column("is_peak").to_pylist()) >= 2


def test_unanalysed_query(db_config):
    t1, t2 = save_trace(db_config, make_record(seed=1)), save_trace(db_config, make_record(seed=2, model="m"))
    key = AnalysisSettings(window=4).key
    assert unanalysed_trace_ids(db_config, (key,), "m") == [t1, t2]
    save_analysis(db_config, t1, make_analysis())
    assert unanalysed_trace_ids(db_config, (key,), "m") == [t2]
    assert unanalysed_trace_ids(db_config, ("other",), "m") == [t1, t2]
    # None = each trace analysed by its own model: t1 was made by test-model, analysed by m.
    assert unanalysed_trace_ids(db_config, (key,), None) == [t1, t2]
    assert unanalysed_trace_ids(db_config, (key,), "m", trace_id=t1) == []
    with pytest.raises(ValueError):
        unanalysed_trace_ids(db_config, ())
