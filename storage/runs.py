"""Runs of strategies and sweeps: their metrics, selected answers and sweep cells (migration 003).

Traces and the cells or selections that refer to them are written in one transaction, so a
cancelled or crashed sweep never leaves a cell without its trace (or the reverse); they go
through the journal (storage/journal.py), so a locked database queues them instead of losing
them. runs.status (migration 008) tells complete, running and interrupted runs apart; a sweep or
strategy run started again with the same settings resumes into its interrupted run (resume_or_create_run).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.records import TraceRecord
from storage import journal
from storage.config import StorageConfig
from storage.connection import connect, write
from storage.errors import StorageError
from storage.jsonvalue import dumps_object
from storage.files import pid_alive
from storage.traces import get_trace, store_entry
from storage.writes import insert_run, insert_selections, require_run, utc_now


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
    rows = [[c.budget, c.sample_index, c.n_thinking_tokens, c.n_answer_tokens,
             None if c.correct is None else bool(c.correct), c.first_correct_token] for c in cells]
    entry = journal.new_entry("sweep", records, run_id, {"sweep_key": sweep_key, "cells": rows})
    ids = store_entry(config, entry)
    return [SweepCell(c.budget, c.sample_index, tid, c.n_thinking_tokens, c.n_answer_tokens, c.correct,
                      c.first_correct_token) for c, tid in zip(cells, ids)]


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
    rows = [{"prompt": sel.prompt, "reference_answer": sel.reference_answer, "selected_answer": sel.selected_answer,
             "correct": None if sel.correct is None else bool(sel.correct), "chosen_index": sel.chosen_index,
             "rule": sel.rule, "detail": json.loads(dumps_object(sel.detail, "selection detail")),
             "start": span.start, "stop": span.stop} for sel, span in selections]
    if not records:
        # Nothing to journal: a selection without samples refers to no trace.
        return write(config, lambda con: _selections_only(con, run_id, rows))
    return store_entry(config, journal.new_entry("strategy", records, run_id, {"selections": rows}))


def _selections_only(con, run_id: int, rows: list[dict]) -> list[int]:
    require_run(con, run_id)
    insert_selections(con, run_id, rows, [])
    return []


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
    "accuracy", "selection_accuracy", "sample_accuracy", "n_queries", "n_not_finished", "n_ties",
    "total_tokens_per_query", "mean_thinking_tokens", "mean_answer_tokens", "mean_latency_s", "tokens_per_s",
    "outcome_efficiency", "e3", "ock_score", "total_tokens",
)  # fmt: skip


def _current_metrics(stored: dict) -> dict:
    """Stored metrics for the run list, in today's meaning (analysis.run_metrics.RunMetrics,
    docs/METHODS.md §6). Before metrics_version 2, a strategy run's E3 and OckScore were computed
    from per-sample accuracy and tokens: they are dropped rather than shown beside a per-query
    accuracy they do not match, and its per-sample "accuracy" is also shown as sample_accuracy."""
    if not stored or stored.get("metrics_version", 1) >= 2 or "selection_accuracy" not in stored:
        return stored
    return dict(stored, sample_accuracy=stored.get("accuracy"), e3=None, ock_score=None)


def list_runs(config: StorageConfig, strategies: Sequence[str] = (), limit: int = 200,
              include_empty: bool = False) -> pd.DataFrame:
    """Runs newest first with their trace count, status (run_status) and stored metrics (one
    column per METRIC_COLUMNS). Runs without a trace (left by a killed sweep) are left out
    unless include_empty: there is nothing to pick in them."""
    conditions = [] if include_empty else ["EXISTS (SELECT 1 FROM traces t WHERE t.run_id = r.run_id)"]
    params: list = []
    if strategies:
        conditions.append("list_contains(?::VARCHAR[], r.strategy)")
        params.append(list(strategies))
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    with connect(config, read_only=True) as con:
        frame = con.execute(
            f"""SELECT r.run_id, r.created_at, r.model, r.strategy, r.settings,
                       (SELECT count(*) FROM traces t WHERE t.run_id = r.run_id) AS n_traces, m.metrics,
                       r.status, r.owner_pid
                FROM runs r LEFT JOIN run_metrics m ON m.run_id = r.run_id {where}
                ORDER BY r.created_at DESC, r.run_id DESC LIMIT ?""",
            [*params, limit],
        ).df()
    frame["status"] = [run_status(st, pid) for st, pid in zip(frame["status"], frame["owner_pid"])]
    frame = frame.drop(columns=["owner_pid"])
    parsed = [_current_metrics(json.loads(m)) if isinstance(m, str) else {} for m in frame["metrics"]]
    for name in METRIC_COLUMNS:
        frame[name] = [p.get(name) for p in parsed]
    frame["settings"] = [json.loads(s) for s in frame["settings"]]
    return frame.drop(columns=["metrics"])


def run_status(status: str | None, owner_pid) -> str:
    """'complete', 'running' or 'interrupted': a run still marked running whose process is gone
    (killed) was interrupted. The pid is checked on this machine."""
    if status == "running":
        alive = owner_pid is not None and not pd.isna(owner_pid) and pid_alive(int(owner_pid))
        return "running" if alive else "interrupted"
    return status or "complete"


def resume_or_create_run(config: StorageConfig, model: str, strategy: str, settings: dict, resume_key: str) -> tuple[int, bool]:
    """(run_id, resumed): the newest interrupted run of this model and strategy whose
    settings[resume_key] equals settings[resume_key] (a killed or stopped sweep or strategy run
    with the same settings), now marked running again for this process; else a new running run."""
    value = settings[resume_key]

    def work(con) -> tuple[int, bool]:
        rows = con.execute(
            """SELECT run_id, status, owner_pid FROM runs
               WHERE model = ? AND strategy = ? AND status IN ('running', 'interrupted')
                 AND json_extract_string(settings, '$.' || ?) = ?
               ORDER BY created_at DESC, run_id DESC""",
            [model, strategy, resume_key, str(value)],
        ).fetchall()
        for run_id, status, pid in rows:
            if run_status(status, pid) == "interrupted":
                con.execute("UPDATE runs SET status = 'running', owner_pid = ? WHERE run_id = ?", [os.getpid(), run_id])
                return int(run_id), True
        return insert_run(con, model, strategy, settings, running=True), False

    return write(config, work)


def get_run(config: StorageConfig, run_id: int) -> dict | None:
    """A run's model, strategy, settings and status (run_status), or None when there is no such run."""
    with connect(config, read_only=True) as con:
        row = con.execute("SELECT model, strategy, settings, status, owner_pid FROM runs WHERE run_id = ?",
                          [run_id]).fetchone()
    if row is None:
        return None
    model, strategy, settings, status, pid = row
    return {"run_id": run_id, "model": model, "strategy": strategy, "settings": json.loads(settings),
            "status": run_status(status, pid)}


