"""Every figure recomputed from its definition (docs/METHODS.md §4-§6), on the inputs of issue 17 and
on random inputs: per-query E3 / OckScore, outcome efficiency with sigma following the grade,
exact quantile bins, votes grouped by the grading equivalence, the DeepConf keep rule against a
transcription of the authors' code, infinite scores, ties, and step-score aggregates."""
from __future__ import annotations

import math
import random
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest

from analysis.answers import answers_equivalent, extract_answer, grade
from analysis.run_metrics import QueryOutcome, SampleOutcome, TokenCount, first_correct_token_index, summarize_run
from analysis.signal_correlation import binned_signal_correlation, quantile_bins
from analysis.voting import (
    best_of_majority,
    best_of_n,
    borda_vote,
    confidence_weighted_vote,
    deepconf_keep,
    majority_vote,
    weighted_best_of_n,
)
from generation.strategies import StrategySettings
from generation.strategies.search import AGGREGATES, SELF_CERTAINTY_STEP, StepScorer, check_search

# ------------------------------------------------------------------------------------------------
# 1. E3 and OckScore per query


def test_e3_and_ockscore_of_the_issue_example():
    # self-consistency, N = 4, one prompt, 3 of 4 samples right, selected answer right, 200 tokens each
    samples = tuple(SampleOutcome(c, 150, 50) for c in (True, True, True, False))
    m = summarize_run([QueryOutcome(True, samples)])
    assert m.accuracy == 1.0 and m.sample_accuracy == 0.75
    assert m.total_tokens_per_query == 800
    assert m.e3 == pytest.approx(1 / 800) == 0.00125
    assert round(m.ock_score, 2) == 99.23


def _reference_metrics(queries):
    """E3 = A^2 / T and OckScore = A% - 10 ln(T/10000 + 1) straight from the definitions: A over the
    graded queries (selected answer), T = mean total tokens decoded per graded query."""
    graded = [q for q in queries if q["finished"] and q["correct"] is not None]
    if not graded:
        return None, None, None
    a = sum(q["correct"] for q in graded) / len(graded)
    t = sum(q["tokens"] for q in graded) / len(graded)
    return a, (a * a / t if t > 0 else None), 100 * a - 10 * math.log(t / 10000 + 1)


def test_e3_and_ockscore_match_the_definition_on_random_runs():
    rng = random.Random(17)
    for _ in range(400):
        queries, raw = [], []
        for _ in range(rng.randint(1, 6)):
            samples = tuple(SampleOutcome(rng.choice([True, False, None]), rng.randint(0, 300), rng.randint(0, 40),
                                          finished=rng.random() > 0.1, n_forced_tokens=rng.randint(0, 3))
                            for _ in range(rng.randint(1, 5)))
            decoded = TokenCount(rng.randint(0, 900), rng.randint(0, 90), 0) if rng.random() < 0.3 else None
            correct, finished = rng.choice([True, False, None]), rng.random() > 0.1
            queries.append(QueryOutcome(correct, samples, decoded, finished))
            tokens = decoded.total if decoded else sum(s.n_thinking_tokens + s.n_answer_tokens + s.n_forced_tokens
                                                       for s in samples)
            raw.append({"correct": correct, "finished": finished, "tokens": tokens})
        m = summarize_run(queries)
        a, e3, ock = _reference_metrics(raw)
        assert m.accuracy == a
        if e3 is None:
            assert m.e3 is None
        else:
            assert m.e3 == pytest.approx(e3)
        assert (m.ock_score is None) == (ock is None)
        if ock is not None:
            assert m.ock_score == pytest.approx(ock)
        assert m.total_tokens == sum(q["tokens"] for q in raw)
        samples = [s for q in queries for s in q.samples]
        graded = [s for s in samples if s.finished and s.correct is not None]
        assert m.n_not_finished == sum(not s.finished for s in samples)
        assert m.sample_accuracy == (sum(s.correct for s in graded) / len(graded) if graded else None)


def test_not_finished_samples_are_kept_out_of_accuracy_even_if_graded():
    stopped = SampleOutcome(True, 30, 0, finished=False)  # an old row that still carries a grade
    m = summarize_run([QueryOutcome.single(stopped), QueryOutcome.single(SampleOutcome(False, 10, 2))])
    assert (m.n_not_finished, m.n_samples_graded, m.sample_accuracy, m.accuracy) == (1, 1, 0.0, 0.0)
    assert m.n_queries_not_finished == 1 and m.n_queries_graded == 1


# ------------------------------------------------------------------------------------------------
# 6. Outcome efficiency: sigma follows the grade


def _reference_efficiency(traces):
    """xi_O = (1/N) sum sigma_i That_i / T_i; sigma_i = 1 if any answer in trace i is correct (the
    final one, by its grade, or an intermediate one); That_i = end of the first correct one."""
    total = 0.0
    for correct, first, t in traces:
        if first is not None:
            total += (first + 1) / t
        elif correct:
            total += 1.0  # the first correct answer is the final one, which ends the trace
    return total / len(traces)


