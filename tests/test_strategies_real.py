"""Each strategy on the real embedded model (small N, short budgets), checking its selection rule
against the samples as stored."""
import math
from collections import Counter

import numpy as np
import pytest

from analysis.answers import equivalence_classes, grade
from analysis.records import finished_normally
from analysis.confidence import ConfidenceSettings, trace_confidence
from analysis.reasoning import ReasoningFormat
from generation.decoding import SamplingConfig
from generation.strategies import EFFORT_BUDGETS, STRATEGIES, StrategySettings, get_strategy
from generation.strategies.runner import PromptItem, run_strategy
from storage.runs import get_run_metrics, list_runs, list_selections
from storage.traces import get_trace

MARKER = ReasoningFormat(kind="answer_marker")
ITEM = PromptItem("What is 9 + 8?", "17")


def _run(embedded, db_config, name, **kw):
    sampling = SamplingConfig(temperature=1.0, max_thinking_tokens=12, max_answer_tokens=6, seed=4)
    settings = StrategySettings(**{"sampling": sampling, "n": 3, **kw})
    result = run_strategy(db_config, embedded, name, [ITEM], MARKER, settings, price_per_million=2.0)
    sel = list_selections(db_config, result.run_id).iloc[0]
    records = [get_trace(db_config, t).record for t in sel["detail"]["trace_ids"]]
    return result, sel, records


def _key(records, answer):
    """The answer's group among the records' answers, by the grading equivalence votes use
    (docs/METHODS.md §4); None for no answer. Unfinished records carry no vote."""
    if answer is None:
        return None
    voting = [r.extracted_answer if finished_normally(r.stop_reason) else None for r in records]
    return equivalence_classes(voting + [answer])[-1]


def _counts(records):
    keys = [_key(records, r.extracted_answer) if finished_normally(r.stop_reason) else None for r in records]
    return Counter(k for k in keys if k is not None)


def test_greedy_is_one_temperature_zero_sample(embedded, db_config):
    _, sel, records = _run(embedded, db_config, "greedy")
    assert len(records) == 1 and records[0].settings["temperature"] == 0.0
    sampled = [i for i in range(len(records[0].tokens)) if i not in records[0].meta.get("forced_positions", [])]
    assert all(records[0].tokens.token_id[i] == records[0].tokens.top_ids[i][0] for i in sampled)
    assert _key(records, sel["selected_answer"]) == _key(records, records[0].extracted_answer)


def test_sampling_is_one_sample(embedded, db_config):
    _, sel, records = _run(embedded, db_config, "sampling")
    assert len(records) == 1 and records[0].settings["temperature"] == 1.0


def test_self_consistency_picks_the_most_frequent_answer(embedded, db_config):
    result, sel, records = _run(embedded, db_config, "self_consistency", n=4)
    assert len(records) == 4
    counts = _counts(records)
    if not counts:
        assert sel["selected_answer"] is None
        return
    assert counts[_key(records, sel["selected_answer"])] == max(counts.values())
    assert sel["correct"] == grade(sel["selected_answer"], "17")
    runs = list_runs(db_config)
    assert runs.iloc[0]["strategy"] == "self_consistency" and runs.iloc[0]["n_traces"] == 4
    metrics = get_run_metrics(db_config, result.run_id)
    assert metrics["n_samples"] == 4
    assert metrics["total_tokens"] == sum(len(r.tokens) for r in records)
    assert math.isclose(metrics["cost_usd"], metrics["total_tokens"] * 2.0 / 1e6)
    # per query (docs/METHODS.md §6): the selected answer's grade, all 4 samples' tokens
    acc = 1.0 if sel["correct"] else 0.0
    assert metrics["accuracy"] == acc and metrics["total_tokens_per_query"] == metrics["total_tokens"]
    assert metrics["e3"] == pytest.approx(acc**2 / metrics["total_tokens"])
    assert metrics["ock_score"] == pytest.approx(100 * acc - 10 * math.log(metrics["total_tokens"] / 1e4 + 1))