def complete_run_with(config: StorageConfig, model: str, strategy: str, key_name: str, value: str) -> int | None:
    """The newest complete run of this model and strategy whose settings[key_name] is `value`."""
    with connect(config, read_only=True) as con:
        row = con.execute(
            """SELECT run_id FROM runs WHERE model = ? AND strategy = ? AND status = 'complete'
                 AND json_extract_string(settings, '$.' || ?) = ? ORDER BY created_at DESC, run_id DESC LIMIT 1""",
            [model, strategy, key_name, value]).fetchone()
    return None if row is None else int(row[0])


def strategy_runs_over(config: StorageConfig, model: str, prompts: Sequence[str]) -> list[dict]:
    """The complete strategy runs of `model` over some of `prompts` (all, or a split such as a policy's
    test half), each with the positions in `prompts` it covers and, there, its per-prompt grade,
    thinking tokens (summed over the prompt's samples, probes and estimates included) and the budget
    a policy chose (None for other strategies): what the
    Budgets page puts beside a set sweep as policies."""
    wanted = set(prompts)
    with connect(config, read_only=True) as con:
        rows = con.execute(
            """SELECT r.run_id, r.strategy, s.prompt, s.correct, s.detail FROM runs r
               JOIN strategy_selections s ON s.run_id = r.run_id
               WHERE r.model = ? AND r.status = 'complete' AND r.strategy NOT IN ('sweep', 'set_sweep')
               ORDER BY r.run_id, s.selection_id""", [model]).fetchall()
        by_run: dict[int, dict] = {}
        for run_id, strategy, prompt, correct, detail in rows:
            run = by_run.setdefault(int(run_id), {"run_id": int(run_id), "strategy": strategy, "prompts": {}})
            parsed = json.loads(detail)
            run["prompts"][prompt] = (correct, [int(i) for i in parsed.get("trace_ids", [])],
                                      parsed.get("chosen_budget"))
        runs = [r for r in by_run.values() if set(r["prompts"]) <= wanted]
        ids = sorted({i for r in runs for _, tids, _ in r["prompts"].values() for i in tids})
        thinking = dict(con.execute("SELECT trace_id, n_thinking_tokens FROM traces WHERE list_contains(?, trace_id)",
                                    [ids]).fetchall()) if ids else {}
    out = []
    for r in runs:
        positions = [k for k, p in enumerate(prompts) if p in r["prompts"]]
        out.append({"run_id": r["run_id"], "strategy": r["strategy"], "positions": positions,
                    "correct": [r["prompts"][prompts[k]][0] for k in positions],
                    "thinking_tokens": [sum(thinking.get(i, 0) for i in r["prompts"][prompts[k]][1])
                                        for k in positions],
                    "budgets": [r["prompts"][prompts[k]][2] for k in positions]})  # a policy's chosen budget
    return out


