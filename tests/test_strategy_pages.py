"""The accuracy-vs-length and strategies pages through AppTest, on the real embedded model."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from storage.runs import list_runs
from storage.traces import count_traces

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _typed(at, key, prompt, reference):
    at.selectbox(key=f"{key}_choice").set_value("Type a prompt…").run()
    at.text_area(key=f"{key}_prompt").input(prompt)
    at.text_input(key=f"{key}_reference").input(reference)


def test_length_curve_page_runs_a_sweep_and_links_the_traces(app_db):
    at = _page("pages/length_curve.py")
    _typed(at, "sweep", "What is 2 + 6?", "8")
    at.text_input(key="sweep_budgets").input("4,8")
    at.number_input(key="sweep_samples").set_value(2)
    at.number_input(key="sweep_free").set_value(2)
    at.run()
    at.button(key="sweep_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    before = count_traces(app_db)
    assert len(at.dataframe[0].value) == 6
    assert any("Best budget" in m.value for m in at.markdown)
    links = [str(link.proto) for link in at.get("page_link")]
    assert links and all("Trace #" in link for link in links)
    # Running again resumes: nothing new is generated.
    at.button(key="sweep_run").click().run()
    assert count_traces(app_db) == before
    assert any("0 generated now" in c.value for c in at.caption)


def test_length_curve_page_explains_unknown_accuracy_and_bad_budgets(app_db):
    at = _page("pages/length_curve.py")
    _typed(at, "sweep", "Say hi", "")
    at.text_input(key="sweep_budgets").input("8,4").run()
    assert any("strictly increasing" in e.value for e in at.error)
    at.text_input(key="sweep_budgets").input("").run()
    assert any("empty" in e.value for e in at.error)
    at.text_input(key="sweep_budgets").input("3")
    at.number_input(key="sweep_samples").set_value(1)
    at.number_input(key="sweep_free").set_value(0).run()
    at.button(key="sweep_run").click().run()
    assert not at.exception, at.exception
    assert any("Accuracy is unknown" in w.value for w in at.warning)


def test_strategies_page_runs_a_vote_and_lists_runs(app_db):
    at = _page("pages/strategies.py")
    at.selectbox(key="strat_name").set_value("self_consistency")
    at.number_input(key="strat_n").set_value(2)
    at.number_input(key="strat_max_thinking").set_value(6)
    at.number_input(key="strat_max_answer").set_value(4)
    _typed(at, "strat", "What is 2 + 6?", "8")
    at.run()
    at.button(key="strat_run").click().run()
    assert not at.exception, at.exception
    assert any("selected" in m.value and "majority" in m.value for m in at.markdown)
    runs = list_runs(app_db, strategies=("self_consistency",))
    assert len(runs) == 1 and runs.iloc[0]["n_traces"] == 2
    table = at.dataframe[-1].value  # the runs table comes last
    assert {"accuracy", "e3", "ock_score", "outcome_efficiency"} <= set(table.columns)


def test_strategies_page_refuses_n_zero(app_db):
    at = _page("pages/strategies.py")
    at.number_input(key="strat_n").set_value(0).run()
    assert any("N must be at least 1" in e.value for e in at.error)


def test_length_curve_page_sweeps_a_prompt_set_and_links_budgets(app_db):
    from storage.prompt_sets import PromptRow, save_prompt_set
    from storage.runs import get_run

    save_prompt_set(app_db, "two-sums", "test", [PromptRow("What is 2 + 6?", "8"), PromptRow("What is 3 + 4?", "7")])
    at = _page("pages/length_curve.py")
    at.radio(key="sweep_mode").set_value("A prompt set").run()
    at.selectbox(key="sweep_set::choice").set_value("two-sums")
    at.text_input(key="sweep_budgets").input("4,8")
    at.number_input(key="sweep_samples").set_value(1)
    at.run()
    at.button(key="sweep_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    caption = next(c.value for c in at.caption if c.value.startswith("Set sweep #"))
    run_id = int(caption.split("#")[1].split(" ")[0])
    assert get_run(app_db, run_id)["status"] == "complete" and "4 of 4 cells stored" in caption
    table = at.dataframe[0].value
    assert list(table["prompt"]) == ["What is 2 + 6?", "What is 3 + 4?"]
    assert {"accuracy at 4", "accuracy at 8"} <= set(table.columns)
    assert any('page: "budgets"' in str(link.proto) and f"sweep={run_id}" in str(link.proto) for link in at.get("page_link"))
