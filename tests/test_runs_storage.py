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
    runs = list_runs(db_config)
    assert list(runs["run_id"][:2]) == [other, run_id]
    row = runs[runs["run_id"] == run_id].iloc[0]
    assert row["n_traces"] == 2 and row["accuracy"] == 0.75 and row["settings"] == {"n": 2}
    assert list(list_runs(db_config, strategies=("sweep",))["run_id"]) == [other]
    with pytest.raises(StorageError):
        save_run_metrics(db_config, 9999, {})
