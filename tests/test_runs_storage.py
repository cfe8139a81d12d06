"""storage.runs: migration 003, sweep cells with their traces, selections, run metrics, run list."""
import duckdb
import pytest

from storage.connection import connect
from storage.migrate import migration_files
from storage.runs import (
    Selection,
    SweepCell,
    get_run_metrics,
    list_runs,
    list_selections,
    save_run_metrics,
    save_strategy_run,
    save_sweep_traces,
    sweep_cells,
)
from storage.testing import make_record
from storage.traces import count_traces, create_run
from storage.errors import StorageError


def test_migration_003_applies_and_does_not_depend_on_002(db_config, tmp_path):
    names = [p.name for p in migration_files()]
    assert "003_runs.sql" in names
    with connect(db_config, read_only=True) as con:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()").fetchall()}
    assert {"run_metrics", "strategy_selections", "sweep_cells"} <= tables
    # Applied straight on top of 001 alone (as if 002 did not exist).
    con = duckdb.connect()
    con.execute((migration_files()[0].parent / "001_initial.sql").read_text())
    con.execute((migration_files()[0].parent / "003_runs.sql").read_text())


def test_sweep_cells_are_stored_with_their_traces(db_config):
    run_id = create_run(db_config, "m", "sweep")
    cells = [SweepCell(32, 0, n_thinking_tokens=5, correct=True, first_correct_token=3), SweepCell(0, 1, correct=None)]
    stored = save_sweep_traces(db_config, run_id, "k1", [make_record(n_tokens=6), make_record(n_tokens=4)], cells)
    assert all(c.trace_id > 0 for c in stored)
    assert sweep_cells(db_config, "k1") == sorted(stored, key=lambda c: (c.budget, c.sample_index))
    assert sweep_cells(db_config, "other") == []
    # A duplicate cell fails the whole batch: no trace is left behind without its cell.
    before = count_traces(db_config)
    with pytest.raises(StorageError):
        save_sweep_traces(db_config, run_id, "k1", [make_record()], [SweepCell(32, 0)])
    assert count_traces(db_config) == before


def test_selections_metrics_and_run_list(db_config):
    run_id = create_run(db_config, "m", "self_consistency", {"n": 2})
    sel = Selection("What is 1+1?", "2", "2", True, 1, "majority", {"tally": {"2": 2.0}, "scores": None})
    ids = save_strategy_run(db_config, run_id, [make_record(), make_record()], [(sel, range(2))])
    frame = list_selections(db_config, run_id)
    assert frame.iloc[0]["chosen_trace_id"] == ids[1]
    assert frame.iloc[0]["detail"]["trace_ids"] == ids and frame.iloc[0]["detail"]["tally"] == {"2": 2.0}
    save_run_metrics(db_config, run_id, {"accuracy": 0.5, "selection_accuracy": 1.0, "e3": float("nan")})
    save_run_metrics(db_config, run_id, {"accuracy": 0.75, "selection_accuracy": 1.0})  # replaces
    assert get_run_metrics(db_config, run_id) == {"accuracy": 0.75, "selection_accuracy": 1.0}
    other = create_run(db_config, "m", "sweep")
    # An empty run (what a sweep killed before its first batch leaves) is no choice in a picker.
    assert list(list_runs(db_config)["run_id"]) == [run_id]
    runs = list_runs(db_config, include_empty=True)
    assert list(runs["run_id"][:2]) == [other, run_id]
    row = runs[runs["run_id"] == run_id].iloc[0]
    assert row["n_traces"] == 2 and row["accuracy"] == 0.75 and row["settings"] == {"n": 2}
    assert row["status"] == "complete"
    assert list(list_runs(db_config, strategies=("sweep",), include_empty=True)["run_id"]) == [other]
    with pytest.raises(StorageError):
        save_run_metrics(db_config, 9999, {})


# Issue 11, item 4: killed sweeps leave empty runs or runs without metrics.

