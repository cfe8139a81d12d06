"""Strategy runs that were stopped or killed resume into the same run (issue 11 item 4), and runs over
a preset prompt set grade with the preset's answer format and system prompt (issue 12 §4).

The fast tests use a deterministic backend that writes fixed answers per prompt; the extraction
and grading it applies are the real ones (analysis/answers.py, with the format the runner passes).
The CLI tests use the real embedded model with tiny budgets.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cli
from analysis.answers import extract_answer, grade_trace
from analysis.reasoning import ReasoningFormat
from generation.backends import Capabilities
from generation.prompt_sets import PRESETS, PromptSource, load_prompt_set
from generation.strategies import StrategySettings
from generation.decoding import SamplingConfig
from generation.strategies.runner import PromptItem, run_strategy
from storage.connection import connect
from storage.runs import get_run_metrics, list_runs, list_selections
from storage.testing import make_tokens
from analysis.records import TraceRecord

FMT = ReasoningFormat(kind="answer_marker")
SETTINGS = StrategySettings(sampling=SamplingConfig(0.7, 0.95, 8, 4, 0), n=2)
PROMPTS = [PromptItem("What is 1 + 1?", "2"), PromptItem("What is 2 + 2?", "4"), PromptItem("What is 3 + 3?", "6")]


@dataclass
class ScriptedBackend:
    """Answers each prompt with `answers[prompt]` (default "Answer: 5"); remembers every call.
    `stop_on` sets the run's stop event while that prompt is sampled, as Stop would mid-batch."""

    name: str = "scripted"
    capabilities: Capabilities = Capabilities(False, False, False, False, False)
    answers: dict = field(default_factory=dict)
    stop_on: str | None = None
    calls: list = field(default_factory=list)
    formats: list = field(default_factory=list)

    def default_format(self) -> ReasoningFormat:
        return FMT

    def stream(self, *args, **kwargs):
        raise NotImplementedError

    def sample(self, rows, fmt, settings, stop_event=None, progress=None):
        self.calls.append(rows[0].prompt)
        self.formats.append(fmt)
        cut = stop_event is not None and rows[0].prompt == self.stop_on
        if cut:
            stop_event.set()
        out = []
        for i, row in enumerate(rows):
            thinking, answer = "Let me see.", self.answers.get(row.prompt, "Answer: 5")
            stop = "stopped" if cut and i else "eos"
            extracted = extract_answer(answer, thinking, fmt=fmt)
            out.append(TraceRecord(
                prompt=row.prompt, model=self.name, thinking_text=thinking, answer_text=answer,
                tokens=make_tokens(4, 2, i), stop_reason=stop, latency_s=0.1, reference_answer=row.reference_answer,
                extracted_answer=extracted, correct=grade_trace(stop, extracted, row.reference_answer),
                prompt_source=row.prompt_source, settings={"format": fmt.to_dict()}, meta={}))
        return out


def _run_traces(config, run_id) -> list[str]:
    with connect(config, read_only=True) as con:
        return [r[0] for r in con.execute("SELECT p.text FROM traces t JOIN prompts p USING (prompt_id)"
                                          " WHERE t.run_id = ? ORDER BY t.trace_id", [run_id]).fetchall()]


def test_a_stopped_strategy_run_resumes_into_the_same_run(db_config):
    from ui.strategy_view import stop_note

    backend = ScriptedBackend()
    stop = threading.Event()

    def progress(done, total, tokens):
        if done == 1 and tokens == 0:  # the first prompt is stored: Stop before the second
            stop.set()

    cut = run_strategy(db_config, backend, "self_consistency", PROMPTS, FMT, SETTINGS, progress, stop)
    assert cut.stopped and len(cut.selections) == 1
    assert stop_note(cut, len(PROMPTS)) == f"Stopped: 1 of 3 prompts kept in run {cut.run_id}; run again to resume."
    assert list_runs(db_config).set_index("run_id").loc[cut.run_id, "status"] == "interrupted"

    backend.calls.clear()
    again = run_strategy(db_config, backend, "self_consistency", PROMPTS, FMT, SETTINGS)
    assert again.run_id == cut.run_id and again.resumed and again.kept == 1 and not again.stopped
    assert backend.calls == ["What is 2 + 2?", "What is 3 + 3?"]  # only the missing prompts
    assert [s.prompt for s in again.selections] == [p.prompt for p in PROMPTS]
    assert again.trace_ids[0] == cut.trace_ids[0]  # the kept prompt's samples, not new ones
    row = list_runs(db_config).set_index("run_id").loc[cut.run_id]
    assert row["status"] == "complete" and row["n_traces"] == 6
    assert len(list_selections(db_config, cut.run_id)) == 3
    metrics = get_run_metrics(db_config, cut.run_id)
    assert metrics["n_queries"] == 3 and metrics["sample_accuracy"] == 0.0  # every answer is 5: all wrong
    # A complete run is not resumed; other settings or other prompts get their own run.
    assert run_strategy(db_config, backend, "self_consistency", PROMPTS, FMT, SETTINGS).run_id != cut.run_id