def test_a_correct_trace_without_an_intermediate_mention_counts():
    tokens = ["He", " now", " has", " 43", " sheep", "."]
    assert grade(extract_answer("".join(tokens)), "43") is True
    assert first_correct_token_index(tokens, "43") is None  # no "= 43", "is 43" or marker
    m = summarize_run([QueryOutcome.single(SampleOutcome(True, 0, len(tokens), first_correct_token=None))])
    assert m.outcome_efficiency == 1.0  # sigma = 1, That = T (the final answer is the first correct one)


def test_outcome_efficiency_matches_the_definition_on_random_traces():
    rng = random.Random(6)
    for _ in range(500):
        traces, samples = [], []
        for _ in range(rng.randint(1, 8)):
            t = rng.randint(1, 200)
            correct = rng.choice([True, False])
            first = rng.randrange(t) if rng.random() < 0.5 else None
            traces.append((correct, first, t))
            samples.append(SampleOutcome(correct, t - 1, 1, first_correct_token=first))
        m = summarize_run([QueryOutcome.single(s) for s in samples])
        assert m.outcome_efficiency == pytest.approx(_reference_efficiency(traces))


# ------------------------------------------------------------------------------------------------
# 5. Exact quantile bins


def _reference_bins(values, k):
    """numpy's linear quantile edges in exact rational arithmetic; bin = number of inner edges <= s."""
    v = sorted(Fraction(x) for x in values)
    n = len(v)
    edges = []
    for j in range(1, k):
        pos = Fraction(j * (n - 1), k)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        edges.append(v[lo] + (pos - lo) * (v[hi] - v[lo]))
    return [sum(1 for e in edges if Fraction(x) >= e) for x in values]


def test_the_issue_example_bins():
    r = binned_signal_correlation(np.arange(6.0), np.array([1, 0, 1, 0, 1, 1], dtype=bool))
    assert r.counts.tolist() == [1, 1, 1, 1, 2]


def test_every_tie_free_n_k_pair_bins_exactly():
    rng = np.random.default_rng(5)
    for n in range(1, 76):
        for k in range(2, 15):
            values = rng.permutation(n).astype(np.float64) / 10.0  # tenths: float edges round here
            assert quantile_bins(values, k).tolist() == _reference_bins([Fraction(int(round(x * 10)), 10)
                                                                         for x in values], k), (n, k)


def test_bins_with_ties_match_the_exact_reference():
    rng = random.Random(8)
    for _ in range(500):
        n, k = rng.randint(1, 40), rng.randint(2, 9)
        values = [rng.randint(0, 6) / 5 for _ in range(n)]
        exact = [Fraction(round(x * 5), 5) for x in values]
        assert quantile_bins(values, k).tolist() == _reference_bins(exact, k)


# ------------------------------------------------------------------------------------------------
# 7. Votes group by the grading equivalence


def test_votes_group_as_grading_does():
    answers = ["0.3333333", "1/3", "0.25", "0.25"]
    assert [grade(a, "1/3") for a in answers] == [True, True, False, False]
    v = majority_vote(answers)
    assert v.tally == {"0.3333333": 2.0, "0.25": 2.0}
    assert grade(v.winner, "1/3") is True  # a 2-2 tie, decided by the documented rule
    assert v.tie_description() == "tie: 2 answers with 2 votes each; rule: first seen wins"
    assert majority_vote(["1/3", "0.25", "0.3333333"]).winner == "1/3"


def test_majority_winner_has_the_largest_equivalence_class_on_random_answers():
    pool = ["1/3", "0.3333333", "0.333", "2", "2.0", "\\frac{4}{2}", "0.25", "1/4", "x", None]
    rng = random.Random(7)
    for _ in range(300):
        answers = [rng.choice(pool) for _ in range(rng.randint(1, 8))]
        v = majority_vote(answers)
        present = [a for a in answers if a is not None]
        if not present:
            assert v.winner is None
            continue
        # brute force: the class of each answer = the answers equivalent to its first member
        leaders: list[str] = []
        count: dict[str, int] = defaultdict(int)
        for a in present:
            lead = next((x for x in leaders if answers_equivalent(x, a)), None)
            if lead is None:
                leaders.append(a)
                lead = a
            count[lead] += 1
        best = max(count.values())
        first_best = next(x for x in leaders if count[x] == best)
        assert answers_equivalent(first_best, v.winner) and v.tally[v.winner] == best


def test_a_custom_equivalence_can_be_plugged_in():
    exact = majority_vote(["0.3333333", "1/3", "0.25", "0.25"], equivalence=lambda a, b: a == b)
    assert exact.winner == "0.25" and exact.tie == ()