def test_best_of_n_picks_the_most_self_certain_sample(embedded, db_config):
    _, sel, records = _run(embedded, db_config, "best_of_n")
    scores = sel["detail"]["scores"]
    sc = [float(np.mean(r.meta["token_self_certainty"])) for r in records]
    np.testing.assert_allclose(scores, sc, rtol=1e-6)
    usable = [i for i, r in enumerate(records) if _key(records, r.extracted_answer) is not None]
    if usable:
        best = max(usable, key=lambda i: sc[i])
        assert _key(records, sel["selected_answer"]) == _key(records, records[best].extracted_answer)


def test_borda_sums_rank_points_per_answer(embedded, db_config):
    _, sel, records = _run(embedded, db_config, "borda", borda_p=0.5)
    scores = sel["detail"]["scores"]
    # every scored sample holds a rank (answered or not), as the definition ranks all N
    ranked = sorted((i for i in range(len(records)) if scores[i] is not None), key=lambda i: -scores[i])
    points: Counter = Counter()
    for rank, i in enumerate(ranked, start=1):
        if _key(records, records[i].extracted_answer) is not None:
            points[_key(records, records[i].extracted_answer)] += (len(ranked) - rank + 1) ** 0.5
    if points:
        assert points[_key(records, sel["selected_answer"])] == pytest.approx(max(points.values()))
        assert sum(sel["detail"]["tally"].values()) == pytest.approx(sum(points.values()))


def test_best_of_majority_keeps_frequent_answers_then_scores(embedded, db_config):
    _, sel, records = _run(embedded, db_config, "best_of_majority", alpha=0.5, n=4)
    scores = sel["detail"]["scores"]
    counts = _counts(records)
    kept = {a for a, c in counts.items() if c / len(records) >= 0.5}
    if not kept:
        assert sel["selected_answer"] is None
        return
    best = max((i for i, r in enumerate(records) if _key(records, r.extracted_answer) in kept), key=lambda i: scores[i])
    assert _key(records, sel["selected_answer"]) == _key(records, records[best].extracted_answer)


def test_deepconf_offline_votes_over_the_most_confident_traces(embedded, db_config):
    _, sel, records = _run(embedded, db_config, "deepconf_offline", eta=50, window=4, n=4)
    lowest = [trace_confidence(np.array(r.meta["token_confidence"]), ConfidenceSettings(window=4)).lowest_group
              for r in records]
    np.testing.assert_allclose(sel["detail"]["scores"], lowest, rtol=1e-6)
    # the authors' rule: answered traces only, keep those >= the (100 - eta) percentile
    valid = [i for i in range(4) if _key(records, records[i].extracted_answer) is not None]
    if not valid:
        assert sel["selected_answer"] is None
        return
    threshold = np.percentile([lowest[i] for i in valid], 50)
    kept = [i for i in valid if lowest[i] >= threshold]
    tally = Counter()
    for i in kept:
        tally[_key(records, records[i].extracted_answer)] += lowest[i]
    assert tally[_key(records, sel["selected_answer"])] == pytest.approx(max(tally.values()))
    assert f"kept {len(kept)} of {len(valid)} answered traces" in sel["detail"]["note"]


def test_deepconf_online_stops_traces_below_the_warmup_threshold(embedded, db_config):
    _, sel, records = _run(embedded, db_config, "deepconf_online", eta=10, warmup=2, window=4, n=4)
    detail = sel["detail"]
    threshold = detail["threshold"]
    warm = [trace_confidence(np.array(r.meta["token_confidence"]), ConfidenceSettings(window=4)).lowest_group
            for r in records[:2]]
    assert threshold == pytest.approx(float(np.percentile(warm, 90)))
    for i, r in enumerate(records[2:], start=2):
        conf = np.array(r.meta["token_confidence"])
        windows = np.convolve(conf, np.ones(4) / 4, mode="valid")
        if r.meta.get("deepconf_early_stop"):
            assert i in detail["early_stopped"] and windows[-1] < threshold
            assert (windows[:-1] >= threshold).all(), "it stops at the first window below the threshold"
        else:
            assert (windows >= threshold).all()
    for i in detail["used_indices"]:
        assert not records[i].meta.get("deepconf_early_stop")