def test_a_prompt_cut_short_by_stop_is_not_kept_and_is_generated_on_resume(db_config):
    backend = ScriptedBackend(stop_on="What is 2 + 2?")
    cut = run_strategy(db_config, backend, "self_consistency", PROMPTS, FMT, SETTINGS, stop_event=threading.Event())
    assert cut.stopped and [s.prompt for s in cut.selections] == ["What is 1 + 1?"]
    assert _run_traces(db_config, cut.run_id) == ["What is 1 + 1?"] * 2  # the stopped samples are not a result
    backend.stop_on = None
    backend.calls.clear()
    again = run_strategy(db_config, backend, "self_consistency", PROMPTS, FMT, SETTINGS)
    assert again.run_id == cut.run_id and backend.calls == ["What is 2 + 2?", "What is 3 + 3?"]
    assert _run_traces(db_config, cut.run_id) == [p.prompt for p in PROMPTS for _ in range(2)]


def test_a_killed_or_interrupted_run_resumes_and_other_settings_do_not(db_config):
    backend = ScriptedBackend()

    class Interrupted(BaseException):
        pass

    def progress(done, total, tokens):
        if done == 2 and tokens == 0:
            raise Interrupted  # Ctrl-C in the CLI, after two prompts were stored

    with pytest.raises(Interrupted):
        run_strategy(db_config, backend, "self_consistency", PROMPTS, FMT, SETTINGS, progress)
    runs = list_runs(db_config)
    assert list(runs["status"]) == ["interrupted"]
    run_id = int(runs.iloc[0]["run_id"])
    # Other settings (here N) and another prompt list do not resume it.
    other = run_strategy(db_config, backend, "self_consistency", PROMPTS, FMT, StrategySettings(sampling=SETTINGS.sampling, n=1))
    fewer = run_strategy(db_config, backend, "self_consistency", PROMPTS[:2], FMT, SETTINGS)
    assert run_id not in (other.run_id, fewer.run_id)
    # A process killed with kill -9 leaves its run "running" with a dead pid: it reads as interrupted.
    with connect(db_config) as con:
        con.execute("UPDATE runs SET status = 'running', owner_pid = ? WHERE run_id = ?", [_dead_pid(), run_id])
    backend.calls.clear()
    again = run_strategy(db_config, backend, "self_consistency", PROMPTS, FMT, SETTINGS)
    assert again.run_id == run_id and again.kept == 2 and backend.calls == ["What is 3 + 3?"]
    assert list_runs(db_config).set_index("run_id").loc[run_id, "status"] == "complete"


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_a_preset_run_grades_with_the_preset_answer_format_and_system_prompt(db_config, tmp_path):
    rows = [{"problem": "What is one half as a decimal?", "solution": "...", "answer": "\\frac{1}{2}",
             "subject": "Algebra", "level": 1, "unique_id": "a/1.json"},
            {"problem": "What is 3 squared?", "solution": "...", "answer": "9", "subject": "Algebra", "level": 1,
             "unique_id": "a/2.json"}]
    loaded = load_prompt_set(PromptSource(str(_parquet(tmp_path / "math.parquet", rows)), "math500"))
    items = [PromptItem(r.prompt, r.reference_answer, "set:math") for r in loaded.rows]
    # The first answer is a bare number (right under the default rules, 0.5 = 1/2); the second is boxed.
    backend = ScriptedBackend(answers={items[0].prompt: "so the value is 0.5", items[1].prompt: "Thus \\boxed{9}."})
    settings = StrategySettings(sampling=SETTINGS.sampling, n=1)
    # Think tags: the answer part is not marked by the format itself (with an "Answer:" marker it
    # would be, and a marked answer counts for \boxed{} presets too).
    tags = ReasoningFormat(kind="think_tags")
    plain = run_strategy(db_config, backend, "self_consistency", items, tags, settings)
    assert [s.correct for s in plain.selections] == [True, True]  # what the preset must not do
    graded = run_strategy(db_config, backend, "self_consistency", items, PRESETS["math500"].apply(tags), settings)
    assert [s.selected_answer for s in graded.selections] == [None, "9"]
    assert [s.correct for s in graded.selections] == [False, True]
    assert graded.run_id != plain.run_id  # the preset is part of what a run is
    fmt = backend.formats[-1]
    assert fmt.answer_format == "boxed" and fmt.system_prompt == PRESETS["math500"].system_prompt
    stored = list_runs(db_config).set_index("run_id").loc[graded.run_id, "settings"]["format"]
    assert stored["answer_format"] == "boxed" and "\\boxed{}" in stored["system_prompt"]