def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_a_run_whose_process_died_reads_as_interrupted_and_is_resumed(db_config):
    from storage.runs import finish_run, resume_or_create_run

    settings = {"sweep_key": "k-same", "prompt": "p"}
    run_id, resumed = resume_or_create_run(db_config, "m", "sweep", settings, "sweep_key")
    assert not resumed
    save_sweep_traces(db_config, run_id, "k-same", [make_record()], [SweepCell(8, 0)])
    # While this process lives the run is running; once its process is gone (kill -9), interrupted.
    assert list_runs(db_config).iloc[0]["status"] == "running"
    with connect(db_config) as con:
        con.execute("UPDATE runs SET owner_pid = ? WHERE run_id = ?", [_dead_pid(), run_id])
    row = list_runs(db_config).iloc[0]
    assert row["status"] == "interrupted" and row["n_traces"] == 1
    # The next sweep with the same settings continues in that run; other settings get their own.
    other, resumed_other = resume_or_create_run(db_config, "m", "sweep", {"sweep_key": "k-other"}, "sweep_key")
    assert other != run_id and not resumed_other
    again, resumed = resume_or_create_run(db_config, "m", "sweep", settings, "sweep_key")
    assert (again, resumed) == (run_id, True)
    finish_run(db_config, run_id, complete=True)
    assert list_runs(db_config, include_empty=True).set_index("run_id").loc[run_id, "status"] == "complete"
    # A complete run is not resumed: a new sweep of the same settings starts a run of its own.
    assert resume_or_create_run(db_config, "m", "sweep", settings, "sweep_key")[0] not in (run_id, other)


def test_empty_runs_stay_out_of_the_pickers(db_config):
    from storage.compare import comparable_runs

    full = create_run(db_config, "m", "self_consistency")
    save_strategy_run(db_config, full, [make_record()], [(Selection("q", None, "a", None, 0, "majority", {}), range(1))])
    create_run(db_config, "m", "self_consistency", running=True)  # killed before its first prompt was stored
    assert list(list_runs(db_config)["run_id"]) == [full]
    assert list(comparable_runs(db_config)["run_id"]) == [full]
    assert set(comparable_runs(db_config)["status"]) == {"complete"}


def test_migration_008_marks_runs_left_by_killed_sweeps(tmp_path):
    from storage.migrate import apply_migrations

    folder = tmp_path / "migrations"
    folder.mkdir()
    files = migration_files()
    for path in files:
        if path.name < "008":
            (folder / path.name).write_text(path.read_text())
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    apply_migrations(con, folder)
    now = "2026-01-01 00:00:00"
    con.execute(f"""INSERT INTO runs (run_id, model, strategy, settings, created_at, note) VALUES
        (1, 'm', 'sweep', '{{}}', '{now}', NULL),         -- traces, no metrics: killed
        (2, 'm', 'sweep', '{{}}', '{now}', NULL),         -- no traces: killed before the first batch
        (3, 'm', 'sweep', '{{}}', '{now}', NULL),         -- finished (metrics)
        (4, 'm', 'single', '{{}}', '{now}', NULL),        -- a plain generation
        (5, 'm', 'sweep', '{{}}', '{now}', 'imported from x.jsonl')""")
    for run_id in (1, 3, 4, 5):
        con.execute(f"""INSERT INTO traces (trace_id, run_id, prompt_id, model, thinking_text, answer_text,
                        n_thinking_tokens, n_answer_tokens, n_tokens, latency_s, tokens_per_s, stop_reason, created_at)
                        VALUES ({run_id}, {run_id}, 1, 'm', '', '', 0, 0, 0, 0, 0, 'eos', '{now}')""")
    con.execute(f"INSERT INTO run_metrics VALUES (3, '{{}}', '{now}')")
    apply_migrations(con)
    status = dict(con.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall())
    assert status == {1: "interrupted", 2: "interrupted", 3: "complete", 4: "complete", 5: "complete"}
    con.close()


def test_a_cancelled_sweep_resumes_into_the_same_run(embedded, db_config):
    import threading

    from analysis.reasoning import ReasoningFormat
    from generation.sweep import SweepSettings, run_sweep

    fmt = ReasoningFormat(kind="answer_marker")
    settings = SweepSettings("What is 2 + 3?", "5", (4, 8), samples_per_budget=2, max_answer_tokens=4, batch_size=2)
    stop = threading.Event()

    def progress(done, total, tokens):
        if done >= 2:  # the first batch is stored: cancel during the second
            stop.set()

    cut = run_sweep(db_config, embedded, fmt, settings, progress, stop)
    assert cut.missing == 2
    assert list_runs(db_config).set_index("run_id").loc[cut.run_id, "status"] == "interrupted"
    resumed = run_sweep(db_config, embedded, fmt, settings)
    assert resumed.run_id == cut.run_id and resumed.missing == 0  # before: a second run for the same sweep
    row = list_runs(db_config).set_index("run_id").loc[cut.run_id]
    assert row["status"] == "complete" and row["n_traces"] == 4
    assert get_run_metrics(db_config, cut.run_id)["n_queries"] == 4  # metrics over both parts
