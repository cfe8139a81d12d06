"""Reviews of traces (migration 004): verdicts, notes and span labels as append-only versions.

Every save appends a version; the current state of a (trace, reviewer) is its latest version.
Saves carry the version their view had loaded (expected_version). When a newer version exists,
the save is still stored (so neither edit is lost) but marked stale, and the result names the
version it did not see so the UI can say so and show it. Reviewers never touch each other's rows.
"""
from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from analysis.agreement import VERDICTS
from analysis.steps import STEP_UNITS
from storage.config import StorageConfig
from storage.connection import connect, write
from storage.errors import StorageError
from storage.files import write_lines_atomically
from storage.writes import utc_now

MAX_REVIEWER_CHARS = 80
MAX_LABEL_CHARS = 60
MAX_NOTES_CHARS = 20_000
QUEUE_STATUSES = ("unreviewed", "reviewed", "all")  # relative to the queue's reviewer
EXPORT_FORMAT = "thinkscope.annotation"
EXPORT_VERSION = 1


class AnnotationError(StorageError):
    """An annotation or taxonomy change was refused; nothing was stored."""


def clean_reviewer(name: object) -> str:
    """The reviewer name as stored (trimmed), or AnnotationError saying what is wrong with it."""
    if not isinstance(name, str) or not name.strip():
        raise AnnotationError("Type your reviewer name first: every annotation records who made it.")
    name = name.strip()
    if len(name) > MAX_REVIEWER_CHARS:
        raise AnnotationError(f"A reviewer name has at most {MAX_REVIEWER_CHARS} characters, got {len(name)}.")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise AnnotationError("A reviewer name cannot contain control characters.")
    return name


@dataclass(frozen=True)
class SpanLabel:
    """A taxonomy label on thinking_text[start:end] (characters, end exclusive)."""

    start: int
    end: int
    label_id: int
    unit: str  # how the step was cut: sentence | paragraph
    text: str  # snapshot of the labelled characters
    label: str = ""  # the label's current name (filled when read)
    retired: bool = False  # the label is retired (filled when read)

    def __post_init__(self) -> None:
        for name in ("start", "end", "label_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise AnnotationError(f"SpanLabel.{name} must be an integer, got {value!r}")
        if not 0 <= self.start < self.end:
            raise AnnotationError(f"A span needs 0 <= start < end, got {self.start}..{self.end}")
        if self.unit not in STEP_UNITS:
            raise AnnotationError(f"SpanLabel.unit must be one of {', '.join(STEP_UNITS)}, got {self.unit!r}")
        if not isinstance(self.text, str):
            raise AnnotationError("SpanLabel.text must be the labelled text")

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.start, self.end, self.label_id)


@dataclass(frozen=True)
class AnnotationDraft:
    """What a reviewer wants to store for one trace; validated on construction."""

    trace_id: int
    reviewer: str
    verdict: str | None = None
    notes: str = ""
    spans: tuple[SpanLabel, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.trace_id, bool) or not isinstance(self.trace_id, int) or self.trace_id < 1:
            raise AnnotationError(f"trace_id must be a positive integer, got {self.trace_id!r}")
        object.__setattr__(self, "reviewer", clean_reviewer(self.reviewer))
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise AnnotationError(f"The verdict must be one of {', '.join(VERDICTS)} (or none), got {self.verdict!r}")
        if not isinstance(self.notes, str):
            raise AnnotationError("Notes must be text")
        if len(self.notes) > MAX_NOTES_CHARS:
            raise AnnotationError(f"Notes have at most {MAX_NOTES_CHARS} characters, got {len(self.notes)}")
        spans = tuple(self.spans)
        if not all(isinstance(s, SpanLabel) for s in spans):
            raise AnnotationError("spans must be SpanLabel objects")
        # One label per (range, label): labelling the same step twice with one tag is a no-op.
        unique = {s.key: s for s in spans}
        object.__setattr__(self, "spans", tuple(unique[k] for k in sorted(unique)))


@dataclass(frozen=True)
class Annotation:
    """One stored version."""

    annotation_id: int
    trace_id: int
    reviewer: str
    version: int
    based_on: int  # the version the saving view had loaded; 0 = none
    stale: bool  # saved from a view older than the then-latest version
    superseded: int | None  # for a stale save: the newer version it had not seen
    verdict: str | None
    notes: str
    created_at: datetime
    spans: tuple[SpanLabel, ...] = field(default=())


@dataclass(frozen=True)
class SaveResult:
    annotation: Annotation

    @property
    def conflict(self) -> bool:
        return self.annotation.stale


@dataclass(frozen=True)
class Label:
    label_id: int
    name: str
    description: str
    position: int
    retired: bool


