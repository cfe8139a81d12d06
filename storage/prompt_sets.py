"""Named prompt sets (migration 010): a loaded benchmark or file kept in the database with its source.

Loading (hub, files, presets) is generation/prompt_sets.py's job; this module only stores and
reads back rows of (prompt, reference answer, meta), so the app and the CLI can run a set again
without the hub or the original file.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from storage.config import StorageConfig
from storage.connection import connect, write
from storage.errors import StorageError
from storage.jsonvalue import dumps_object
from storage.writes import utc_now

MAX_NAME_CHARS = 80
_NAME = re.compile(r"^[\w.\-+ ]+$")


class PromptSetExists(StorageError):
    """A set of that name is stored already and replacing it was not asked for; nothing changed."""


@dataclass(frozen=True)
class PromptRow:
    """One prompt of a set: the text the model gets, the reference (None: ungraded), source fields."""

    prompt: str
    reference_answer: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PromptSetInfo:
    set_id: int
    name: str
    source: str
    preset: str | None
    fields: dict
    n_items: int
    created_at: datetime


def clean_set_name(name: object) -> str:
    """The name as stored (trimmed), or StorageError saying what is wrong with it."""
    if not isinstance(name, str) or not name.strip():
        raise StorageError("A prompt set needs a name.")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS or not _NAME.match(name):
        raise StorageError(f"A prompt set name has at most {MAX_NAME_CHARS} letters, digits, spaces or . _ - +; "
                           f"got {name[:100]!r}.")
    return name


def save_prompt_set(config: StorageConfig, name: str, source: str, rows: Sequence[PromptRow],
                    preset: str | None = None, fields: dict | None = None, replace: bool = False) -> int:
    """Store `rows` as the set `name` (one transaction); its set_id. An existing name raises
    PromptSetExists unless `replace`, which swaps its rows for these."""
    name = clean_set_name(name)
    if not rows:
        raise StorageError(f"Prompt set {name!r} has no prompts: nothing stored.")
    for i, row in enumerate(rows):
        if not isinstance(row.prompt, str) or not row.prompt.strip():
            raise StorageError(f"Prompt set {name!r}, item {i}: the prompt is empty; nothing stored.")
    fields_json = dumps_object(fields or {}, "prompt set fields")
    metas = [dumps_object(dict(r.meta), f"prompt set item {i} meta") for i, r in enumerate(rows)]

    def work(con) -> int:
        found = con.execute("SELECT set_id, source, n_items FROM prompt_sets WHERE name = ?", [name]).fetchall()
        if found and not replace:
            set_id, old_source, n_old = found[0]
            raise PromptSetExists(f"A prompt set named {name!r} already exists ({n_old} prompts from {old_source}); "
                                  "choose another name or replace it.")
        if found:
            set_id = found[0][0]
            con.execute("DELETE FROM prompt_set_items WHERE set_id = ?", [set_id])
            con.execute("UPDATE prompt_sets SET source = ?, preset = ?, fields = ?, n_items = ?, created_at = ? "
                        "WHERE set_id = ?", [source, preset, fields_json, len(rows), utc_now(), set_id])
        else:
            set_id = con.execute(
                "INSERT INTO prompt_sets (name, source, preset, fields, n_items, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                "RETURNING set_id", [name, source, preset, fields_json, len(rows), utc_now()]).fetchall()[0][0]
        con.executemany(
            "INSERT INTO prompt_set_items (set_id, idx, prompt, reference_answer, meta) VALUES (?, ?, ?, ?, ?)",
            [[set_id, i, r.prompt, r.reference_answer, m] for i, (r, m) in enumerate(zip(rows, metas))])
        return int(set_id)

    return write(config, work)


def _info(row) -> PromptSetInfo:
    set_id, name, source, preset, fields, n_items, created_at = row
    return PromptSetInfo(int(set_id), name, source, preset, json.loads(fields) if fields else {}, int(n_items),
                         created_at)


_COLUMNS = "set_id, name, source, preset, fields, n_items, created_at"


def list_prompt_sets(config: StorageConfig) -> list[PromptSetInfo]:
    """Every stored set, by name."""
    with connect(config, read_only=True) as con:
        return [_info(r) for r in con.execute(f"SELECT {_COLUMNS} FROM prompt_sets ORDER BY name").fetchall()]


def get_prompt_set(config: StorageConfig, name: str, limit: int | None = None
                   ) -> tuple[PromptSetInfo, list[PromptRow]] | None:
    """The set `name` and its first `limit` rows in source order, or None when there is no such set."""
    with connect(config, read_only=True) as con:
        found = con.execute(f"SELECT {_COLUMNS} FROM prompt_sets WHERE name = ?", [name.strip()]).fetchall()
        if not found:
            return None
        info = _info(found[0])
        rows = con.execute(
            "SELECT prompt, reference_answer, meta FROM prompt_set_items WHERE set_id = ? ORDER BY idx"
            + (" LIMIT ?" if limit is not None else ""),
            [info.set_id] + ([int(limit)] if limit is not None else [])).fetchall()
    return info, [PromptRow(p, r, json.loads(m) if m else {}) for p, r, m in rows]
