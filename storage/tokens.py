"""TokenColumns <-> Arrow tables, the shape in which token rows enter and leave DuckDB.

Token rows are the bulk of the data (about 100 per trace), so they are only ever moved as whole
columns: built with numpy, handed to DuckDB as one Arrow table, never row by row.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import pyarrow as pa

from analysis.records import TokenColumns

# Column order of the tokens table; INSERT and SELECT both name them explicitly. `phase` is
# analysis.records THINKING (0), ANSWER (1) or FORCED (2: injected by budget forcing); migration
# 001's comment predates FORCED, the TINYINT column holds all three.
TOKEN_COLUMNS = (
    "trace_id", "position", "token_id", "text", "logprob", "entropy",
    "top_ids", "top_texts", "top_logprobs", "phase",
)  # fmt: skip


def tokens_table(trace_ids: Sequence[int], columns: Sequence[TokenColumns]) -> pa.Table:
    """One Arrow table with the token rows of several traces, in trace then position order."""
    if len(trace_ids) != len(columns):
        raise ValueError("one trace id per TokenColumns is required")
    lengths = np.fromiter((len(c) for c in columns), dtype=np.int64, count=len(columns))
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    position = (np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)).astype(np.int32)

    # K (alternatives per token) is fixed within a trace but may differ between traces.
    ks = [_alternatives(c) for c in columns]
    row_k = np.repeat(np.asarray(ks, dtype=np.int64), lengths)
    top_texts_rows = list(chain.from_iterable(c.top_texts for c in columns))
    text_k = np.fromiter(map(len, top_texts_rows), dtype=np.int64, count=total)
    if not np.array_equal(text_k, row_k):
        row = int(np.flatnonzero(text_k != row_k)[0])
        raise ValueError(f"top_texts row {row} (counting all traces) has {text_k[row]} entries, top_ids has {row_k[row]}")

    return pa.table(
        {
            "trace_id": pa.array(np.repeat(np.asarray(trace_ids, dtype=np.int64), lengths)),
            "position": pa.array(position),
            "token_id": pa.array(_concat([c.token_id for c in columns], np.int64)),
            "text": pa.array(list(chain.from_iterable(c.text for c in columns)), type=pa.string()),
            "logprob": pa.array(_concat([c.logprob for c in columns], np.float32)),
            "entropy": pa.array(_concat([c.entropy for c in columns], np.float32)),
            "top_ids": _lists(row_k, _concat([c.top_ids.ravel() for c in columns], np.int64)),
            "top_texts": _lists(
                text_k, pa.array(list(chain.from_iterable(top_texts_rows)), type=pa.string())
            ),
            "top_logprobs": _lists(row_k, _concat([c.top_logprobs.ravel() for c in columns], np.float32)),
            "phase": pa.array(_concat([c.phase for c in columns], np.int8)),
        }
    )


def _alternatives(c: TokenColumns) -> int:
    """K of one trace, checking that the [T, K] columns agree with each other."""
    if c.top_ids.ndim != 2 or c.top_ids.shape != c.top_logprobs.shape:
        raise ValueError(f"top_ids {c.top_ids.shape} and top_logprobs {c.top_logprobs.shape} must both be [T, K]")
    return c.top_ids.shape[1]


def columns_from_arrow(table: pa.Table) -> TokenColumns:
    """TokenColumns from the rows of ONE trace (any chunking), in position order."""
    n = table.num_rows
    top_ids, k = _matrix(table.column("top_ids"), n, np.int64)
    top_logprobs, _ = _matrix(table.column("top_logprobs"), n, np.float32, k)
    top_texts = [row if row is not None else [] for row in table.column("top_texts").to_pylist()]
    return TokenColumns(
        token_id=_numpy(table.column("token_id"), np.int64),
        text=table.column("text").to_pylist(),
        logprob=_numpy(table.column("logprob"), np.float32),
        entropy=_numpy(table.column("entropy"), np.float32),
        top_ids=top_ids,
        top_texts=top_texts,
        top_logprobs=top_logprobs,
        phase=_numpy(table.column("phase"), np.int8),
    )


def fetch_arrow(con, sql: str, params: list) -> pa.Table:
    """Run a SELECT and return its rows as an Arrow table.

    Goes through a relation: DuckDB 2 copies the rows once more (and warns) when Arrow output is
    taken from a DB-API execute() result. Relations name the method to_arrow_table from DuckDB
    1.4 on and `arrow` before; requirements allow both.
    """
    relation = con.sql(sql, params=params)
    method = getattr(relation, "to_arrow_table", None) or relation.arrow
    return method()


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype=dtype)
    return np.concatenate([np.asarray(p, dtype=dtype).ravel() for p in parts])


def _lists(counts: np.ndarray, values: np.ndarray | pa.Array) -> pa.ListArray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError("too many top-k values for one batch; save fewer traces at once")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _numpy(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    if column.null_count and np.issubdtype(dtype, np.floating):
        column = column.fill_null(float("nan"))
    return np.asarray(column.to_numpy(), dtype=dtype)


def _matrix(column: pa.ChunkedArray, n: int, dtype: type, k: int | None = None) -> tuple[np.ndarray, int]:
    """A list column whose rows all have length k as an [n, k] array (NULL lists count as empty)."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if n == 0:
        return np.empty((0, k or 0), dtype=dtype), k or 0
    lengths = np.asarray(arr.value_lengths().fill_null(0).to_numpy(), dtype=np.int64)
    if k is None:
        k = int(lengths[0])
    if np.any(lengths != k):
        raise ValueError(f"stored top-k rows have differing lengths ({lengths.min()}..{lengths.max()})")
    values = arr.flatten()
    if values.null_count and np.issubdtype(dtype, np.floating):
        values = values.fill_null(float("nan"))
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype).reshape(n, k), k
