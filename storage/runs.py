"""Runs of strategies and sweeps: their metrics, selected answers and sweep cells (migration 003).

Traces and the cells or selections that refer to them are written in one transaction, so a
cancelled or crashed sweep never leaves a cell without its trace (or the reverse).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.records import TraceRecord
from storage.config import StorageConfig
from storage.connection import connect, write
from storage.jsonvalue import dumps_object
from storage.writes import NewTrace, insert_traces, require_run, utc_now


@dataclass(frozen=True)
class SweepCell:
    """One (budget, sample) cell of a sweep and what the curve needs from its trace."""

    budget: int  # thinking budget in tokens; 0 = free-running
    sample_index: int
    trace_id: int = -1  # -1 until stored
    n_thinking_tokens: int = 0
    n_answer_tokens: int = 0
    correct: bool | None = None
    first_correct_token: int | None = None

    def __post_init__(self) -> None:
        if self.budget < 0 or self.sample_index < 0:
            raise ValueError("budget and sample_index must be >= 0")


@dataclass(frozen=True)
class Selection:
    """The answer a strategy picked for one prompt, and why."""

    prompt: str
    reference_answer: str | None
    selected_answer: str | None
    correct: bool | None
    chosen_index: int | None  # into the prompt's samples
    rule: str
    detail: dict  # tally, scores, note (anything JSON)


def save_sweep_traces(
    config: StorageConfig, run_id: int, sweep_key: str, records: Sequence[TraceRecord], cells: Sequence[SweepCell]
) -> list[SweepCell]:
    """Store traces and their cells atomically; returns the cells with their trace ids."""
    if len(records) != len(cells):
        raise ValueError("one cell per record")
    if not records:
        return []

    def work(con) -> list[SweepCell]:
        require_run(con, run_id)
        ids = insert_traces(con, [NewTrace(r, run_id) for r in records])
        now = utc_now()
        out = []
        for cell, tid in zip(cells, ids):
            con.execute(
                "INSERT INTO sweep_cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [sweep_key, cell.budget, cell.sample_index, tid, run_id, cell.n_thinking_tokens,
                 cell.n_answer_tokens, cell.correct, cell.first_correct_token, now],
            )
            out.append(SweepCell(cell.budget, cell.sample_index, tid, cell.n_thinking_tokens, cell.n_answer_tokens,
                                 cell.correct, cell.first_correct_token))
        return out

    return write(config, work)


def sweep_cells(config: StorageConfig, sweep_key: str) -> list[SweepCell]:
    with connect(config, read_only=True) as con:
        rows = con.execute(
            "SELECT budget, sample_index, trace_id, n_thinking_tokens, n_answer_tokens, correct, first_correct_token"
            " FROM sweep_cells WHERE sweep_key = ? ORDER BY budget, sample_index",
            [sweep_key],
        ).fetchall()
    return [SweepCell(*row) for row in rows]


def save_strategy_run(
    config: StorageConfig, run_id: int, records: Sequence[TraceRecord], selections: Sequence[tuple[Selection, range]]
) -> list[int]:
    """Store a prompt's samples and its selection together; `range` says which records it chose from."""

    def work(con) -> list[int]:
        require_run(con, run_id)
        ids = insert_traces(con, [NewTrace(r, run_id) for r in records]) if records else []
        now = utc_now()
        for sel, span in selections:
            trace_ids = [ids[i] for i in span]
            chosen = trace_ids[sel.chosen_index] if sel.chosen_index is not None else None
            con.execute(
                "INSERT INTO strategy_selections (run_id, prompt, reference_answer, selected_answer, correct,"
                " chosen_trace_id, rule, detail, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, sel.prompt, sel.reference_answer, sel.selected_answer, sel.correct, chosen, sel.rule,
                 dumps_object({**sel.detail, "trace_ids": trace_ids}, "selection detail"), now],
            )
        return ids

    return write(config, work)


def save_run_metrics(config: StorageConfig, run_id: int, metrics: dict) -> None:
    text = dumps_object(metrics, "run metrics")

    def work(con) -> None:
        require_run(con, run_id)
        con.execute("DELETE FROM run_metrics WHERE run_id = ?", [run_id])
        con.execute("INSERT INTO run_metrics VALUES (?, ?, ?)", [run_id, text, utc_now()])

    write(config, work)


def get_run_metrics(config: StorageConfig, run_id: int) -> dict | None:
    with connect(config, read_only=True) as con:
        rows = con.execute("SELECT metrics FROM run_metrics WHERE run_id = ?", [run_id]).fetchall()
    return json.loads(rows[0][0]) if rows else None


def list_selections(config: StorageConfig, run_id: int) -> pd.DataFrame:
    with connect(config, read_only=True) as con:
        frame = con.execute(
            "SELECT selection_id, prompt, reference_answer, selected_answer, correct, chosen_trace_id, rule, detail"
            " FROM strategy_selections WHERE run_id = ? ORDER BY selection_id",
            [run_id],
        ).df()
    frame["detail"] = [json.loads(d) for d in frame["detail"]]
    return frame


METRIC_COLUMNS = (
    "accuracy", "selection_accuracy", "mean_thinking_tokens", "mean_answer_tokens", "mean_latency_s", "tokens_per_s",
    "outcome_efficiency", "e3", "ock_score", "total_tokens",
)  # fmt: skip


def list_runs(config: StorageConfig, strategies: Sequence[str] = (), limit: int = 200) -> pd.DataFrame:
    """Runs newest first with their trace count and stored metrics (one column per METRIC_COLUMNS)."""
    where = "WHERE list_contains(?::VARCHAR[], r.strategy)" if strategies else ""
    params = [list(strategies)] if strategies else []
    with connect(config, read_only=True) as con:
        frame = con.execute(
            f"""SELECT r.run_id, r.created_at, r.model, r.strategy, r.settings,
                       (SELECT count(*) FROM traces t WHERE t.run_id = r.run_id) AS n_traces, m.metrics
                FROM runs r LEFT JOIN run_metrics m ON m.run_id = r.run_id {where}
                ORDER BY r.created_at DESC, r.run_id DESC LIMIT ?""",
            [*params, limit],
        ).df()
    parsed = [json.loads(m) if isinstance(m, str) else {} for m in frame["metrics"]]
    for name in METRIC_COLUMNS:
        frame[name] = [p.get(name) for p in parsed]
    frame["settings"] = [json.loads(s) for s in frame["settings"]]
    return frame.drop(columns=["metrics"])