@dataclass(frozen=True)
class QueueFilter:
    """Which traces a reviewer's queue holds. verdicts match any reviewer's current verdict."""

    reviewer: str
    status: str = "unreviewed"  # unreviewed / reviewed: by `reviewer` (a current verdict exists)
    run_ids: tuple[int, ...] = ()
    verdicts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "reviewer", clean_reviewer(self.reviewer))
        if self.status not in QUEUE_STATUSES:
            raise AnnotationError(f"status must be one of {', '.join(QUEUE_STATUSES)}, got {self.status!r}")
        object.__setattr__(self, "run_ids", tuple(int(r) for r in self.run_ids))
        object.__setattr__(self, "verdicts", tuple(self.verdicts))
        bad = [v for v in self.verdicts if v not in VERDICTS]
        if bad:
            raise AnnotationError(f"Unknown verdicts {bad}; choose from {', '.join(VERDICTS)}")


@dataclass(frozen=True)
class ReviewQueue:
    trace_ids: tuple[int, ...]  # ascending
    n_in_scope: int  # traces of the chosen runs (status and verdict filters not applied)
    n_reviewed: int  # of those, with a current verdict by the reviewer


# --- saving and reading annotations -------------------------------------------------------------


def save_annotation(config: StorageConfig, draft: AnnotationDraft, expected_version: int) -> SaveResult:
    """Append a version; expected_version is the version the view had loaded (0 = none).

    Never refuses a stale save: it is stored as the new latest version, flagged, with the newer
    version it had not seen in `superseded`, so both edits remain in the history.
    """
    if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
        raise AnnotationError(f"expected_version must be an integer >= 0, got {expected_version!r}")

    def work(con: duckdb.DuckDBPyConnection) -> int:
        rows = con.execute("SELECT thinking_text FROM traces WHERE trace_id = ?", [draft.trace_id]).fetchall()
        if not rows:
            raise AnnotationError(f"Trace {draft.trace_id} does not exist")
        _check_spans(con, draft, rows[0][0])
        latest = con.execute(
            "SELECT coalesce(max(version), 0) FROM annotations WHERE trace_id = ? AND reviewer = ?",
            [draft.trace_id, draft.reviewer],
        ).fetchall()[0][0]
        if expected_version > latest:
            raise AnnotationError(
                f"Version {expected_version} of this annotation does not exist (latest is {latest}); reload the trace."
            )
        stale = expected_version < latest
        annotation_id = con.execute(
            "INSERT INTO annotations (trace_id, reviewer, version, based_on, stale, superseded, verdict, notes,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING annotation_id",
            [draft.trace_id, draft.reviewer, latest + 1, expected_version, stale, latest if stale else None,
             draft.verdict, draft.notes, utc_now()],
        ).fetchall()[0][0]
        for i, span in enumerate(draft.spans):
            con.execute(
                "INSERT INTO annotation_spans VALUES (?, ?, ?, ?, ?, ?, ?)",
                [annotation_id, i, span.start, span.end, span.unit, span.label_id, span.text],
            )
        return annotation_id

    annotation_id = write(config, work)
    with connect(config, read_only=True) as con:
        return SaveResult(_read(con, "a.annotation_id = ?", [annotation_id])[0])


def _check_spans(con: duckdb.DuckDBPyConnection, draft: AnnotationDraft, thinking: str) -> None:
    labels = {row[0]: row[1] for row in con.execute("SELECT label_id, retired FROM span_labels").fetchall()}
    # Spans this reviewer already had on the trace may keep a label retired since; new ones may not.
    known = {
        tuple(row)
        for row in con.execute(
            "SELECT s.start_char, s.end_char, s.label_id FROM annotation_spans s"
            " JOIN annotations a ON a.annotation_id = s.annotation_id WHERE a.trace_id = ? AND a.reviewer = ?",
            [draft.trace_id, draft.reviewer],
        ).fetchall()
    }
    for span in draft.spans:
        if span.label_id not in labels:
            raise AnnotationError(f"Label {span.label_id} does not exist")
        if labels[span.label_id] and span.key not in known:
            raise AnnotationError("That label is retired; pick a current one (old annotations keep showing it).")
        if span.end > len(thinking) or thinking[span.start : span.end] != span.text:
            raise AnnotationError(
                f"The span {span.start}..{span.end} does not match the trace's thinking text; reload the trace."
            )


def current_annotation(config: StorageConfig, trace_id: int, reviewer: str) -> Annotation | None:
    """The reviewer's latest version for the trace, or None."""
    with connect(config, read_only=True) as con:
        rows = _read(
            con, "a.trace_id = ? AND a.reviewer = ?", [trace_id, clean_reviewer(reviewer)], "a.version DESC", limit=1
        )
    return rows[0] if rows else None


