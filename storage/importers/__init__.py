"""Importing traces written by other tools, and by ThinkScope itself.

    result = import_file(config, "chats.jsonl")                 # format detected from content
    result = import_file(config, "out.txt", fmt="raw", progress=lambda done, total: ...)
    result = import_file(config, "qa.csv", mapping="prompt=question,response=output")

One module per format turns one JSON value (or, for raw text, the whole file) into ParsedLines;
this module picks the format, streams the file and stores everything in ONE transaction: a bad
record anywhere raises TraceImportError naming its line (or record index) and field, and nothing
from the file is stored. JSON Lines, CSV and Parquet files are streamed and inserted in batches,
so memory stays bounded however many traces a file holds; a whole JSON document (an array) is
read at once. Every trace passes common.check_parsed (the limits of storage/content.py).

Imports are idempotent by content: a trace the database already holds (same prompt, reference,
model, thinking, answer and stop reason) is counted as present and not stored again, unless
allow_duplicates is set.

Foreign formats are stored with stop_reason "imported" and meta["source_format"]; traces
without per-token data have no token rows (pages show their text, analysis re-tokenizes).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.config import StorageConfig
from storage.connection import connect
from storage.errors import TraceImportError
from storage.importers import anthropic, openai, openwebui, raw, records, thinkscope
from storage.importers.common import MAX_FIELD_CHARS, Where, check_parsed
from storage.importers.source import (csv_delimiter, csv_rows, file_size, first_line, is_parquet, lines, parquet_count,
                                      parquet_rows, parse_json_line, read_document, read_text, records_of)
from storage.jsonl import StoreCounts, store_parsed
from storage.jsonl_decode import ParsedLine, _kind

FORMATS: tuple[str, ...] = ("thinkscope", "openai", "raw", "anthropic", "openwebui", "records")
FORMAT_LABELS = {
    "auto": "Detect from the content",
    "thinkscope": "ThinkScope JSONL",
    "openai": "OpenAI chat completions (JSON / JSONL)",
    "raw": "Raw text with <think> / <thinking> tags",
    "anthropic": "Anthropic messages (thinking blocks)",
    "openwebui": "Open WebUI chat export",
    "records": "Records: prompt + response (or thinking + answer) per row; JSON, JSONL, CSV, Parquet",
}
_CONVERTERS = {m.NAME: m.convert for m in (thinkscope, openai, raw, anthropic, openwebui, records)}
# Checked in this order: the more specific shapes first (an Anthropic or Open WebUI chat also
# has a "messages" list, which alone means OpenAI); flat records last.
_DETECT = (thinkscope, anthropic, openwebui, openai, records)
_CSV_SUFFIXES = (".csv", ".tsv")

Progress = Callable[[int, int], None]

__all__ = ["FORMATS", "FORMAT_LABELS", "MAX_FIELD_CHARS", "ImportResult", "detect_format", "import_file"]


@dataclass(frozen=True)
class ImportResult:
    trace_ids: list[int]  # the traces stored now
    format: str
    path: Path
    present: int = 0  # traces of the file the database already held (not stored again)

    @property
    def count(self) -> int:
        return len(self.trace_ids)

    def summary(self) -> str:
        """"k new, m already present" (the words the CLI and the page show)."""
        return f"{self.count} new, {self.present} already present"


def detect_format(path: str | os.PathLike) -> str:
    """The format of a file, from its content: one of FORMATS, or TraceImportError."""
    return _plan(Path(path), "auto", None)[0]


def import_file(
    config: StorageConfig,
    path: str | os.PathLike,
    fmt: str = "auto",
    progress: Progress | None = None,
    note: str | None = None,
    mapping: str | dict | None = None,
    allow_duplicates: bool = False,
) -> ImportResult:
    """Store every trace of a file in one transaction; returns the new ids in file order.

    progress(done, total) is called as batches are stored: bytes for JSON Lines and CSV, records
    for a JSON document or Parquet, (1, 1) for raw text. mapping ("prompt=question,response=output"
    or a dict role -> field) names the fields of a records file and implies that format.
    allow_duplicates stores traces the database already holds again.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise TraceImportError(path, None, f"unknown format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")
    try:
        roles = records.parse_mapping(mapping) if isinstance(mapping, str) or mapping is None else dict(mapping)
    except ValueError as exc:
        raise TraceImportError(path, None, str(exc)) from None
    if roles and fmt not in ("auto", records.NAME):
        raise TraceImportError(path, None, f"a field mapping applies to the records format, not {fmt}")
    name, items, total = _plan(path, records.NAME if roles else fmt, roles)
    counts = StoreCounts()
    with connect(config) as con:
        store_parsed(con, items, note or f"imported from {path.name} ({name})",
                     (lambda done: progress(done, total)) if progress else None,
                     skip_present=not allow_duplicates, counts=counts)
        if not counts.ids and not counts.present:
            raise TraceImportError(path, None, "the file holds no traces")
    if progress:
        progress(total, total)
    return ImportResult(counts.ids, name, path, counts.present)


