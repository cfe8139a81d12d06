"""Queries behind the Compare page: runs to pick from, and what several runs did on shared prompts.

"Shared prompts" are the prompts (same text and reference answer, i.e. the same prompt_id) that
every compared run has at least one trace for. A run's *final answer* to a prompt is the answer its
strategy selected (strategy_selections) when it has one, else the extracted answer of its first
trace for that prompt; its *shown trace* is the chosen sample, else that first trace.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from storage.config import StorageConfig
from storage.connection import connect
from storage.errors import StorageError
from storage.runs import run_status

MAX_COMPARED_RUNS = 4


def comparable_runs(config: StorageConfig, limit: int = 500) -> pd.DataFrame:
    """Runs with at least one trace (the JOIN leaves out the empty runs a killed sweep leaves),
    newest first: run_id, created_at, model, strategy, settings, n_traces, n_prompts, status
    (storage.runs.run_status: complete, running or interrupted)."""
    with connect(config, read_only=True) as con:
        frame = con.execute(
            """SELECT r.run_id, r.created_at, r.model, r.strategy, r.settings,
                      count(*) AS n_traces, count(DISTINCT t.prompt_id) AS n_prompts, r.status, r.owner_pid
               FROM runs r JOIN traces t ON t.run_id = r.run_id
               GROUP BY ALL ORDER BY r.created_at DESC, r.run_id DESC LIMIT ?""",
            [limit],
        ).df()
    frame["settings"] = [json.loads(s) for s in frame["settings"]]
    frame["status"] = [run_status(st, pid) for st, pid in zip(frame["status"], frame["owner_pid"])]
    return frame.drop(columns=["owner_pid"])


def _check_runs(run_ids: Sequence[int]) -> list[int]:
    ids = list(dict.fromkeys(int(r) for r in run_ids))
    if not 1 <= len(ids) <= MAX_COMPARED_RUNS:
        raise StorageError(f"Compare takes 1 to {MAX_COMPARED_RUNS} different runs, got {len(ids)}")
    return ids


def shared_prompt_rows(config: StorageConfig, run_ids: Sequence[int]) -> pd.DataFrame:
    """One row per (run, shared prompt): prompt_id, prompt, reference_answer, run_id, n_samples,
    total_tokens (all samples), trace_id (the shown trace), n_tokens and n_thinking_tokens of that
    trace, has_selection, final_answer, correct (of the final answer; <NA> when ungraded),
    decoded_thinking / decoded_answer / decoded_forced (<NA> unless the strategy reported the tokens
    it decoded for the prompt, e.g. step search with its pruned branches; docs/METHODS.md §6) and
    finished (False when the run was stopped during the prompt).
    Ordered by prompt_id, then by the position of the run in `run_ids`."""
    ids = _check_runs(run_ids)
    with connect(config, read_only=True) as con:
        frame = con.execute(
            """
            WITH agg AS (
                SELECT run_id, prompt_id, count(*) AS n_samples, sum(n_tokens) AS total_tokens,
                       min(trace_id) AS first_trace
                FROM traces WHERE list_contains(?, run_id) GROUP BY run_id, prompt_id
            ), shared AS (
                SELECT prompt_id FROM agg GROUP BY prompt_id HAVING count(*) = ?
            ), chosen AS (
                SELECT s.run_id, p.prompt_id, s.selected_answer, s.correct, s.chosen_trace_id,
                       CAST(json_extract(s.detail, '$.decoded_tokens.thinking') AS BIGINT) AS decoded_thinking,
                       CAST(json_extract(s.detail, '$.decoded_tokens.answer') AS BIGINT) AS decoded_answer,
                       CAST(json_extract(s.detail, '$.decoded_tokens.forced') AS BIGINT) AS decoded_forced,
                       coalesce(CAST(json_extract(s.detail, '$.finished') AS BOOLEAN), true) AS finished
                FROM strategy_selections s
                JOIN prompts p ON p.text = s.prompt AND p.reference_answer IS NOT DISTINCT FROM s.reference_answer
                WHERE list_contains(?, s.run_id)
                QUALIFY row_number() OVER (PARTITION BY s.run_id, p.prompt_id ORDER BY s.selection_id) = 1
            )
            SELECT a.prompt_id, p.text AS prompt, p.reference_answer, a.run_id, a.n_samples, a.total_tokens,
                   t.trace_id, t.n_tokens, t.n_thinking_tokens, c.run_id IS NOT NULL AS has_selection,
                   CASE WHEN c.run_id IS NOT NULL THEN c.selected_answer ELSE t.extracted_answer END AS final_answer,
                   CASE WHEN c.run_id IS NOT NULL THEN c.correct ELSE t.correct END AS correct,
                   c.decoded_thinking, c.decoded_answer, c.decoded_forced, coalesce(c.finished, true) AS finished
            FROM agg a
            JOIN shared USING (prompt_id)
            JOIN prompts p ON p.prompt_id = a.prompt_id
            LEFT JOIN chosen c ON c.run_id = a.run_id AND c.prompt_id = a.prompt_id
            JOIN traces t ON t.trace_id = coalesce(c.chosen_trace_id, a.first_trace)
            """,
            [ids, len(ids), ids],
        ).df()
    order = {rid: k for k, rid in enumerate(ids)}
    frame["run_order"] = frame["run_id"].map(order)
    frame["correct"] = frame["correct"].astype("boolean")
    return frame.sort_values(["prompt_id", "run_order"]).drop(columns="run_order").reset_index(drop=True)


def shared_samples(config: StorageConfig, run_ids: Sequence[int]) -> pd.DataFrame:
    """Every trace of the runs on their shared prompts: trace_id, run_id, prompt_id, correct,
    n_thinking_tokens, n_answer_tokens, n_tokens, latency_s, extracted_answer, reference_answer,
    stop_reason."""
    ids = _check_runs(run_ids)
    with connect(config, read_only=True) as con:
        frame = con.execute(
            """
            WITH shared AS (
                SELECT prompt_id FROM traces WHERE list_contains(?, run_id)
                GROUP BY prompt_id HAVING count(DISTINCT run_id) = ?
            )
            SELECT t.trace_id, t.run_id, t.prompt_id, t.correct, t.n_thinking_tokens, t.n_answer_tokens,
                   t.n_tokens, t.latency_s, t.extracted_answer, p.reference_answer, t.stop_reason
            FROM traces t JOIN shared USING (prompt_id) JOIN prompts p ON p.prompt_id = t.prompt_id
            WHERE list_contains(?, t.run_id)
            ORDER BY t.run_id, t.trace_id
            """,
            [ids, len(ids), ids],
        ).df()
    frame["correct"] = frame["correct"].astype("boolean")
    return frame


def token_texts(config: StorageConfig, trace_ids: Sequence[int]) -> dict[int, list[str]]:
    """trace_id -> its token texts in generation order (traces without token rows are absent)."""
    if not trace_ids:
        return {}
    with connect(config, read_only=True) as con:
        rows = con.execute(
            "SELECT trace_id, list(text ORDER BY position) FROM tokens WHERE list_contains(?, trace_id) GROUP BY trace_id",
            [[int(t) for t in trace_ids]],
        ).fetchall()
    return {int(t): list(texts) for t, texts in rows}