def test_a_gsm8k_preset_run_grades_the_final_number(db_config, tmp_path):
    rows = [{"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
             "answer": "In May she sold 48/2 = 24.\nIn all 48+24 = 72.\n#### 72"},
            {"question": "A pen costs 2 dollars. What do 1,000 pens cost?", "answer": "2 * 1000 = 2000\n#### 2,000"}]
    loaded = load_prompt_set(PromptSource(str(_parquet(tmp_path / "gsm.parquet", rows)), "gsm8k"))
    items = [PromptItem(r.prompt, r.reference_answer) for r in loaded.rows]
    backend = ScriptedBackend(answers={items[0].prompt: "She sold 72 clips.\n#### 72",
                                       items[1].prompt: "The total is 2,000 dollars."})
    run = run_strategy(db_config, backend, "greedy", items, PRESETS["gsm8k"].apply(FMT), StrategySettings(n=1))
    assert [s.reference_answer for s in run.selections] == ["72", "2000"]
    assert [(s.selected_answer, s.correct) for s in run.selections] == [("72", True), ("2000", True)]
    assert backend.formats[-1].answer_format == "number"


# --- the CLI with the real embedded model -------------------------------------------------------

def _cli_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_run_resumes_an_interrupted_run(embedded, tmp_path, capsys, monkeypatch):
    import generation.strategies.runner as runner

    db = tmp_path / "c.duckdb"
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {a} + {a}?", "answer": str(2 * a)}) + "\n"
                            for a in (1, 2, 3)), encoding="utf-8")
    argv = ["--db", str(db), "run", "--strategy", "greedy", "--prompts", str(data), "--max-thinking", "4",
            "--max-answer", "3", "--json"]
    saved = []
    real_save = runner.save_strategy_run

    def save_then_interrupt(*args, **kwargs):
        if saved:
            raise KeyboardInterrupt  # Ctrl-C while the second prompt is being stored
        saved.append(real_save(*args, **kwargs))
        return saved[-1]

    monkeypatch.setattr(runner, "save_strategy_run", save_then_interrupt)
    assert cli.main(argv) == 130  # the CLI's exit status for Ctrl-C
    monkeypatch.setattr(runner, "save_strategy_run", real_save)
    assert "interrupted" in capsys.readouterr().err
    from storage.config import StorageConfig

    config = StorageConfig(db_path=db, seed_path=None)
    runs = list_runs(config, strategies=("greedy",))
    assert list(runs["status"]) == ["interrupted"] and list(runs["n_traces"]) == [1]
    run_id = int(runs.iloc[0]["run_id"])

    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert f"resumed run {run_id}: 1 of 3 prompts kept from before" in captured.err
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["run_id"] == run_id and [r["reference"] for r in out["rows"]] == ["2", "4", "6"]
    row = list_runs(config, strategies=("greedy",)).set_index("run_id").loc[run_id]
    assert row["status"] == "complete" and row["n_traces"] == 3
    assert len(list_runs(config, strategies=("greedy",))) == 1
    assert _run_traces(config, run_id) == ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"]


KILLED_CHILD = """
import sys, threading
import cli
import generation.strategies.runner as runner
real = runner.save_strategy_run
def save_then_wait(*args, **kwargs):
    ids = real(*args, **kwargs)
    print("stored", flush=True)
    threading.Event().wait()  # the parent kills this process here, after the first prompt is stored
runner.save_strategy_run = save_then_wait
cli.main(sys.argv[1:])
"""


