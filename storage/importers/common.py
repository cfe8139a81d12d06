"""What every importer shares: where a record sits in its file, typed field access with errors
that name that place and field, size limits, and building the stored record.

Everything in an imported file is untrusted. Text is stored as is (pages escape it when they
show it); what does not have the expected type is refused with a message naming the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any, NoReturn

from analysis.answers import extract_answer
from analysis.reasoning import ReasoningFormat
from analysis.records import TokenColumns, TraceRecord
from storage.errors import StorageError, TraceImportError
from storage.jsonl_decode import ParsedLine, _kind

# Longest text field accepted (characters). Reasoning traces of 100k tokens are about 0.5 M
# characters; a field twenty times that is almost certainly not a trace, and refusing it keeps
# one bad record from filling memory and the database.
MAX_FIELD_CHARS = 10_000_000
# Longest line read from a JSONL or text file (bytes): bounds memory on binary garbage.
MAX_LINE_BYTES = 256 * 1024 * 1024
# Largest whole-document JSON file (bytes); bigger exports must be JSON Lines to stream.
MAX_DOCUMENT_BYTES = 1024 * 1024 * 1024

# Stored as the prompt when the file does not contain it (a bare response, raw output).
UNKNOWN_PROMPT = "(prompt not in the imported file)"
UNKNOWN_MODEL = "unknown"


class RecordImportError(TraceImportError):
    """TraceImportError for a record of a JSON document, named by its index (and line if known)."""

    def __init__(self, path: Path, line: int | None, record: int | None, message: str, field: str | None = None):
        super().__init__(path, line, message, field)
        self.record = record
        if record is not None:
            where = f"{self.path.name}, record {record}" + (f" (line {line})" if line is not None else "")
            what = f"field '{field}': {message}" if field else message
            StorageError.__init__(self, f"Cannot import {where}: {what}. Nothing from this file was stored.")


@dataclass(frozen=True)
class Where:
    """A record's place in its file: line (JSONL, 1-based) and/or record index (1-based)."""

    path: Path
    line: int | None = None
    record: int | None = None

    def fail(self, field: str | None, message: str) -> NoReturn:
        raise RecordImportError(self.path, self.line, self.record, message, field)

    def nested(self, index: int) -> "Where":
        """The index-th record of a list found at this place (e.g. a JSON array on one line)."""
        return Where(self.path, self.line, index)


def get(at: Where, obj: Any, key: str, field: str, kinds: type | tuple, optional: bool = True) -> Any:
    """obj[key] checked against `kinds`; None when absent and optional."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None:
        if optional:
            return None
        at.fail(field, "is missing")
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        at.fail(field, f"has the wrong type ({_kind(value)})")
    if not isinstance(value, kinds):
        at.fail(field, f"must be {_describe(kinds)}, got {_kind(value)}")
    if isinstance(value, str):
        check_text(at, field, value)
    return value


def need_object(at: Where, value: Any, field: str | None) -> dict:
    if not isinstance(value, dict):
        at.fail(field, f"must be a JSON object, got {_kind(value)}")
    return value


def last_user_text(at: Where, messages: Any, field: str,
                   content: Callable[[Where, Any, str], str]) -> str | None:
    """The last user message of a chat (the prompt a reply answers), read with the format's `content`."""
    if messages is None:
        return None
    if not isinstance(messages, list):
        at.fail(field, f"must be a list, got {_kind(messages)}")
    for i in range(len(messages) - 1, -1, -1):
        message = need_object(at, messages[i], f"{field}[{i}]")
        if message.get("role") == "user":
            return content(at, message.get("content"), f"{field}[{i}].content")
    return None


def check_text(at: Where, field: str, value: str) -> str:
    if len(value) > MAX_FIELD_CHARS:
        at.fail(field, f"is {len(value):,} characters long; the limit is {MAX_FIELD_CHARS:,} per field")
    return value


def unix_time(at: Where, value: Any, field: str) -> datetime | None:
    """A Unix timestamp in seconds (or milliseconds / nanoseconds, as some tools write) as naive UTC."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        at.fail(field, f"must be a Unix time in seconds, got {_kind(value)}")
    try:
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError
        while seconds > 1e11:  # milliseconds, microseconds, nanoseconds
            seconds /= 1000.0
        return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        at.fail(field, f"is not a usable time: {str(value)[:40]}")


def imported(
    at: Where,
    source_format: str,
    *,
    prompt: str | None,
    model: str | None,
    thinking: str,
    answer: str,
    tokens: TokenColumns | None = None,
    fmt: ReasoningFormat | None = None,
    raw_text: str | None = None,
    created_at: datetime | None = None,
    settings: dict | None = None,
    meta: dict | None = None,
) -> ParsedLine:
    """The stored form of one imported trace: stop reason "imported", source format in meta.

    settings["format"] and meta["raw_text"] let analysis re-tokenize a trace that came without
    token ids and still tell thinking from answer (generation/analyze.py reads both).
    """
    fmt = fmt or ReasoningFormat("think_tags")
    if raw_text is None:
        raw_text = f"{fmt.open_tag}\n{thinking}\n{fmt.close_tag}\n\n{answer}" if thinking else answer
    full_meta = {"source_format": source_format, "source_file": at.path.name}
    if at.line is not None:
        full_meta["source_line"] = at.line
    if at.record is not None:
        full_meta["source_record"] = at.record
    full_meta.update(meta or {})
    full_meta["raw_text"] = raw_text
    record = TraceRecord(
        prompt=check_text(at, "prompt", prompt if prompt and prompt.strip() else UNKNOWN_PROMPT),
        model=model or UNKNOWN_MODEL,
        thinking_text=check_text(at, "thinking", thinking),
        answer_text=check_text(at, "answer", answer),
        tokens=tokens if tokens is not None else TokenColumns.empty(),
        extracted_answer=extract_answer(answer, thinking),  # as for generated traces: comparable across both
        stop_reason="imported",
        prompt_source=f"import:{source_format}",
        settings={**(settings or {}), "format": fmt.to_dict()},
        meta=full_meta,
    )
    return ParsedLine(record=record, created_at=created_at, run=None)


def _describe(kinds: type | tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object", bool: "a boolean"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))