def _plan(path: Path, fmt: str, roles: dict | None) -> tuple[str, Iterator[tuple[int, ParsedLine]], int]:
    """(format, (progress position, parsed trace) stream, progress total) for a file."""
    size = file_size(path)
    if size and fmt in ("auto", records.NAME) and is_parquet(path):
        return records.NAME, _parquet(path, roles), parquet_count(path)
    head = first_line(path)
    if head is None:
        raise TraceImportError(path, None, "the file is empty")
    if fmt in ("auto", records.NAME) and _is_csv(path, head[1], fmt):
        return records.NAME, _csv(path, csv_delimiter(path, head[1]), roles), size
    if fmt == "raw" or (fmt == "auto" and not head[1].lstrip().startswith(("{", "["))):
        return "raw", _raw(path), 1
    try:
        first = json.loads(head[1])
    except RecursionError:
        raise TraceImportError(path, head[0], "JSON nested too deeply") from None
    except ValueError:  # not one JSON value per line: a pretty-printed document, or broken
        first = None
    if first is not None:  # JSON Lines (or a document on one line)
        name = fmt if fmt != "auto" else classify(Where(path, head[0]), first)
        return name, _jsonl(path, name, roles), size
    hint = "; if this is raw model output, choose the raw text format" if fmt == "auto" else ""
    document = read_document(path, hint)
    name = fmt if fmt != "auto" else classify(Where(path), document)
    total = len(document) if isinstance(document, list) else 1
    return name, _document(path, name, document, roles), total


def _is_csv(path: Path, header: str, fmt: str) -> bool:
    if header.lstrip().startswith(("{", "[")):
        return False
    if path.suffix.lower() in _CSV_SUFFIXES or fmt == records.NAME:
        return True
    return records.looks_like_header(header.strip().split(csv_delimiter(path, header)))


def classify(at: Where, value: Any) -> str:
    """Which format a JSON value (a record, or a list of records) is in."""
    sample = value
    if isinstance(value, list):
        if not value:
            at.fail(None, "is an empty JSON array: no traces")
        sample, at = value[0], at.nested(1)
    if not isinstance(sample, dict):
        at.fail(None, f"expected a JSON object (a trace, response or chat), got {_kind(sample)}")
    for module in _DETECT:
        if module.looks_like(sample):
            return module.NAME
    keys = ", ".join(list(sample)[:8]) or "none"
    at.fail(None, f"cannot tell which format this is (top-level keys: {keys}); choose the format explicitly, "
                  "or for records name the fields with a mapping such as prompt=FIELD,response=FIELD")


def _raw(path: Path) -> Iterator[tuple[int, ParsedLine]]:
    for parsed in _checked(Where(path), raw.NAME, raw.convert(Where(path), read_text(path))):
        yield 1, parsed


def _converter(name: str, roles: dict | None) -> Callable[[Where, Any], list[ParsedLine]]:
    convert = _CONVERTERS[name]
    if name == records.NAME:
        return lambda at, item: records.convert(at, item, roles)
    return convert


def _checked(at: Where, name: str, parsed_items: list[ParsedLine]) -> list[ParsedLine]:
    return [check_parsed(at, parsed, own_format=name == thinkscope.NAME) for parsed in parsed_items]


def _jsonl(path: Path, name: str, roles: dict | None = None) -> Iterator[tuple[int, ParsedLine]]:
    convert = _converter(name, roles)
    for lineno, offset, text in lines(path):
        value = parse_json_line(path, lineno, text)
        for at, item in records_of(Where(path, lineno), value):
            for parsed in _checked(at, name, convert(at, item)):
                yield offset, parsed


def _document(path: Path, name: str, document: Any, roles: dict | None = None) -> Iterator[tuple[int, ParsedLine]]:
    convert = _converter(name, roles)
    for index, (at, item) in enumerate(records_of(Where(path), document), start=1):
        for parsed in _checked(at, name, convert(at, item)):
            yield index, parsed


def _csv(path: Path, delimiter: str, roles: dict | None) -> Iterator[tuple[int, ParsedLine]]:
    for lineno, offset, row in csv_rows(path, delimiter):
        at = Where(path, lineno)
        for parsed in _checked(at, records.NAME, records.convert(at, row, roles)):
            yield offset, parsed


def _parquet(path: Path, roles: dict | None) -> Iterator[tuple[int, ParsedLine]]:
    for index, row in parquet_rows(path):
        at = Where(path, None, index)
        for parsed in _checked(at, records.NAME, records.convert(at, row, roles)):
            yield index, parsed
