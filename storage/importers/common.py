"""What every importer shares: where a record sits in its file, typed field access with errors
that name that place and field, size limits, and building the stored record.

Everything in an imported file is untrusted. Text is stored as is (pages escape it when they
show it); what does not have the expected type is refused with a message naming the field.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any, NoReturn

from analysis.answers import extract_answer
from analysis.reasoning import ReasoningFormat
from analysis.records import TokenColumns, TraceRecord
from storage.content import (MAX_FIELD_CHARS, MAX_JSON_DEPTH, MAX_TOKEN_VALUES, has_surrogate, token_values)
from storage.errors import StorageError, TraceImportError
from storage.jsonl_decode import SURROGATE_MESSAGE, ParsedLine, _kind, finite

# MAX_FIELD_CHARS (storage/content.py) is the longest text field; the same limit holds for traces
# the app generates, so whatever is stored can be exported and imported again.
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
    if has_surrogate(value):
        at.fail(field, SURROGATE_MESSAGE)
    return value


def number(at: Where, value: Any, field: str, low: float, high: float) -> float:
    """A JSON number as a finite float within [low, high] (storage/content.py's number rule)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        at.fail(field, f"must be a number, got {_kind(value)}")
    return finite(at, field, value, low, high)


# Field names the final check uses, per source format (ThinkScope files name their own fields).
_NAMES = {"prompt": "prompt", "reference_answer": "reference", "model": "model", "thinking_text": "thinking",
          "answer_text": "answer", "extracted_answer": "extracted answer", "strategy": "strategy",
          "prompt_source": "source", "settings": "settings", "meta": "meta", "tokens": "tokens"}
_THINKSCOPE_NAMES = {"prompt": "prompt.text", "reference_answer": "prompt.reference_answer",
                     "model": "trace.model", "thinking_text": "trace.thinking_text",
                     "answer_text": "trace.answer_text", "extracted_answer": "trace.extracted_answer",
                     "strategy": "run.strategy", "prompt_source": "prompt.source", "settings": "trace.settings",
                     "meta": "trace.meta", "tokens": "tokens"}
_FORMAT_KEYS = {f.name: f.type for f in dataclasses.fields(ReasoningFormat)}


def check_parsed(at: Where, parsed: ParsedLine, own_format: bool = False) -> ParsedLine:
    """The checks every imported trace passes whatever its format, so that what is stored can be
    exported, imported again and analysed: text limits, no lone surrogates, settings and meta
    nested at most MAX_JSON_DEPTH deep with finite numbers, a settings.format analysis can read,
    at most MAX_TOKEN_VALUES per-token values. Errors name the line (or record) and field."""
    names = _THINKSCOPE_NAMES if own_format else _NAMES
    record = parsed.record
    for attr in ("prompt", "reference_answer", "model", "thinking_text", "answer_text", "extracted_answer",
                 "strategy", "prompt_source"):
        value = getattr(record, attr)
        if isinstance(value, str):
            check_text(at, names[attr], value)
    for attr in ("settings", "meta"):
        _check_json(at, getattr(record, attr), names[attr], 0)
    fmt = record.settings.get("format")
    if fmt is not None:
        _check_format(at, fmt, f"{names['settings']}.format")
    if token_values(record.tokens) > MAX_TOKEN_VALUES:
        n, k = len(record.tokens), record.tokens.top_ids.shape[1]
        at.fail(names["tokens"], f"has {n:,} tokens with {k} alternatives each ({token_values(record.tokens):,} "
                                 f"values); one trace may hold at most {MAX_TOKEN_VALUES:,} per-token values")
    texts = record.tokens.text
    if texts:
        if max(map(len, texts)) > MAX_FIELD_CHARS:
            i = next(i for i, t in enumerate(texts) if len(t) > MAX_FIELD_CHARS)
            check_text(at, f"{names['tokens']}.text[{i}]", texts[i])
        if has_surrogate("".join(texts)):
            i = next(i for i, t in enumerate(texts) if has_surrogate(t))
            at.fail(f"{names['tokens']}.text[{i}]", SURROGATE_MESSAGE)
    return parsed


def _check_json(at: Where, value: Any, field: str, depth: int) -> None:
    """depth: the objects and lists around value (settings / meta itself is level 1)."""
    if isinstance(value, (dict, list)) and depth + 1 > MAX_JSON_DEPTH:
        parts = field.split(".")
        shown = ".".join(parts[:3]) + (".…" if len(parts) > 3 else "")
        at.fail(shown, f"is nested more than {MAX_JSON_DEPTH} levels deep; settings and meta may nest "
                       f"at most {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if has_surrogate(key):
                at.fail(f"{field}.{key.encode('utf-8', 'backslashreplace').decode()}", SURROGATE_MESSAGE)
            _check_json(at, item, f"{field}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(at, item, f"{field}[{i}]", depth + 1)
    elif isinstance(value, str):
        if has_surrogate(value):
            at.fail(field, SURROGATE_MESSAGE)
    elif isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)
                                      and not -(2**63) <= value < 2**64):
        # DuckDB's JSON reads numbers as 64-bit integers or doubles: keep to what it can read back.
        finite(at, field, value, -1.7976931348623157e308, 1.7976931348623157e308)
        if isinstance(value, int):
            at.fail(field, f"is an integer of {len(str(abs(value)))} digits; integers in settings and meta "
                           "must fit 64 bits")


def _check_format(at: Where, fmt: Any, field: str) -> None:
    """settings.format as analysis reads it: ReasoningFormat(**fmt) (generation/analyze.py)."""
    if not isinstance(fmt, dict):
        at.fail(field, f"must be an object, got {_kind(fmt)}")
    unknown = [k for k in fmt if k not in _FORMAT_KEYS]
    if unknown:
        at.fail(f"{field}.{unknown[0]}", f"is not a reasoning-format key (known: {', '.join(_FORMAT_KEYS)})")
    for key, value in fmt.items():
        want = bool if key in ("starts_in_thinking", "enable_thinking") else str
        if not isinstance(value, want) or (want is str and isinstance(value, bool)):
            at.fail(f"{field}.{key}", f"must be {'true or false' if want is bool else 'a string'}, got {_kind(value)}")
    try:
        ReasoningFormat(**fmt)
    except (TypeError, ValueError) as exc:
        at.fail(field, f"is not a usable reasoning format: {exc}")


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
    reference: str | None = None,
) -> ParsedLine:
    """The stored form of one imported trace: stop reason "imported", source format in meta.

    settings["format"] and meta["raw_text"] let analysis re-tokenize a trace that came without
    token ids and still tell thinking from answer (generation/analyze.py reads both). A reference
    answer grades the trace on save, like a generated one (analysis.answers.stored_grade).
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
        extracted_answer=extract_answer(answer, thinking, fmt=fmt),  # as for generated traces; graded on save
        stop_reason="imported",
        reference_answer=check_text(at, "reference", reference) if reference is not None else None,
        prompt_source=f"import:{source_format}",
        settings={**(settings or {}), "format": fmt.to_dict()},
        meta=full_meta,
    )
    return ParsedLine(record=record, created_at=created_at, run=None)


def _describe(kinds: type | tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object", bool: "a boolean"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))
