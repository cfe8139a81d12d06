"""Run metrics: Wilson intervals, outcome efficiency, E3, OckScore, cost (analysis/run_metrics.py)."""
from __future__ import annotations

import math

import pytest

from analysis.run_metrics import (
    QueryOutcome,
    RunMetrics,
    SampleOutcome,
    char_to_token_index,
    cost_usd,
    e3,
    first_correct_token_index,
    ock_score,
    outcome_efficiency,
    summarize_run,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (5, 10, 0.23659, 0.76341),  # textbook values
        (0, 10, 0.0, 0.27754),  # z^2/n / (1 + z^2/n)
        (10, 10, 0.72246, 1.0),
        (1, 1, 0.20654, 1.0),
    ],
)
def test_wilson_interval_known_values(k, n, lo, hi):
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-5)


def test_wilson_interval_endpoints_solve_the_score_equation():
    # the Wilson interval is {p0 : |k/n - p0| <= z sqrt(p0 (1 - p0) / n)}; check its ends directly
    for k, n, z in [(3, 7, 1.96), (17, 40, 1.0), (99, 100, 2.576)]:
        phat = k / n
        for p0 in wilson_interval(k, n, z):
            if 0.0 < p0 < 1.0:
                assert abs(phat - p0) == pytest.approx(z * math.sqrt(p0 * (1 - p0) / n), rel=1e-9)


def test_wilson_interval_edge_cases():
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    assert wilson_interval(50, 100, z=1.0)[1] - wilson_interval(50, 100, z=1.0)[0] < (
        wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0]
    )
    for bad in [(3, 2), (-1, 2), (0, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, z=0)


def test_outcome_efficiency_hand_checked():
    # the "2+3" example: right after 39 of 901 tokens; a trace right at its last token; a wrong one
    got = outcome_efficiency([38, 9, None], [901, 10, 50])
    assert got == pytest.approx((39 / 901 + 1.0 + 0.0) / 3)
    assert outcome_efficiency([], []) != outcome_efficiency([], [])  # nan
    assert outcome_efficiency([None, None], [5, 7]) == 0.0
    with pytest.raises(ValueError):
        outcome_efficiency([10], [10])  # index 10 is past a 10-token trace
    with pytest.raises(ValueError):
        outcome_efficiency([1, 2], [10])


def test_e3_ock_cost():
    assert e3(0.5, 100) == pytest.approx(0.0025)
    assert e3(1.0, 4) == 0.25
    assert math.isnan(e3(0.5, 0))
    with pytest.raises(ValueError):
        e3(50, 100)  # percent passed where a fraction is expected
    assert ock_score(80.0, 10000) == pytest.approx(80 - 10 * math.log(2))
    assert ock_score(50.0, 0) == 50.0
    with pytest.raises(ValueError):
        ock_score(0.8, -1)
    assert cost_usd(2_500_000, 0.6) == pytest.approx(1.5)
    assert cost_usd(0, 10) == 0.0
    with pytest.raises(ValueError):
        cost_usd(-1, 1)


def test_char_to_token_index():
    toks = ["Hel", "lo", " 17", "!"]
    assert [char_to_token_index(i, toks) for i in range(10)] == [0, 0, 0, 1, 1, 2, 2, 2, 3, None]
    assert char_to_token_index(1, ["a", "", "b"]) == 2  # an empty token covers nothing
    assert char_to_token_index(0, []) is None
    with pytest.raises(ValueError):
        char_to_token_index(-1, toks)


def test_first_correct_token_index():
    toks = ["9 + 8", " = 1", "7", ". So", " answer: 17"]
    # "17" spans chars 8-9 of "9 + 8 = 17. So answer: 17"; its last char lies in token 2
    assert first_correct_token_index(toks, "17") == 2
    assert first_correct_token_index(toks, "17.0") == 2
    assert first_correct_token_index(toks, "8") is None  # "9 + 8" is not a stated answer
    assert first_correct_token_index(toks, None) is None
    assert first_correct_token_index([], "1") is None


def test_sample_outcome_validates():
    with pytest.raises(ValueError):
        SampleOutcome(True, -1, 0)
    with pytest.raises(ValueError):
        SampleOutcome(True, 5, 5, first_correct_token=10)
    with pytest.raises(ValueError):
        SampleOutcome(True, 5, 5, latency_s=math.nan)
    assert SampleOutcome(True, 5, 5, first_correct_token=9).n_total_tokens == 10


def test_summarize_run_hand_checked():
    samples = [
        SampleOutcome(True, 100, 10, 2.0, 49),
        SampleOutcome(False, 200, 20, 4.0, None),
        SampleOutcome(None, 300, 30, 0.0, None),  # no reference, no latency (imported)
    ]
    m = summarize_run([QueryOutcome.single(s) for s in samples], price_per_million=2.0)
    assert isinstance(m, RunMetrics)
    assert (m.n_samples, m.n_samples_graded, m.n_samples_correct, m.n_not_finished) == (3, 2, 1, 0)
    assert (m.n_queries, m.n_queries_graded, m.n_queries_correct) == (3, 2, 1)
    assert m.accuracy == 0.5 and m.sample_accuracy == 0.5  # one sample per query: the two agree
    assert m.accuracy_ci == pytest.approx(wilson_interval(1, 2))
    assert (m.mean_thinking_tokens, m.mean_answer_tokens, m.mean_total_tokens) == (200.0, 20.0, 220.0)
    assert m.total_tokens_per_query == 220.0
    assert m.mean_latency_s == 3.0
    assert m.tokens_per_s == pytest.approx((110 + 220) / 6.0)
    assert m.outcome_efficiency == pytest.approx((50 / 110 + 0.0) / 2)
    assert m.e3 == pytest.approx(0.25 / 165)  # graded queries' mean tokens
    assert m.ock_score == pytest.approx(50 - 10 * math.log(165 / 10000 + 1))
    assert m.total_tokens == 660
    assert m.cost_usd == pytest.approx(660 * 2.0 / 1e6)


def test_summarize_run_without_references_or_samples():
    m = summarize_run([QueryOutcome.single(SampleOutcome(None, 10, 2))])
    assert m.accuracy is None and m.accuracy_ci is None
    assert m.outcome_efficiency is None and m.e3 is None and m.ock_score is None
    assert m.cost_usd is None and m.mean_latency_s is None and m.tokens_per_s is None
    assert m.mean_total_tokens == 12.0
    empty = summarize_run([])
    assert empty.n_samples == 0 and empty.mean_total_tokens is None and empty.accuracy is None


def test_summarize_run_wrong_final_answer_can_still_have_sigma_one():
    m = summarize_run([QueryOutcome.single(SampleOutcome(False, 90, 10, first_correct_token=19))])
    assert m.accuracy == 0.0
    assert m.outcome_efficiency == pytest.approx(0.2)