def current_annotations(config: StorageConfig, trace_id: int) -> dict[str, Annotation]:
    """Every reviewer's latest version for the trace, by reviewer name."""
    with connect(config, read_only=True) as con:
        rows = _read(
            con,
            "a.trace_id = ? AND a.version = (SELECT max(b.version) FROM annotations b"
            " WHERE b.trace_id = a.trace_id AND b.reviewer = a.reviewer)",
            [trace_id],
            "a.reviewer",
        )
    return {a.reviewer: a for a in rows}


def annotation_history(config: StorageConfig, trace_id: int, reviewer: str | None = None) -> list[Annotation]:
    """Every version for the trace (of one reviewer, or all), newest first."""
    where, params = "a.trace_id = ?", [trace_id]
    if reviewer is not None:
        where, params = where + " AND a.reviewer = ?", params + [clean_reviewer(reviewer)]
    with connect(config, read_only=True) as con:
        return _read(con, where, params, "a.created_at DESC, a.annotation_id DESC")


def current_verdicts(config: StorageConfig, run_ids: Sequence[int] = ()) -> dict[int, dict[str, str]]:
    """{trace_id: {reviewer: verdict}} from current versions that carry a verdict."""
    run_clause = " AND t.run_id IN (SELECT unnest(?::BIGINT[]))" if run_ids else ""
    with connect(config, read_only=True) as con:
        rows = con.execute(
            f"""SELECT c.trace_id, c.reviewer, c.verdict FROM ({_CURRENT_SQL}) c
                JOIN traces t ON t.trace_id = c.trace_id
                WHERE c.verdict IS NOT NULL{run_clause} ORDER BY c.trace_id, c.reviewer""",
            [list(run_ids)] if run_ids else [],
        ).fetchall()
    out: dict[int, dict[str, str]] = {}
    for trace_id, reviewer, verdict in rows:
        out.setdefault(int(trace_id), {})[reviewer] = verdict
    return out


def review_queue(config: StorageConfig, filt: QueueFilter) -> ReviewQueue:
    """The trace ids of the reviewer's queue plus the progress over the chosen runs."""
    scope, params = "TRUE", []
    if filt.run_ids:
        scope, params = "t.run_id IN (SELECT unnest(?::BIGINT[]))", [list(filt.run_ids)]
    mine = f"SELECT trace_id FROM ({_CURRENT_SQL}) c WHERE c.reviewer = ? AND c.verdict IS NOT NULL"
    conditions, extra = [scope], list(params)
    if filt.status == "unreviewed":
        conditions.append(f"t.trace_id NOT IN ({mine})")
        extra.append(filt.reviewer)
    elif filt.status == "reviewed":
        conditions.append(f"t.trace_id IN ({mine})")
        extra.append(filt.reviewer)
    if filt.verdicts:
        conditions.append(f"t.trace_id IN (SELECT trace_id FROM ({_CURRENT_SQL}) c WHERE list_contains(?::VARCHAR[], c.verdict))")
        extra.append(list(filt.verdicts))
    with connect(config, read_only=True) as con:
        ids = con.execute(
            f"SELECT t.trace_id FROM traces t WHERE {' AND '.join(conditions)} ORDER BY t.trace_id", extra
        ).fetchall()
        n_in_scope, n_reviewed = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE t.trace_id IN ({mine})) FROM traces t WHERE {scope}",
            [filt.reviewer, *params],
        ).fetchall()[0]
    return ReviewQueue(tuple(int(r[0]) for r in ids), int(n_in_scope), int(n_reviewed))


# Latest version per (trace, reviewer).
_CURRENT_SQL = """
    SELECT a.* FROM annotations a
    QUALIFY row_number() OVER (PARTITION BY a.trace_id, a.reviewer ORDER BY a.version DESC) = 1
"""

_COLUMNS = (
    "a.annotation_id, a.trace_id, a.reviewer, a.version, a.based_on, a.stale, a.superseded, a.verdict, a.notes,"
    " a.created_at"
)


def _read(
    con: duckdb.DuckDBPyConnection, where: str, params: list, order: str = "a.annotation_id", limit: int | None = None
) -> list[Annotation]:
    sql = f"SELECT {_COLUMNS} FROM annotations a WHERE {where} ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    heads = con.execute(sql, params).fetchall()
    if not heads:
        return []
    spans: dict[int, list[SpanLabel]] = {}
    rows = con.execute(
        """SELECT s.annotation_id, s.start_char, s.end_char, s.label_id, s.unit, s.step_text, l.name, l.retired
           FROM annotation_spans s JOIN span_labels l ON l.label_id = s.label_id
           WHERE s.annotation_id IN (SELECT unnest(?::BIGINT[])) ORDER BY s.annotation_id, s.span_index""",
        [[h[0] for h in heads]],
    ).fetchall()
    for aid, start, end, label_id, unit, text, name, retired in rows:
        spans.setdefault(aid, []).append(SpanLabel(start, end, label_id, unit, text, name, bool(retired)))
    return [Annotation(*h[:5], bool(h[5]), *h[6:], spans=tuple(spans.get(h[0], ()))) for h in heads]


