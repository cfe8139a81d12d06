"""The accuracy-vs-length sweep on the real embedded model: cells, resume, cancel, bad input."""
import threading

import pytest

from analysis.reasoning import ReasoningFormat
from generation.sweep import FREE, SweepSettings, curves, parse_budgets, run_sweep
from storage.runs import list_runs, sweep_cells
from storage.traces import count_traces, get_trace

MARKER = ReasoningFormat(kind="answer_marker")


def _settings(**kw):
    base = dict(prompt="What is 9 + 8?", reference_answer="17", budgets=(8, 16), samples_per_budget=2,
                free_samples=2, free_cap_tokens=24, max_answer_tokens=8, seed=1)
    return SweepSettings(**{**base, **kw})


def test_sweep_stores_every_cell_and_a_rerun_generates_nothing(embedded, db_config):
    settings = _settings()
    first = run_sweep(db_config, embedded, MARKER, settings)
    assert first.generated == 6 and first.missing == 0 and first.run_id is not None
    assert {(c.budget, c.sample_index) for c in first.cells} == {(8, 0), (8, 1), (16, 0), (16, 1), (FREE, 0), (FREE, 1)}
    for c in first.cells:
        stored = get_trace(db_config, c.trace_id)
        assert stored.run_id == first.run_id
        rec = stored.record
        assert rec.n_thinking_tokens == c.n_thinking_tokens and rec.correct == c.correct
        budget = rec.settings["max_thinking_tokens"]
        assert budget == (24 if c.budget == FREE else c.budget)
        # Forced tokens ("\nFinal Answer:") are thinking until the marker completes; sampled ones obey the budget.
        assert rec.n_thinking_tokens - len(rec.meta.get("forced_positions", [])) <= budget
        if c.first_correct_token is not None:
            assert "17" in "".join(rec.tokens.text[: c.first_correct_token + 1])
    traces_before = count_traces(db_config)
    runs_before = len(list_runs(db_config))
    again = run_sweep(db_config, embedded, MARKER, settings)
    assert again.generated == 0 and again.run_id is None
    assert count_traces(db_config) == traces_before and len(list_runs(db_config)) == runs_before
    assert [c.trace_id for c in again.cells] == [c.trace_id for c in first.cells]
    # A wider sweep reuses the stored cells and only adds the new budget.
    wider = run_sweep(db_config, embedded, MARKER, _settings(budgets=(8, 16, 20)))
    assert wider.generated == 2
    by_budget, by_quantile = curves(wider.cells)
    assert [p.budget for p in by_budget.points] == [8, 16, 20]
    assert all(p.n == 2 for p in by_budget.points)
    assert sum(p.n for p in by_quantile.points) == 2
    for p in by_budget.points:
        assert p.ci_low <= p.accuracy <= p.ci_high


def test_cancelled_sweep_keeps_finished_cells_and_resumes(embedded, db_config):
    settings = _settings(budgets=(4, 24), free_samples=0, batch_size=2)
    stop = threading.Event()

    def progress(done, total, tokens):
        if done >= 2:  # the first batch (budget 4) is stored: cancel during the second
            stop.set()

    cut = run_sweep(db_config, embedded, MARKER, settings, progress, stop)
    assert cut.stopped and cut.generated == 2 and cut.missing == 2
    assert {c.budget for c in sweep_cells(db_config, cut.key)} == {4}
    resumed = run_sweep(db_config, embedded, MARKER, settings)
    assert resumed.generated == 2 and resumed.missing == 0
    assert len(sweep_cells(db_config, cut.key)) == 4


def test_sweep_without_reference_runs_with_unknown_accuracy(embedded, db_config):
    result = run_sweep(db_config, embedded, MARKER, _settings(reference_answer="  ", budgets=(6,), free_samples=0))
    assert result.generated == 2 and all(c.correct is None for c in result.cells)
    by_budget, _ = curves(result.cells)
    assert by_budget.points == () and by_budget.n_unknown == 2


@pytest.mark.parametrize("budgets, message", [((), "empty"), ((64, 32), "increasing"), ((32, 32), "increasing"),
                                              ((0, 8), "at least 1")])
def test_bad_budget_lists_are_refused(budgets, message):
    with pytest.raises(ValueError, match=message):
        _settings(budgets=budgets)


def test_zero_samples_and_unparseable_budgets_are_refused():
    with pytest.raises(ValueError, match="N must be at least 1"):
        _settings(samples_per_budget=0)
    with pytest.raises(ValueError, match="whole numbers"):
        parse_budgets("32, lots")
    assert parse_budgets("32, 64,128") == (32, 64, 128)
    assert parse_budgets("") == ()
