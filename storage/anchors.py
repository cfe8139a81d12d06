"""Stored Thought Anchors rollouts and trace branches (migration 010).

Rollouts are stored per (trace, settings key, cut, kind, sample), one transaction per batch, so a
stopped run keeps every finished batch and a later run only generates what is missing. Every
function opens the file only for its own duration (see connection.py).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from storage.config import StorageConfig
from storage.connection import connect, write
from storage.errors import StorageError
from storage.writes import utc_now

ROLLOUT_KINDS = ("free", "forced")
EDITS = ("replace", "delete")


@dataclass(frozen=True)
class StoredRollout:
    cut: int
    kind: str  # "free" or "forced"
    sample: int
    generated: str  # the continuation's text (thinking and answer), as the model wrote it
    answer: str | None  # extracted, canonical
    answer_key: str | None  # JSON of analysis.answers.answer_key; None = no answer
    correct: bool | None
    stop_reason: str
    n_tokens: int
    new_sentence: str | None = None
    similarity: float | None = None


@dataclass(frozen=True)
class Branch:
    child_trace_id: int
    parent_trace_id: int
    sentence_index: int
    cut_char: int  # character of the parent's thinking text where the edit starts
    edit: str  # "replace" or "delete"
    replacement: str | None
    original: str  # the parent's sentence that was replaced or deleted
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.edit not in EDITS:
            raise ValueError(f"edit must be one of {', '.join(EDITS)}, not {self.edit!r}")
        if self.edit == "replace" and not (self.replacement or "").strip():
            raise ValueError("a replacement needs text: type the new sentence, or delete the sentence instead")
        if self.sentence_index < 0 or self.cut_char < 0:
            raise ValueError("sentence index and cut position must be >= 0")


def _require_trace(con, trace_id: int) -> None:
    if not con.execute("SELECT count(*) FROM traces WHERE trace_id = ?", [int(trace_id)]).fetchone()[0]:
        raise StorageError(f"No trace {trace_id}: pick a stored trace.")


def save_rollouts(config: StorageConfig, trace_id: int, settings_key: str, settings: dict, n_sentences: int,
                  rows: Sequence[StoredRollout]) -> None:
    """Store one batch of rollouts (replacing rows with the same key) in one transaction."""
    for r in rows:
        if r.kind not in ROLLOUT_KINDS:
            raise ValueError(f"rollout kind must be one of {', '.join(ROLLOUT_KINDS)}, not {r.kind!r}")
    if not rows:
        return

    def work(con) -> None:
        _require_trace(con, trace_id)
        now = utc_now()
        text = json.dumps(settings, sort_keys=True)
        for r in rows:
            con.execute("DELETE FROM anchor_samples WHERE trace_id = ? AND settings_key = ? AND cut = ? AND kind = ? "
                        "AND sample = ?", [int(trace_id), settings_key, r.cut, r.kind, r.sample])
            con.execute(
                "INSERT INTO anchor_samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [int(trace_id), settings_key, r.cut, r.kind, r.sample, n_sentences, text, r.generated, r.answer,
                 r.answer_key, r.correct, r.stop_reason, r.n_tokens, r.new_sentence, r.similarity, now],
            )

    write(config, work)


def get_rollouts(config: StorageConfig, trace_id: int, settings_key: str) -> list[StoredRollout]:
    """Every stored rollout of the trace under this settings key, ordered by kind, cut, sample."""
    with connect(config, read_only=True) as con:
        rows = con.execute(
            "SELECT cut, kind, sample, generated, answer, answer_key, correct, stop_reason, n_tokens, new_sentence, "
            "similarity FROM anchor_samples WHERE trace_id = ? AND settings_key = ? ORDER BY kind, cut, sample",
            [int(trace_id), settings_key]).fetchall()
    return [StoredRollout(*r) for r in rows]


def anchor_settings_keys(config: StorageConfig, trace_id: int) -> list[tuple[str, dict, int]]:
    """(settings key, settings, rollouts stored) of every anchors run on the trace, newest first."""
    with connect(config, read_only=True) as con:
        rows = con.execute(
            "SELECT settings_key, any_value(settings), count(*), max(created_at) AS last FROM anchor_samples "
            "WHERE trace_id = ? GROUP BY settings_key ORDER BY last DESC", [int(trace_id)]).fetchall()
    return [(k, json.loads(s), int(n)) for k, s, n, _ in rows]


def save_branch(config: StorageConfig, branch: Branch) -> None:
    def work(con) -> None:
        _require_trace(con, branch.parent_trace_id)
        _require_trace(con, branch.child_trace_id)
        con.execute("INSERT INTO trace_branches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [branch.child_trace_id, branch.parent_trace_id, branch.sentence_index, branch.cut_char,
                     branch.edit, branch.replacement, branch.original, utc_now()])

    write(config, work)


_BRANCH_COLUMNS = ("child_trace_id, parent_trace_id, sentence_index, cut_char, edit, replacement, original, "
                   "created_at")


def branch_of(config: StorageConfig, child_trace_id: int) -> Branch | None:
    """How this trace was branched from its parent, or None when it is no branch."""
    with connect(config, read_only=True) as con:
        row = con.execute(f"SELECT {_BRANCH_COLUMNS} FROM trace_branches WHERE child_trace_id = ?",
                          [int(child_trace_id)]).fetchone()
    return None if row is None else Branch(*row)


def branch_tree(config: StorageConfig, trace_id: int) -> tuple[int, list[Branch]]:
    """(root trace id, every branch below the root), walking parents up then children down.

    A tree, not a chain: a child may be branched again. Cycles cannot be stored (a child exists
    before its row), but the walk guards against them anyway."""
    with connect(config, read_only=True) as con:
        root, seen = int(trace_id), {int(trace_id)}
        while (row := con.execute("SELECT parent_trace_id FROM trace_branches WHERE child_trace_id = ?",
                                  [root]).fetchone()) is not None and int(row[0]) not in seen:
            root = int(row[0])
            seen.add(root)
        out: list[Branch] = []
        frontier, visited = [root], {root}
        while frontier:
            rows = con.execute(f"SELECT {_BRANCH_COLUMNS} FROM trace_branches WHERE list_contains(?, parent_trace_id) "
                               "ORDER BY child_trace_id", [frontier]).fetchall()
            frontier = []
            for r in rows:
                b = Branch(*r)
                if b.child_trace_id not in visited:
                    visited.add(b.child_trace_id)
                    out.append(b)
                    frontier.append(b.child_trace_id)
    return root, out