# --- the taxonomy -------------------------------------------------------------------------------


def list_labels(config: StorageConfig, include_retired: bool = False) -> list[Label]:
    where = "" if include_retired else "WHERE NOT retired"
    with connect(config, read_only=True) as con:
        rows = con.execute(
            f"SELECT label_id, name, description, position, retired FROM span_labels {where} ORDER BY position, label_id"
        ).fetchall()
    return [Label(*row) for row in rows]


def add_label(config: StorageConfig, name: str, description: str = "") -> int:
    """A new label at the end of the taxonomy; returns its id."""
    name, description = _clean_label(name), _clean_description(description)

    def work(con: duckdb.DuckDBPyConnection) -> int:
        _refuse_duplicate(con, name, None)
        now = utc_now()
        return int(
            con.execute(
                "INSERT INTO span_labels (name, name_key, description, position, retired, created_at, updated_at)"
                " SELECT ?, ?, ?, coalesce(max(position), 0) + 1, false, ?, ? FROM span_labels RETURNING label_id",
                [name, _name_key(name), description, now, now],
            ).fetchall()[0][0]
        )

    return write(config, work)


def rename_label(config: StorageConfig, label_id: int, name: str, description: str | None = None) -> None:
    """New name (and description); spans already tagged show the new name."""
    name = _clean_label(name)

    def work(con: duckdb.DuckDBPyConnection) -> None:
        _require_label(con, label_id)
        _refuse_duplicate(con, name, label_id)
        con.execute(
            "UPDATE span_labels SET name = ?, name_key = ?, description = coalesce(?, description), updated_at = ?"
            " WHERE label_id = ?",
            [name, _name_key(name), None if description is None else _clean_description(description), utc_now(), label_id],
        )

    write(config, work)


def set_label_retired(config: StorageConfig, label_id: int, retired: bool = True) -> None:
    """Retire (or bring back) a label: retired ones cannot be put on new spans but stay readable."""

    def work(con: duckdb.DuckDBPyConnection) -> None:
        _require_label(con, label_id)
        con.execute("UPDATE span_labels SET retired = ?, updated_at = ? WHERE label_id = ?", [bool(retired), utc_now(), label_id])

    write(config, work)


def _clean_label(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise AnnotationError("A label needs a name.")
    name = " ".join(name.split())
    if len(name) > MAX_LABEL_CHARS:
        raise AnnotationError(f"A label name has at most {MAX_LABEL_CHARS} characters, got {len(name)}.")
    return name


def _clean_description(description: object) -> str:
    if not isinstance(description, str):
        raise AnnotationError("A label description must be text.")
    return description.strip()[:500]


def _name_key(name: str) -> str:
    return name.casefold()


def _require_label(con: duckdb.DuckDBPyConnection, label_id: int) -> None:
    if not con.execute("SELECT count(*) FROM span_labels WHERE label_id = ?", [label_id]).fetchall()[0][0]:
        raise AnnotationError(f"Label {label_id} does not exist")


def _refuse_duplicate(con: duckdb.DuckDBPyConnection, name: str, label_id: int | None) -> None:
    rows = con.execute("SELECT label_id, retired FROM span_labels WHERE name_key = ?", [_name_key(name)]).fetchall()
    if rows and rows[0][0] != label_id:
        hint = " (it is retired: bring it back instead)" if rows[0][1] else ""
        raise AnnotationError(f"A label named {name!r} already exists{hint}.")


# --- export -------------------------------------------------------------------------------------


def export_annotations_jsonl(config: StorageConfig, path: str | os.PathLike) -> int:
    """Write every annotation version, oldest first, one JSON object per line; returns how many.

    Written next to `path` and renamed into place, so a failed export leaves no partial file.
    """
    with connect(config, read_only=True) as con:
        versions = _read(con, "TRUE", [])
    return write_lines_atomically(path, (json.dumps(_export_object(a), ensure_ascii=False) for a in versions))


def _export_object(a: Annotation) -> dict:
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "annotation_id": a.annotation_id,
        "trace_id": a.trace_id,
        "reviewer": a.reviewer,
        "annotation_version": a.version,
        "based_on": a.based_on,
        "stale": a.stale,
        "superseded": a.superseded,
        "verdict": a.verdict,
        "notes": a.notes,
        "created_at": a.created_at.isoformat(),
        "spans": [
            {"start": s.start, "end": s.end, "unit": s.unit, "label_id": s.label_id, "label": s.label,
             "label_retired": s.retired, "text": s.text}
            for s in a.spans
        ],
    }
