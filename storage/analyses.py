"""Stored analyses: per-trace summaries and per-token signals, keyed by (trace, model, settings key).

Every function opens the file only for its own duration (see connection.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.trace_signals import AnalysisSettings, TokenSignals, TraceAnalysis, TraceSummary, finite_or_none
from storage.config import StorageConfig
from storage.connection import connect, write
from storage.tokens import fetch_arrow
from storage.writes import _insert_arrow

_SUMMARY_COLUMNS = (
    "n_tokens", "n_layers", "deep_band_start", "mi_threshold", "n_peaks", "peak_ratio", "mean_mi", "dtr",
    "self_certainty", "lowest_group_confidence", "tail_confidence", "mean_entropy",
)  # fmt: skip
_TOKEN_COLUMNS = (
    "analysis_id", "position", "token_id", "text", "phase", "mi", "is_peak", "settling_depth", "is_deep",
    "entropy", "logprob", "self_certainty", "confidence", "jsd",
)  # fmt: skip


@dataclass(frozen=True)
class StoredAnalysis:
    analysis_id: int
    trace_id: int
    created_at: datetime
    analysis: TraceAnalysis


def _token_table(analysis_id: int, tokens: TokenSignals) -> pa.Table:
    n_t = len(tokens)
    n_layers = tokens.jsd_lt.shape[0]
    jsd_tl = np.ascontiguousarray(tokens.jsd_lt.T, dtype=np.float32).ravel()
    offsets = pa.array(np.arange(0, n_t * n_layers + 1, n_layers, dtype=np.int32))
    return pa.table({
        "analysis_id": pa.array(np.full(n_t, analysis_id, np.int64)),
        "position": pa.array(np.arange(n_t, dtype=np.int32)),
        "token_id": pa.array(tokens.token_id.astype(np.int64)),
        "text": pa.array(tokens.text, type=pa.string()),
        "phase": pa.array(tokens.phase.astype(np.int8)),
        "mi": pa.array(tokens.mi.astype(np.float64)),
        "is_peak": pa.array(tokens.is_peak.astype(bool)),
        "settling_depth": pa.array(tokens.settling_depth.astype(np.int16)),
        "is_deep": pa.array(tokens.is_deep.astype(bool)),
        **{name: pa.array(getattr(tokens, name).astype(np.float32))
           for name in ("entropy", "logprob", "self_certainty", "confidence")},
        "jsd": pa.ListArray.from_arrays(offsets, pa.array(jsd_tl)),
    })  # fmt: skip


def save_analysis(config: StorageConfig, trace_id: int, analysis: TraceAnalysis) -> int:
    """Store (or replace) the analysis of `trace_id` under its model and settings key; returns its id."""
    summary = analysis.summary.to_dict()

    def work(con) -> int:
        old = con.execute(
            "SELECT analysis_id FROM analyses WHERE trace_id = ? AND analysis_model = ? AND settings_key = ?",
            [trace_id, analysis.analysis_model, analysis.settings.key],
        ).fetchall()
        for (old_id,) in old:
            con.execute("DELETE FROM analysis_tokens WHERE analysis_id = ?", [old_id])
            con.execute("DELETE FROM analyses WHERE analysis_id = ?", [old_id])
        values = [summary[c] if c in ("n_tokens", "n_layers", "deep_band_start", "n_peaks") else finite_or_none(summary[c])
                  for c in _SUMMARY_COLUMNS]
        analysis_id = con.execute(
            f"""INSERT INTO analyses (trace_id, analysis_model, settings_key, settings, reference_kind, reference_text,
                    retokenized, {", ".join(_SUMMARY_COLUMNS)}, notes, elapsed_s, created_at)
                VALUES ({", ".join(["?"] * (len(_SUMMARY_COLUMNS) + 10))}) RETURNING analysis_id""",
            [trace_id, analysis.analysis_model, analysis.settings.key, json.dumps(analysis.settings.to_dict()),
             analysis.reference_kind, analysis.reference_text, analysis.retokenized, *values,
             json.dumps(analysis.notes), analysis.elapsed_s, datetime.now(timezone.utc).replace(tzinfo=None)],
        ).fetchall()[0][0]
        _insert_arrow(con, "analysis_tokens", _token_table(analysis_id, analysis.tokens), _TOKEN_COLUMNS)
        return int(analysis_id)

    return write(config, work)


def get_analysis(config: StorageConfig, trace_id: int, analysis_model: str, settings_key: str) -> StoredAnalysis | None:
    """The stored analysis with its per-token signals, or None when not analysed yet."""
    with connect(config, read_only=True) as con:
        rows = con.execute(
            f"""SELECT analysis_id, created_at, settings, reference_kind, reference_text, retokenized, notes, elapsed_s,
                       {", ".join(_SUMMARY_COLUMNS)}
                FROM analyses WHERE trace_id = ? AND analysis_model = ? AND settings_key = ?""",
            [trace_id, analysis_model, settings_key],
        ).fetchall()
        if not rows:
            return None
        analysis_id = rows[0][0]
        table = fetch_arrow(con, f"SELECT {', '.join(_TOKEN_COLUMNS[1:])} FROM analysis_tokens "
                                 "WHERE analysis_id = ? ORDER BY position", [analysis_id])
    (_, created_at, settings, kind, ref, retok, notes, elapsed, *summary) = rows[0]
    nan = float("nan")
    summary = TraceSummary(*[nan if v is None else v for v in summary])
    return StoredAnalysis(analysis_id, trace_id, created_at, TraceAnalysis(
        analysis_model=analysis_model, settings=AnalysisSettings(**json.loads(settings)), reference_kind=kind,
        reference_text=ref, tokens=_signals_from_arrow(table, summary.n_layers), summary=summary,
        retokenized=bool(retok), notes=json.loads(notes), elapsed_s=elapsed,
    ))  # fmt: skip


def _signals_from_arrow(table: pa.Table, n_layers: int) -> TokenSignals:
    def col(name: str, dtype) -> np.ndarray:
        column = table.column(name)
        if column.null_count:
            column = column.fill_null(float("nan"))
        return np.asarray(column.to_numpy(), dtype=dtype)

    n_t = table.num_rows
    jsd = table.column("jsd").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return TokenSignals(
        text=table.column("text").to_pylist(), token_id=col("token_id", np.int64), phase=col("phase", np.int8),
        mi=col("mi", np.float64), is_peak=col("is_peak", bool), settling_depth=col("settling_depth", np.int64),
        is_deep=col("is_deep", bool), entropy=col("entropy", np.float64), logprob=col("logprob", np.float64),
        self_certainty=col("self_certainty", np.float64), confidence=col("confidence", np.float64),
        jsd_lt=np.asarray(jsd, dtype=np.float64).reshape(n_t, n_layers).T.copy(),
    )  # fmt: skip


def analysis_settings_in_use(config: StorageConfig) -> pd.DataFrame:
    """(analysis_model, settings_key, settings, reference_kind, n_traces), most used first."""
    with connect(config, read_only=True) as con:
        return con.execute(
            """SELECT analysis_model, settings_key, any_value(settings) AS settings,
                      any_value(reference_kind) AS reference_kind, count(*) AS n_traces
               FROM analyses GROUP BY analysis_model, settings_key ORDER BY n_traces DESC, analysis_model"""
        ).df()


def list_analyses(config: StorageConfig, analysis_model: str, settings_key: str) -> pd.DataFrame:
    """Per-trace summaries of one (model, settings) with the trace's correctness and length."""
    with connect(config, read_only=True) as con:
        return con.execute(
            f"""SELECT a.analysis_id, a.trace_id, t.run_id, t.model AS trace_model, t.correct, t.n_tokens AS trace_tokens,
                       {", ".join("a." + c for c in _SUMMARY_COLUMNS)}, a.reference_kind, a.created_at
                FROM analyses a JOIN traces t ON t.trace_id = a.trace_id
                WHERE a.analysis_model = ? AND a.settings_key = ? ORDER BY a.trace_id""",
            [analysis_model, settings_key],
        ).df()