def test_budget_forcing_strategy_inserts_wait_and_forces_the_end(embedded, db_config):
    _, sel, records = _run(embedded, db_config, "budget_forcing", n=2, min_thinking_tokens=10, max_waits=2)
    for r in records:
        assert r.settings["min_thinking_tokens"] == 10 and r.settings["max_waits"] == 2
        for w in r.meta["wait_positions"]:
            assert w < 10 and r.tokens.text[w].strip() == "Wait"
        at = r.meta["forced_end_position"]
        if at is not None:
            assert at == 12 and "".join(r.tokens.text[at:]).startswith("\nFinal Answer:")


def test_effort_levels_map_to_budgets(embedded, db_config):
    assert list(EFFORT_BUDGETS) == ["low", "medium", "high", "max"]
    assert sorted(EFFORT_BUDGETS.values()) == list(EFFORT_BUDGETS.values())
    _, sel, records = _run(embedded, db_config, "effort", effort="low", n=2)
    assert sel["detail"]["max_thinking_tokens"] == 64
    assert all(r.settings["max_thinking_tokens"] == 64 for r in records)


def test_registry_and_bad_settings():
    assert set(STRATEGIES) >= {"greedy", "self_consistency", "borda", "deepconf_online", "budget_forcing"}
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="N must be at least 1"):
        StrategySettings(n=0)
    with pytest.raises(ValueError, match="effort"):
        StrategySettings(effort="extreme")


def test_prefix_rows_continue_a_greedy_run_exactly(embedded):
    from generation.batch import BatchRow, BatchSettings, generate_batch

    cfg = SamplingConfig(temperature=0.0, max_thinking_tokens=16, max_answer_tokens=4)
    whole = generate_batch(embedded, [BatchRow(ITEM.prompt)], MARKER, BatchSettings(cfg))[0]
    ids = tuple(whole.tokens.token_id.tolist())
    rest = generate_batch(embedded, [BatchRow(ITEM.prompt, prefix_ids=ids[:5]), BatchRow(ITEM.prompt)], MARKER,
                          BatchSettings(cfg))[0]
    assert tuple(rest.tokens.token_id.tolist()) == ids[5:]
    assert "".join(rest.tokens.text) == "".join(whole.tokens.text[5:])


@pytest.mark.parametrize("name", ["beam_search", "dvts"])
def test_step_search_scores_steps_and_picks_the_best_beam(embedded, db_config, name):
    sampling = SamplingConfig(temperature=1.0, max_thinking_tokens=24, max_answer_tokens=6, seed=2)
    settings = StrategySettings(sampling=sampling, n=4, beam_width=2, max_steps=3)
    result = run_strategy(db_config, embedded, name, [ITEM], MARKER, settings)
    sel = list_selections(db_config, result.run_id).iloc[0]
    records = [get_trace(db_config, t).record for t in sel["detail"]["trace_ids"]]
    if name == "dvts":
        assert len(records) == 2, "n/M subtrees, one final beam each"
    for r in records:
        ends = r.meta["step_ends"]
        assert ends[-1] == len(r.tokens) and len(ends) == len(r.meta["step_scores"]) <= 3
        starts = [0] + ends[:-1]
        for a, b, score in zip(starts, ends, r.meta["step_scores"]):
            assert score == pytest.approx(float(np.mean(r.meta["token_self_certainty"][a:b])))
        for a, b in zip(starts[:-1], ends[:-1]):
            assert "\n\n" in "".join(r.tokens.text[a:b]), "every step but the last ends at a blank line"
    scores = sel["detail"]["scores"]
    assert scores == pytest.approx([r.meta["step_scores"][-1] for r in records])
    usable = [i for i, r in enumerate(records) if _key(records, r.extracted_answer) is not None]
    if usable:
        best = max(usable, key=lambda i: scores[i])
        assert _key(records, sel["selected_answer"]) == _key(records, records[best].extracted_answer)
