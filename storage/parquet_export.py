"""Export of traces and their token rows as two Parquet files (DuckDB's COPY ... TO ... FORMAT parquet).

    out/traces.parquet   one row per trace, with its prompt and run strategy (JSON columns as text)
    out/tokens.parquet   one row per token: trace_id, position, token_id, text, logprob, entropy,
                         top_ids, top_texts, top_logprobs, phase

Both are written into a temporary directory next to `out` and moved into place at the end, so a
failed export leaves no half-written files.

The database is read in chunks of _CHUNK_TRACES traces, each on its own short connection, with
waiting writers let in between (storage/connection.py yield_to_writers), as the JSONL export does:
a trace finished by the app or a CLI during a long export is stored between two chunks instead of
waiting for the end. The selection is fixed first; each chunk is a consistent read of its traces
and their tokens. The chunks' part files are then concatenated in order, without the database,
into files that read back equal to those of one COPY of everything.
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
import pyarrow.parquet as pq

from storage.config import StorageConfig
from storage.connection import connect, sql_literal, yield_to_writers
from storage.errors import StorageError
from storage.files import remove_stale
from storage.filters import TraceFilter, where_clause
from storage.tokens import TOKEN_COLUMNS

TRACES_FILE = "traces.parquet"
_WORK_PREFIX = ".parquet-export-"
TOKENS_FILE = "tokens.parquet"
# Traces per chunk: the file is held for one chunk's two COPYs at a time (as storage/jsonl.py).
_CHUNK_TRACES = 1000

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
        # An empty selection is one empty chunk: the files still carry the schema.
        chunks = [ids[i : i + _CHUNK_TRACES] for i in range(0, len(ids), _CHUNK_TRACES)] or [[]]
        parts: dict[str, list[Path]] = {TRACES_FILE: [], TOKENS_FILE: []}
        n_tokens = 0
        for k, chunk in enumerate(chunks):
            if k:
                yield_to_writers(config)  # let a waiting writer in before taking the file again
            with connect(config, read_only=True) as con:
                n_tokens += _export_chunk(con, chunk, work, k, parts)
        for name, files in parts.items():
            _concatenate(files, work / name)
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


def _export_chunk(con: duckdb.DuckDBPyConnection, chunk: list[int], work: Path, k: int,
                  parts: dict[str, list[Path]]) -> int:
    """COPY one chunk's traces and tokens into part files (appended to `parts`); its token count."""
    con.register("_export_ids", pa.table({"trace_id": pa.array(chunk, pa.int64())}))
    try:
        for name, query in ((TRACES_FILE, _TRACES_SQL), (TOKENS_FILE, _TOKENS_SQL)):
            part = work / f"{k:06d}-{name}"
            _copy(con, query, part)
            parts[name].append(part)
        return int(con.execute(
            "SELECT count(*) FROM tokens k JOIN _export_ids e ON e.trace_id = k.trace_id").fetchall()[0][0])
    finally:
        con.unregister("_export_ids")


def _concatenate(parts: list[Path], target: Path) -> None:
    """The part files one after the other as one Parquet file, without the database open.

    One part is the file itself. Several are copied row group by row group (memory stays at one
    row group), in chunk order. DuckDB marks a column required when a part has no NULL in it, so
    a column is required in the whole file only when it is in every part: what one COPY of all
    the rows writes.
    """
    if len(parts) == 1:
        os.replace(parts[0], target)
        return
    files = [pq.ParquetFile(p) for p in parts]
    schemas = [f.schema_arrow for f in files]
    schema = pa.schema([field.with_nullable(any(s.field(i).nullable for s in schemas))
                        for i, field in enumerate(schemas[0])], schemas[0].metadata)
    with pq.ParquetWriter(target, schema, compression="zstd") as out:
        for f in files:
            for group in range(f.num_row_groups):
                out.write_table(f.read_row_group(group).cast(schema))
    for f, part in zip(files, parts):
        f.close()
        part.unlink()


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    # COPY takes its target as a literal, not a parameter: quote it as an SQL string.
    target = sql_literal(str(path))
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
