"""The Budgets page renders a stored set sweep: the chart, the oracle headline, fixed budgets, the
oracle row and a strategy run over the same prompts as a policy."""
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.reasoning import ReasoningFormat
from generation.decoding import SamplingConfig
from generation.strategies import StrategySettings
from generation.strategies.runner import PromptItem, run_strategy
from generation.sweep import SetSweepSettings, run_set_sweep
from storage.config import StorageConfig

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "budgets.py")


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_resource.clear()  # storage_config() is cached per process: each test has its own database
    st.cache_data.clear()
    yield
    st.cache_resource.clear()


PROMPTS = (("What is 2 + 6?", "8"), ("What is 3 + 4?", "7"))


def test_budgets_page_shows_oracle_and_policies(embedded, tmp_path, monkeypatch):
    db = tmp_path / "budgets.duckdb"
    config = StorageConfig(db)
    fmt = ReasoningFormat()
    sweep = run_set_sweep(config, embedded, fmt, SetSweepSettings(PROMPTS, (4, 12), 2, max_answer_tokens=6))
    run = run_strategy(config, embedded, "greedy", [PromptItem(p, r) for p, r in PROMPTS], fmt,
                       StrategySettings(n=1, sampling=SamplingConfig(0.0, 1.0, 8, 6, 0)))
    monkeypatch.setenv("THINKSCOPE_DB", str(db))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["sweep"] = str(sweep.run_id)
    at.run()
    assert not at.exception
    assert at.selectbox[0].value.startswith(f"#{sweep.run_id} ")
    assert len(at.get("plotly_chart")) == 1
    assert any("Best fixed budget" in m.value and "The oracle" in m.value for m in at.markdown)
    labels = list(at.dataframe[0].value["label"])
    assert labels[:3] == ["fixed 4", "fixed 12", "oracle at the best fixed accuracy"]
    assert f"greedy (run #{run.run_id})" in labels
    per_prompt = at.dataframe[1].value
    assert list(per_prompt["prompt"]) == [p for p, _ in PROMPTS]
    assert set(per_prompt["oracle budget"]) <= {"4", "12"}


def test_budgets_page_without_a_set_sweep_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKSCOPE_DB", str(tmp_path / "empty.duckdb"))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("No sweep over a prompt set" in i.value for i in at.info)


def test_budgets_page_runs_a_policy_on_the_test_split(embedded, model_cache_dir, tmp_path, monkeypatch):
    db = tmp_path / "policy.duckdb"
    sweep = run_set_sweep(StorageConfig(db), embedded, ReasoningFormat(),
                          SetSweepSettings(PROMPTS, (4, 12), 1, max_answer_tokens=6))
    monkeypatch.setenv("THINKSCOPE_DB", str(db))
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=180)
    at.run()
    at.switch_page("pages/budgets.py").run()
    at.toggle(key="budgets_policy_on").set_value(True).run()
    at.selectbox(key="budgets_policy").set_value("self_budget")
    at.number_input(key="budgets_probe").set_value(4).run()
    at.button(key="budgets_policy_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("self_budget run #" in s.value and "1 of 1 test prompts" in s.value for s in at.success)
    labels = list(at.dataframe[0].value["label"])
    assert any(label.startswith("self_budget (run #") and "1 of 2 prompts" in label for label in labels)
    assert sweep.run_id