def identity_key(identity: object) -> str:
    """The value resume_or_create_run matches on: a hash of everything that makes two runs the
    same experiment (model, strategy, settings, format, the prompts and their references)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def finish_run(config: StorageConfig, run_id: int, complete: bool) -> None:
    """Mark a running run complete, or interrupted when it stopped short (it can be resumed)."""
    write(config, lambda con: con.execute("UPDATE runs SET status = ?, owner_pid = NULL WHERE run_id = ?",
                                          ["complete" if complete else "interrupted", run_id]))


def mark_interrupted(config: StorageConfig, run_id: int) -> None:
    """finish_run(complete=False) on the way out of a failed or interrupted (Ctrl-C) run; never raises."""
    try:
        finish_run(config, run_id, complete=False)
    except StorageError:
        pass  # the database is busy: the run reads as interrupted once this process is gone anyway


def stored_selections(config: StorageConfig, run_id: int) -> list[tuple[Selection, list[int]]]:
    """A strategy run's selections in the order they were stored, each with its samples' trace ids
    (what a resumed run keeps)."""
    with connect(config, read_only=True) as con:
        rows = con.execute(
            "SELECT prompt, reference_answer, selected_answer, correct, chosen_trace_id, rule, detail"
            " FROM strategy_selections WHERE run_id = ? ORDER BY selection_id",
            [run_id],
        ).fetchall()
    out = []
    for prompt, reference, selected, correct, chosen, rule, detail in rows:
        detail = json.loads(detail)
        ids = [int(i) for i in detail.pop("trace_ids", [])]
        index = ids.index(chosen) if chosen is not None and chosen in ids else None
        out.append((Selection(prompt, reference, selected, correct, index, rule, detail), ids))
    return out


def trace_records(config: StorageConfig, trace_ids: Sequence[int]) -> list[TraceRecord]:
    """The records of `trace_ids` that exist, in that order, with tokens."""
    return [stored.record for i in trace_ids if (stored := get_trace(config, int(i))) is not None]


def run_trace_records(config: StorageConfig, run_id: int) -> list[TraceRecord]:
    """Every trace of a run, oldest first, with tokens (a resumed run's metrics cover all of them)."""
    with connect(config, read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT trace_id FROM traces WHERE run_id = ? ORDER BY trace_id",
                                         [run_id]).fetchall()]
    return trace_records(config, ids)