def test_cli_run_killed_with_sigkill_resumes_into_the_same_run(embedded, model_cache_dir, tmp_path, capsys):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from storage.config import StorageConfig

    repo = Path(__file__).resolve().parent.parent
    db = tmp_path / "c.duckdb"
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {a} + 1?", "answer": str(a + 1)}) + "\n"
                            for a in (4, 5, 6)), encoding="utf-8")
    argv = ["--db", str(db), "run", "--strategy", "greedy", "--prompts", str(data), "--max-thinking", "4",
            "--max-answer", "3", "--json"]
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, *argv], cwd=repo, text=True,
                             env={**os.environ, "PYTHONPATH": str(repo), "THINKSCOPE_CACHE": str(model_cache_dir)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = child.stdout.readline()  # blocks until the child has stored its first prompt (or ended)
    assert line == "stored\n", child.communicate()
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    config = StorageConfig(db_path=db, seed_path=None)
    runs = list_runs(config, strategies=("greedy",))
    assert list(runs["status"]) == ["interrupted"] and list(runs["n_traces"]) == [1]  # its pid is gone
    assert cli.main(argv) == 0
    out = _cli_json(capsys)
    assert out["run_id"] == int(runs.iloc[0]["run_id"]) and len(out["rows"]) == 3
    row = list_runs(config, strategies=("greedy",)).set_index("run_id").loc[out["run_id"]]
    assert row["status"] == "complete" and row["n_traces"] == 3


def test_cli_run_over_preset_files_uses_the_preset_format(embedded, tmp_path, capsys):
    from storage.config import StorageConfig
    from storage.traces import get_trace

    db = tmp_path / "c.duckdb"
    gsm = _parquet(tmp_path / "data.parquet", [
        {"question": "Tom has 40 apples and buys 2 more. How many apples does he have?", "answer": "40+2=42\n#### 42"},
        {"question": "What is 6 times 7?", "answer": "6*7=42\n#### 42"},
        {"question": "What is 1 + 1?", "answer": "#### 2"}])
    assert cli.main(["--db", str(db), "run", "--strategy", "greedy", "--prompts", str(gsm), "--preset", "gsm8k",
                     "--limit", "2", "--max-thinking", "6", "--max-answer", "6", "--json"]) == 0
    out = _cli_json(capsys)
    assert [r["reference"] for r in out["rows"]] == ["42", "42"]
    math = _parquet(tmp_path / "math.parquet", [
        {"problem": "Compute $\\frac{1}{2} + \\frac{1}{2}$.", "solution": "...", "answer": "1", "subject": "Algebra",
         "level": 1, "unique_id": "x/1.json"}])
    assert cli.main(["--db", str(db), "run", "--strategy", "greedy", "--prompts", str(math), "--preset", "math500",
                     "--max-thinking", "6", "--max-answer", "8", "--json"]) == 0
    out_math = _cli_json(capsys)
    config = StorageConfig(db_path=db, seed_path=None)
    for run_id, preset in ((out["run_id"], "gsm8k"), (out_math["run_id"], "math500")):
        for _, sel in list_selections(config, run_id).iterrows():
            record = get_trace(config, sel["detail"]["trace_ids"][0]).record
            fmt = ReasoningFormat(**record.settings["format"])
            assert fmt.answer_format == PRESETS[preset].answer_format
            assert fmt.system_prompt == PRESETS[preset].system_prompt
            # Stored answers were read the preset's way (for MATH: no \boxed{} and no marker, no answer).
            assert record.extracted_answer == extract_answer(record.answer_text, record.thinking_text, fmt=fmt)


# --- the Strategies page's prompt input ---------------------------------------------------------

def _prompts_input_app():
    import streamlit as st

    from analysis.reasoning import ReasoningFormat
    from ui.strategy_view import prompts_input

    items, preset = prompts_input()
    if items:
        fmt = preset.apply(ReasoningFormat(kind="think_tags")) if preset else ReasoningFormat(kind="think_tags")
        st.write(f"{len(items)} prompts, preset {preset.name if preset else None}, answer format "
                 f"{fmt.answer_format or 'default'}, reference {items[0].reference_answer}")


def test_the_strategies_prompt_input_passes_the_stored_sets_preset_on(tmp_path, monkeypatch):
    """A stored set picked on the Strategies page brings its preset: the page applies it to the
    run's format (pages/strategies.py), so the run grades the preset's way (AppTest, no model)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from storage.config import StorageConfig
    from storage.prompt_sets import PromptRow, save_prompt_set

    db = tmp_path / "app.duckdb"
    monkeypatch.setenv("THINKSCOPE_DB", str(db))
    save_prompt_set(StorageConfig(db_path=db, seed_path=None), "aime", "file:/x/aime.parquet",
                    [PromptRow("Find x.", "70"), PromptRow("Find y.", "5")], "aime2025", {"prompt": "problem"})
    st.cache_resource.clear()
    at = AppTest.from_function(_prompts_input_app, default_timeout=60).run()
    assert not at.exception
    at.radio(key="strat_scope").set_value("A stored prompt set (GSM8K, MATH-500, AIME, hub, file)").run()
    at.selectbox(key="strat_set::choice").select("aime").run()
    assert not at.exception
    assert "2 prompts, preset aime2025, answer format boxed, reference 70" in at.markdown[-1].value
    at.radio(key="strat_scope").set_value("One prompt").run()
    assert not at.exception
    st.cache_resource.clear()
