"""The Compare page through AppTest on runs stored the way the strategy runner stores them."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.records import ANSWER, THINKING, TokenColumns
from storage.compare import comparable_runs
from storage.config import StorageConfig
from storage.runs import Selection, save_strategy_run
from storage.testing import make_record
from storage.traces import create_run, save_traces

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "compare.py")
TRACE_PAGE = str(ROOT / "pages" / "trace.py")
PROMPTS = {"What is 2 + 3?": "5", "What is 4 + 4?": "8", "What is 9 - 1?": "8"}
HOSTILE = "<script>alert(1)</script>"


def _tokens(thinking: str, answer: str) -> TokenColumns:
    # Token texts that spell thinking + answer, so answer positions can be located in tokens.
    pieces = [(p, THINKING) for p in re.findall(r"\S+\s*|\s+", thinking)] + [("\nAnswer: ", ANSWER), (answer, ANSWER)]
    n = len(pieces)
    return TokenColumns(
        token_id=np.arange(n, dtype=np.int64), text=[p for p, _ in pieces],
        logprob=np.full(n, -0.5, np.float32), entropy=np.full(n, 0.3, np.float32),
        top_ids=np.zeros((n, 0), np.int64), top_texts=[[] for _ in range(n)], top_logprobs=np.zeros((n, 0), np.float32),
        phase=np.array([ph for _, ph in pieces], dtype=np.int8),
    )


def _record(prompt: str, answer: str, thinking: str, strategy: str):
    reference = PROMPTS.get(prompt, "1")
    return make_record(prompt=prompt, reference_answer=reference, thinking_text=thinking, answer_text=answer,
                       extracted_answer=answer, correct=answer == reference, tokens=_tokens(thinking, answer),
                       strategy=strategy)


def _strategy_run(db, strategy: str, answers: dict[str, list[str]], thinking: dict[str, str] | None = None) -> int:
    """One run like generation/strategies/runner.py stores it: samples + a majority selection per prompt."""
    run_id = create_run(db, "test-model", strategy, {"strategy": strategy})
    for prompt, samples in answers.items():
        text = (thinking or {}).get(prompt, f"We work out {prompt.lower()} First we add. So the result is {samples[0]}.")
        records = [_record(prompt, a, text, strategy) for a in samples]
        winner = max(set(samples), key=samples.count)
        reference = PROMPTS.get(prompt, "1")
        sel = Selection(prompt, reference, winner, winner == reference, samples.index(winner), "majority",
                        {"tally": {a: samples.count(a) for a in set(samples)}})
        save_strategy_run(db, run_id, records, [(sel, range(len(records)))])
    return run_id


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKSCOPE_DB", str(tmp_path / "cmp.duckdb"))
    st.cache_resource.clear()
    st.cache_data.clear()
    config = StorageConfig(db_path=tmp_path / "cmp.duckdb", seed_path=None)
    comparable_runs(config)  # creates the file unseeded, so the app does not import the sample traces
    yield config
    st.cache_data.clear()


@pytest.fixture
def runs(db):
    a = _strategy_run(db, "self_consistency", {
        "What is 2 + 3?": ["5", "5"], "What is 4 + 4?": ["8", "8"], "What is 9 - 1?": ["7", "7"],
        "What is 1 + 0?": ["1"],  # only this run has it: never compared
    }, thinking={"What is 4 + 4?": f"We add 4 and 4. Four plus four is 8. {HOSTILE} So it is 8."})
    b = _strategy_run(db, "greedy", {"What is 2 + 3?": ["5"], "What is 4 + 4?": ["9"], "What is 9 - 1?": ["7"]},
                      thinking={"What is 4 + 4?": "We add 4 and 4. Four plus four is 9. So it is 9."})
    # A run without selections (plain generations): its first trace per prompt stands for it.
    c = create_run(db, "other-model", "single")
    save_traces(db, [_record(p, r, f"Easy: {r}.", "single") for p, r in PROMPTS.items()], run_id=c)
    return a, b, c


def _page(run_ids) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    at.multiselect(key="cmp_runs").set_value(list(run_ids)).run()
    assert not at.exception, at.exception
    return at


def _html(at) -> list[str]:
    return [h.proto.body for h in at.get("html")]


def _cells(at) -> list[str]:
    # Drawn with st.html: Markdown would parse the (escaped) trace text between the tags.
    return [body for body in _html(at) if "sample(s)" in body]


def _prompts(at) -> list[str]:
    return [body for body in _html(at) if "Prompt #" in body]


def test_metrics_pareto_and_per_prompt_cells(db, runs):
    a, b, _ = runs
    at = _page([a, b])
    assert not at.error, [e.value for e in at.error]
    metrics = at.dataframe[0].value
    assert metrics["run"].tolist() == [f"#{a} self_consistency", f"#{b} greedy"]
    assert metrics["prompts"].tolist() == [3, 3]  # the prompt only run a has is left out
    assert metrics["samples"].tolist() == [6, 3]
    assert metrics["accuracy"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert metrics["tokens_per_prompt"].iloc[0] == pytest.approx(2 * metrics["tokens_per_prompt"].iloc[1], rel=0.3)
    # Both samples of every a-prompt state their first correct answer inside the thinking.
    assert 0 < metrics["outcome_efficiency"].iloc[0] < 1
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [trace.get("name") for trace in spec["data"]]
    assert "Pareto front" in names and f"#{a} self_consistency" in names
    cells = _cells(at)
    assert len(cells) == 6 and len(_prompts(at)) == 3
    assert sum(">right<" in c for c in cells) == 3 and sum(">wrong<" in c for c in cells) == 3
    assert all("first at token" in c for c in cells), cells
    assert not any(HOSTILE in m.value for m in at.markdown) and not any(HOSTILE in body for body in _html(at))


def test_filters_and_aligned_steps(db, runs):
    a, b, _ = runs
    at = _page([a, b])
    at.radio(key="cmp_filter").set_value("Only where the runs disagree").run()
    prompts = _prompts(at)
    assert len(prompts) == 1 and "4 + 4" in prompts[0]
    aligned = [h.proto.body for h in at.get("html") if "ts-align" in h.proto.body]
    assert len(aligned) == 1
    body = aligned[0]
    assert "<mark>8.</mark>" in body or "<mark>8. </mark>" in body  # the changed word is marked
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and HOSTILE not in body
    at.radio(key="cmp_filter").set_value("Only where a run got it wrong").run()
    prompts = _prompts(at)
    assert len(prompts) == 2 and not any("2 + 3" in p for p in prompts)


def test_three_runs_one_without_selections(db, runs):
    at = _page(list(runs))
    metrics = at.dataframe[0].value
    assert metrics["accuracy"].tolist() == pytest.approx([2 / 3, 1 / 3, 1.0])
    at.radio(key="cmp_filter").set_value("Only where the runs disagree").run()
    assert len(_prompts(at)) == 2  # 4+4: 8/9/8 and 9-1: 7/7/8


def test_one_run_or_no_shared_prompt_explains_itself(db, runs):
    a, _, _ = runs
    at = _page([a])
    assert any("at least two" in i.value for i in at.info)
    lone = _strategy_run(db, "greedy", {"What is 1 + 0?": ["1"], "Something else?": ["x"]})
    other = _strategy_run(db, "greedy", {"What is 7 + 7?": ["14"]})
    at = _page([lone, other])
    assert any("no prompt in common" in w.value for w in at.warning)


def test_empty_database_says_what_to_do(db):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("No stored runs" in i.value for i in at.info)


def test_loops_and_answer_clusters_with_the_real_embedder(db, runs):
    a, b, _ = runs
    at = _page([a, b])
    at.button(key="cmp_loops_find").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = at.dataframe[0].value
    assert metrics["repeated_steps"].notna().all()
    at.checkbox(key="cmp_cluster").check().run()
    cells = _cells(at)
    assert any("1 answer clusters: «5» ×2" in c for c in cells)


def test_trace_page_marks_loops(db):
    text = ("Let me check the multiplication again. Seven times eight is fifty-six. "
            "Then I subtract four to get fifty-two. Let me double-check the multiplication once more.")
    [tid] = save_traces(db, [make_record(thinking_text=text + " " + HOSTILE)])
    at = AppTest.from_file(TRACE_PAGE, default_timeout=120)
    at.query_params["id"] = str(tid)
    at.run()
    assert not at.exception, at.exception
    at.button(key="loops_find").click().run()
    assert not at.exception, at.exception
    assert any(m.label == "Repeated steps" and m.value == "20%" for m in at.metric)
    body = next(h.proto.body for h in at.get("html") if "↻1" in h.proto.body)
    assert "&lt;script&gt;" in body and HOSTILE not in body
    # Stored: a fresh session shows it without the button.
    at2 = AppTest.from_file(TRACE_PAGE, default_timeout=60)
    at2.query_params["id"] = str(tid)
    at2.run()
    assert any(m.label == "Repeated steps" for m in at2.metric)
