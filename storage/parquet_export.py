"""Export of traces and their token rows as two Parquet files (DuckDB's COPY ... TO ... FORMAT parquet).

    out/traces.parquet   one row per trace, with its prompt and run strategy (JSON columns as text)
    out/tokens.parquet   one row per token: trace_id, position, token_id, text, logprob, entropy,
                         top_ids, top_texts, top_logprobs, phase

Both are written into a temporary directory next to `out` and moved into place at the end, so a
failed export leaves no half-written files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from storage.config import StorageConfig
from storage.connection import connect, sql_literal
from storage.errors import StorageError
from storage.files import remove_stale
from storage.filters import TraceFilter, where_clause
from storage.tokens import TOKEN_COLUMNS

TRACES_FILE = "traces.parquet"
_WORK_PREFIX = ".parquet-export-"
TOKENS_FILE = "tokens.parquet"

_TRACES_SQL = """
    SELECT t.trace_id, t.run_id, t.prompt_id, t.created_at, t.model, p.text AS prompt,
           p.reference_answer, p.source AS prompt_source, r.strategy, t.thinking_text, t.answer_text,
           t.extracted_answer, t.correct, t.n_thinking_tokens, t.n_answer_tokens, t.n_tokens,
           t.latency_s, t.tokens_per_s, t.stop_reason, t.settings::VARCHAR AS settings,
           t.meta::VARCHAR AS meta
    FROM traces t
    JOIN _export_ids e ON e.trace_id = t.trace_id
    JOIN prompts p ON p.prompt_id = t.prompt_id
    JOIN runs r ON r.run_id = t.run_id
    ORDER BY t.trace_id
"""
_TOKENS_SQL = f"""
    SELECT {", ".join("k." + c for c in TOKEN_COLUMNS)}
    FROM tokens k
    JOIN _export_ids e ON e.trace_id = k.trace_id
    ORDER BY k.trace_id, k.position
"""


@dataclass(frozen=True)
class ParquetExport:
    traces_path: Path
    tokens_path: Path
    n_traces: int
    n_tokens: int


def export_parquet(
    config: StorageConfig,
    out_dir: str | os.PathLike,
    filt: TraceFilter | None = None,
    trace_ids: Sequence[int] | None = None,
) -> ParquetExport:
    """Write traces.parquet and tokens.parquet into out_dir (created if needed).

    Exports the traces matching `filt` (default: all), restricted to trace_ids when given.
    Existing files of the same names in out_dir are replaced.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StorageError(f"Cannot export Parquet to {out_dir}: it is a file; the Parquet export writes a folder "
                           f"({TRACES_FILE} and {TOKENS_FILE}). Give a folder name.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # The pid in the name lets a later export remove the folder of one killed with kill -9.
        remove_stale(out_dir, _WORK_PREFIX)
        work = Path(tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{os.getpid()}-", dir=out_dir))
    except OSError as exc:
        raise StorageError(f"Cannot write to {out_dir}: {exc.strerror or exc}") from exc
    try:
        with connect(config, read_only=True) as con:
            ids = selected_ids(con, filt, trace_ids)
            con.register("_export_ids", pa.table({"trace_id": pa.array(ids, pa.int64())}))
            try:
                _copy(con, _TRACES_SQL, work / TRACES_FILE)
                _copy(con, _TOKENS_SQL, work / TOKENS_FILE)
                n_tokens = int(con.execute(
                    "SELECT count(*) FROM tokens k JOIN _export_ids e ON e.trace_id = k.trace_id"
                ).fetchall()[0][0])
            finally:
                con.unregister("_export_ids")
        for name in (TRACES_FILE, TOKENS_FILE):
            os.replace(work / name, out_dir / name)
    except OSError as exc:
        raise StorageError(f"Cannot write to {out_dir}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ParquetExport(out_dir / TRACES_FILE, out_dir / TOKENS_FILE, len(ids), n_tokens)


def selected_ids(
    con: duckdb.DuckDBPyConnection, filt: TraceFilter | None = None, trace_ids: Sequence[int] | None = None
) -> list[int]:
    """Ids of the traces matching filt (and within trace_ids when given), ascending."""
    where, params = where_clause(filt or TraceFilter())
    if trace_ids is not None:
        where += " AND list_contains(?::BIGINT[], t.trace_id)"
        params.append(sorted({int(i) for i in trace_ids}))
    rows = con.execute(f"SELECT t.trace_id FROM traces t WHERE {where} ORDER BY t.trace_id", params).fetchall()
    return [r[0] for r in rows]


def matching_trace_ids(config: StorageConfig, filt: TraceFilter | None = None) -> list[int]:
    """selected_ids on its own connection (for JSONL export of a filtered selection)."""
    with connect(config, read_only=True) as con:
        return selected_ids(con, filt)


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    # COPY takes its target as a literal, not a parameter: quote it as an SQL string.
    target = sql_literal(str(path))
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