def analysis_token_words(config: StorageConfig, analysis_model: str, settings_key: str) -> pa.Table:
    """(analysis_id, text, is_peak) of every analysed token under one (model, settings), in order."""
    with connect(config, read_only=True) as con:
        return fetch_arrow(
            con,
            """SELECT k.analysis_id, k.text, k.is_peak FROM analysis_tokens k
               JOIN analyses a ON a.analysis_id = k.analysis_id
               WHERE a.analysis_model = ? AND a.settings_key = ? ORDER BY k.analysis_id, k.position""",
            [analysis_model, settings_key],
        )


def unanalysed_trace_ids(
    config: StorageConfig,
    settings_keys: tuple[str, ...],
    analysis_model: str | None = None,
    trace_id: int | None = None,
    run_id: int | None = None,
) -> list[int]:
    """Traces with no analysis under any of `settings_keys` by `analysis_model` (None: each trace's own model)."""
    if not settings_keys:
        raise ValueError("need at least one settings key")
    where, params = ["TRUE"], []
    if trace_id is not None:
        where.append("t.trace_id = ?")
        params.append(trace_id)
    if run_id is not None:
        where.append("t.run_id = ?")
        params.append(run_id)
    marks = ", ".join(["?"] * len(settings_keys))
    with connect(config, read_only=True) as con:
        rows = con.execute(
            f"""SELECT t.trace_id FROM traces t
                WHERE {" AND ".join(where)} AND NOT EXISTS (
                    SELECT 1 FROM analyses a WHERE a.trace_id = t.trace_id
                      AND a.analysis_model = coalesce(CAST(? AS VARCHAR), t.model) AND a.settings_key IN ({marks}))
                ORDER BY t.trace_id""",
            [*params, analysis_model, *settings_keys],
        ).fetchall()
    return [int(r[0]) for r in rows]