# ------------------------------------------------------------------------------------------------
# 8. DeepConf offline: the authors' rule


def _reference_deepconf(answers, confidences, eta):
    """Transcribed from facebookresearch/deepconf analysis_offline.py: valid traces = those with an
    answer; threshold = np.percentile(confs, (1 - top_percent) * 100); keep conf >= threshold;
    weighted_majority_vote (max over the insertion-ordered dict: the first of equal weights)."""
    valid = [(a, c) for a, c in zip(answers, confidences) if a]
    if not valid:
        return None, []
    confs = [c for _, c in valid]
    threshold = np.percentile(confs, (1 - eta / 100) * 100)
    kept = [(a, c) for a, c in valid if c >= threshold]
    weights: dict[str, float] = defaultdict(float)
    for a, c in kept:
        weights[a] += c
    return max(weights.items(), key=lambda x: x[1])[0], kept


def test_deepconf_keeps_what_the_reference_keeps():
    assert len(deepconf_keep([float(x) for x in range(16)], 90)) == 14
    assert len(deepconf_keep([float(x) for x in range(16)], 10)) == 2
    rng = random.Random(90)
    for _ in range(2000):
        n = rng.randint(1, 40)
        answers = [rng.choice(["1", "2", "3", "4", None]) for _ in range(n)]
        conf = [round(rng.uniform(0.5, 3.0), rng.choice([1, 3, 6])) for _ in range(n)]  # some ties
        eta = rng.choice([10.0, 90.0, 50.0, 25.0])
        want, kept = _reference_deepconf(answers, conf, eta)
        v = confidence_weighted_vote(answers, conf, eta)
        assert v.winner == want
        assert sorted(conf[i] for i in v.used_indices) == sorted(c for _, c in kept)


# ------------------------------------------------------------------------------------------------
# 9. Infinite self-certainty is ranked; Borda ranks all N


def test_infinite_scores_are_ranked_not_refused():
    inf = math.inf
    answers, scores = ["a", "b", "b", None], [1.0, inf, 0.5, 2.0]
    assert best_of_n(answers, scores).winner == "b"
    assert best_of_majority(answers, scores, 0.25).winner == "b"
    assert weighted_best_of_n(answers, scores).winner == "b"
    assert confidence_weighted_vote(answers, scores, 50).winner == "b"
    # Borda over all N = 4 scored samples, p = 1: ranks inf(b)=4, 2.0(None)=3, 1.0(a)=2, 0.5(b)=1
    assert borda_vote(answers, scores, p=1.0).tally == {"a": 2.0, "b": 5.0}
    with pytest.raises(ValueError, match="-inf"):
        weighted_best_of_n(["a"], [-inf])


def test_borda_ranks_all_n_including_unanswered_samples():
    # the definition: rank r of N adds (N - r + 1)^p. N = 3 here although one sample has no answer
    v = borda_vote([None, "a", "b"], [0.9, 0.5, 0.1], p=1.0)
    assert v.tally == {"a": 2.0, "b": 1.0}


# ------------------------------------------------------------------------------------------------
# 10. Ties are said


def test_tie_description():
    v = majority_vote(["10", "11", "12"])
    assert v.winner == "10" and v.tie == ("10", "11", "12")
    assert v.tie_description() == "tie: 3 answers with 1 vote each; rule: first seen wins"
    assert majority_vote(["10", "10", "12"]).tie_description() == ""
    assert best_of_n(["a", "b"], [0.5, 0.5]).tie_description() == "tie: 2 answers with score 0.5 each; rule: first seen wins"


# ------------------------------------------------------------------------------------------------
# 3, 4. Search settings and step aggregates


def test_prod_is_refused_for_self_certainty_and_geomean_is_length_fair():
    with pytest.raises(ValueError, match="geomean"):
        check_search(StrategySettings(n=4, beam_width=2, step_aggregate="prod"), SELF_CERTAINTY_STEP)
    check_search(StrategySettings(n=4, beam_width=2, step_aggregate="prod"), StepScorer("prm", lambda p, s: 0.5, True))
    short, long = [9.0, 9.0], [8.0, 8.0, 8.0, 8.0]
    assert AGGREGATES["prod"](long) > AGGREGATES["prod"](short)  # 4096 > 81: the length bias
    for name in ("geomean", "mean", "min", "last"):
        assert AGGREGATES[name](short) > AGGREGATES[name](long), name
    assert AGGREGATES["geomean"]([2.0, 8.0]) == pytest.approx(4.0)
    assert AGGREGATES["geomean"]([0.0, 8.0]) == 0.0


@pytest.mark.parametrize(("n", "m"), [(2, 4), (6, 4), (3, 2)])
def test_n_must_split_into_beams(n, m):
    with pytest.raises(ValueError, match="n >= M|multiple of M"):
        check_search(StrategySettings(n=n, beam_width=m))
