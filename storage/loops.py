"""Stored loop marks of traces (migration 005), keyed by (trace, embedder, unit, threshold, min_chars).

Every function opens the file only for its own duration (see connection.py). Saving many traces at
once is one transaction: a write costs tens of milliseconds whatever its size.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from analysis.loops import LoopMarks
from analysis.steps import STEP_UNITS, Step
from storage.config import StorageConfig
from storage.connection import connect, write
from storage.errors import StorageError
from storage.writes import require_run, utc_now


@dataclass(frozen=True)
class LoopKey:
    """What a stored loop figure depends on besides the trace."""

    embedder: str
    unit: str
    threshold: float
    min_chars: int

    def __post_init__(self) -> None:
        if not isinstance(self.embedder, str) or not self.embedder.strip():
            raise ValueError("LoopKey.embedder must name the embedding model")
        if self.unit not in STEP_UNITS:
            raise ValueError(f"LoopKey.unit must be one of {', '.join(STEP_UNITS)}, got {self.unit!r}")
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise ValueError(f"LoopKey.threshold must be a finite number, got {self.threshold!r}")
        if not isinstance(self.min_chars, int) or self.min_chars < 0:
            raise ValueError(f"LoopKey.min_chars must be an integer >= 0, got {self.min_chars!r}")
        # Slider values like 0.9000000001 must find the row stored for 0.9.
        object.__setattr__(self, "threshold", round(float(self.threshold), 4))

    def params(self) -> list:
        return [self.embedder, self.unit, self.threshold, self.min_chars]


@dataclass(frozen=True)
class StoredLoops:
    trace_id: int
    key: LoopKey
    steps: list[tuple[int, int]]  # (start, end) character offsets into the thinking text
    marks: LoopMarks
    created_at: datetime


_KEY_WHERE = "embedder = ? AND unit = ? AND threshold = ? AND min_chars = ?"


def save_step_loops(config: StorageConfig, key: LoopKey, items: Sequence[tuple[int, Sequence[Step], LoopMarks]]) -> None:
    """Store (or replace) the marks of several traces in one transaction: (trace_id, steps, marks)."""
    for trace_id, steps, marks in items:
        if len(steps) != marks.n_steps:
            raise ValueError(f"trace {trace_id}: {len(steps)} steps but {marks.n_steps} marks")
    if not items:
        return

    def work(con) -> None:
        ids = [int(t) for t, _, _ in items]
        found = {r[0] for r in con.execute("SELECT trace_id FROM traces WHERE list_contains(?, trace_id)",
                                           [ids]).fetchall()}
        missing = sorted(set(ids) - found)
        if missing:
            raise StorageError(f"Cannot store loop marks: no trace {', '.join(map(str, missing))}")
        now = utc_now()
        for trace_id, steps, marks in items:
            con.execute(f"DELETE FROM step_loops WHERE trace_id = ? AND {_KEY_WHERE}", [int(trace_id), *key.params()])
            best = [None if math.isnan(v) else float(v) for v in marks.best_similarity.tolist()]
            con.execute(
                "INSERT INTO step_loops VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [int(trace_id), *key.params(), marks.n_steps, marks.n_eligible, marks.n_repeated,
                 marks.repeat_share, [s.start for s in steps], [s.end for s in steps],
                 marks.eligible.tolist(), marks.repeat_of.tolist(), best, now],
            )

    write(config, work)


def get_step_loops(config: StorageConfig, trace_id: int, key: LoopKey) -> StoredLoops | None:
    with connect(config, read_only=True) as con:
        rows = con.execute(
            "SELECT step_start, step_end, eligible, repeat_of, best_similarity, created_at FROM step_loops"
            f" WHERE trace_id = ? AND {_KEY_WHERE}",
            [int(trace_id), *key.params()],
        ).fetchall()
    if not rows:
        return None
    starts, ends, eligible, repeat_of, best, created = rows[0]
    marks = LoopMarks(
        repeat_of=np.asarray(repeat_of, dtype=np.int64),
        best_similarity=np.array([np.nan if b is None else b for b in best], dtype=np.float32),
        eligible=np.asarray(eligible, dtype=bool),
    )
    return StoredLoops(int(trace_id), key, list(zip(starts, ends)), marks, created)


def repeat_shares(config: StorageConfig, trace_ids: Sequence[int], key: LoopKey) -> dict[int, float | None]:
    """trace_id -> stored repeat share (None: no eligible step) for the traces that have one."""
    if not trace_ids:
        return {}
    with connect(config, read_only=True) as con:
        rows = con.execute(
            f"SELECT trace_id, repeat_share FROM step_loops WHERE list_contains(?, trace_id) AND {_KEY_WHERE}",
            [[int(t) for t in trace_ids], *key.params()],
        ).fetchall()
    return {int(t): s for t, s in rows}


def thinking_texts(config: StorageConfig, trace_ids: Sequence[int]) -> dict[int, str]:
    """trace_id -> thinking text, for the ids that exist (in the given order)."""
    if not trace_ids:
        return {}
    ids = [int(t) for t in trace_ids]
    with connect(config, read_only=True) as con:
        rows = con.execute("SELECT trace_id, thinking_text FROM traces WHERE list_contains(?, trace_id)",
                           [ids]).fetchall()
    found = dict(rows)
    return {t: found[t] for t in ids if t in found}


def traces_without_loops(config: StorageConfig, key: LoopKey, run_id: int | None = None) -> list[int]:
    """Ids of traces (of one run, or all) with no stored loop marks for `key`, oldest first."""
    with connect(config, read_only=True) as con:
        if run_id is not None:
            require_run(con, run_id)
        rows = con.execute(
            f"""SELECT t.trace_id FROM traces t
                WHERE (? IS NULL OR t.run_id = ?)
                  AND NOT EXISTS (SELECT 1 FROM step_loops l WHERE l.trace_id = t.trace_id AND {_KEY_WHERE})
                ORDER BY t.trace_id""",
            [run_id, run_id, *key.params()],
        ).fetchall()
    return [int(r[0]) for r in rows]
