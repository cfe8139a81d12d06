"""The L2 policies (adaptive_probe, self_budget) on the embedded model over a set sweep's test split,
stored as strategy runs that the Budgets page and Compare can read."""
import json
from pathlib import Path

import pytest

import cli
from analysis.reasoning import ReasoningFormat
from generation.decoding import SamplingConfig
from generation.strategies import StrategySettings
from generation.strategies.adaptive import PolicySplit, run_policy_on_sweep, stated_budget
from generation.sweep import SetSweepSettings, run_set_sweep
from storage.config import StorageConfig
from storage.runs import list_runs, list_selections, strategy_runs_over

SAMPLE_SET = Path(__file__).resolve().parent.parent / "sample_data" / "prompts.jsonl"
# The first four prompts of the shipped sample set (level-1 sums, with references).
PROMPTS = tuple((r["prompt"], str(r["answer"])) for r in map(json.loads, SAMPLE_SET.read_text().splitlines()[:4]))


def test_stated_budget_reads_the_first_number_and_clamps():
    assert stated_budget("About 120 tokens.", 64) == 64
    assert stated_budget("1,000", 5000) == 1000
    assert stated_budget("I need 0", 64) == 1
    assert stated_budget("no idea", 64) is None


def test_split_needs_two_prompts():
    assert PolicySplit.of(5) == PolicySplit((0, 2, 4), (1, 3))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        PolicySplit.of(1)


def test_policies_run_on_the_test_split_and_are_stored(embedded, tmp_path):
    config = StorageConfig(tmp_path / "policies.duckdb")
    fmt = ReasoningFormat()
    sweep = run_set_sweep(config, embedded, fmt, SetSweepSettings(PROMPTS, (4, 12), 1, max_answer_tokens=6))
    settings = StrategySettings(n=1, probe_tokens=4, sampling=SamplingConfig(0.0, 1.0, 5, 6, 0))
    probe, split, mapping = run_policy_on_sweep(config, embedded, fmt, sweep.run_id, "adaptive_probe", settings)
    assert split.test == (1, 3) and mapping and all(b in (4, 12) for _, b in mapping)
    assert [s.prompt for s in probe.selections] == [PROMPTS[1][0], PROMPTS[3][0]]
    assert all(s.detail["chosen_budget"] in (4, 12) for s in probe.selections)
    stated, _, _ = run_policy_on_sweep(config, embedded, fmt, sweep.run_id, "self_budget", settings)
    assert all(1 <= s.detail["chosen_budget"] <= 12 for s in stated.selections)
    # tiered: the embedded model escalates to a second copy of itself (two local models)
    tier, _, threshold = run_policy_on_sweep(config, embedded, fmt, sweep.run_id, "tiered", settings,
                                             escalate=embedded)
    assert isinstance(threshold, float)
    for sel, ids in zip(tier.selections, tier.trace_ids):
        assert len(ids) == (2 if sel.detail["escalated"] else 1)
        assert sel.detail["escalated"] == (sel.detail["small_confidence"] is None
                                           or sel.detail["small_confidence"] < threshold)
    # each prompt keeps its probe/estimate and its final pass; the run says what was fitted on what
    runs = list_runs(config, strategies=("adaptive_probe", "self_budget"))
    assert set(runs["strategy"]) == {"adaptive_probe", "self_budget"} and set(runs["n_traces"]) == {4}
    assert len(list_runs(config, strategies=("tiered_calibration",))) == 2
    assert "even positions" in runs.iloc[0]["settings"]["calibration"]
    assert list_runs(config, strategies=("probe_calibration",))["n_traces"].tolist() == [2]
    chosen = list_selections(config, probe.run_id)["chosen_trace_id"]
    assert chosen.notna().all() or list_selections(config, probe.run_id)["selected_answer"].isna().any()
    over = {r["run_id"]: r for r in strategy_runs_over(config, embedded.name, [p for p, _ in PROMPTS])}
    assert over[probe.run_id]["positions"] == [1, 3] and over[stated.run_id]["positions"] == [1, 3]
    assert over[tier.run_id]["positions"] == [1, 3]


def test_tiered_without_a_second_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="second, larger model"):
        run_policy_on_sweep(StorageConfig(tmp_path / "t.duckdb"), object(), ReasoningFormat(), 1, "tiered",
                            StrategySettings())


def test_adaptive_probe_without_a_mapping_is_refused_clearly(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "What is 2 + 6?", "answer": "8"}) + "\n")
    assert cli.main(["--db", str(tmp_path / "x.duckdb"), "run", "--strategy", "adaptive_probe",
                     "--prompts", str(path)]) == cli.EXIT_USAGE
    assert "budget policy --sweep ID --policy" in capsys.readouterr().err
