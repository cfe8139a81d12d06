"""Importing traces written by other tools, and by ThinkScope itself.

    result = import_file(config, "chats.jsonl")                 # format detected from content
    result = import_file(config, "out.txt", fmt="raw", progress=lambda done, total: ...)

One module per format turns one JSON value (or, for raw text, the whole file) into ParsedLines;
this module picks the format, streams the file and stores everything in ONE transaction: a bad
record anywhere raises TraceImportError naming its line (or record index) and field, and nothing
from the file is stored. JSON Lines files are streamed and inserted in batches, so memory stays
bounded however many traces a file holds; a whole JSON document (an array) is read at once.

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
from storage.importers import anthropic, openai, openwebui, raw, thinkscope
from storage.importers.common import MAX_FIELD_CHARS, Where
from storage.importers.source import file_size, first_line, lines, parse_json_line, read_document, read_text, records_of
from storage.jsonl import store_parsed
from storage.jsonl_decode import ParsedLine, _kind

FORMATS: tuple[str, ...] = ("thinkscope", "openai", "raw", "anthropic", "openwebui")
FORMAT_LABELS = {
    "auto": "Detect from the content",
    "thinkscope": "ThinkScope JSONL",
    "openai": "OpenAI chat completions (JSON / JSONL)",
    "raw": "Raw text with <think> / <thinking> tags",
    "anthropic": "Anthropic messages (thinking blocks)",
    "openwebui": "Open WebUI chat export",
}
_CONVERTERS = {m.NAME: m.convert for m in (thinkscope, openai, raw, anthropic, openwebui)}
# Checked in this order: the more specific shapes first (an Anthropic or Open WebUI chat also
# has a "messages" list, which alone means OpenAI).
_DETECT = (thinkscope, anthropic, openwebui, openai)

Progress = Callable[[int, int], None]

__all__ = ["FORMATS", "FORMAT_LABELS", "MAX_FIELD_CHARS", "ImportResult", "detect_format", "import_file"]


@dataclass(frozen=True)
class ImportResult:
    trace_ids: list[int]
    format: str
    path: Path

    @property
    def count(self) -> int:
        return len(self.trace_ids)


def detect_format(path: str | os.PathLike) -> str:
    """The format of a file, from its content: one of FORMATS, or TraceImportError."""
    return _plan(Path(path), "auto")[0]


def import_file(
    config: StorageConfig,
    path: str | os.PathLike,
    fmt: str = "auto",
    progress: Progress | None = None,
    note: str | None = None,
) -> ImportResult:
    """Store every trace of a file in one transaction; returns the new ids in file order.

    progress(done, total) is called as batches are stored: bytes for JSON Lines, records for a
    JSON document, (1, 1) for raw text.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise TraceImportError(path, None, f"unknown format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")
    name, items, total = _plan(path, fmt)
    with connect(config) as con:
        ids = store_parsed(con, items, note or f"imported from {path.name} ({name})",
                           (lambda done: progress(done, total)) if progress else None)
        if not ids:
            raise TraceImportError(path, None, "the file holds no traces")
    if progress:
        progress(total, total)
    return ImportResult(ids, name, path)


def _plan(path: Path, fmt: str) -> tuple[str, Iterator[tuple[int, ParsedLine]], int]:
    """(format, (progress position, parsed trace) stream, progress total) for a file."""
    head = first_line(path)
    if head is None:
        raise TraceImportError(path, None, "the file is empty")
    size = file_size(path)
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
        return name, _jsonl(path, name), size
    hint = "; if this is raw model output, choose the raw text format" if fmt == "auto" else ""
    document = read_document(path, hint)
    name = fmt if fmt != "auto" else classify(Where(path), document)
    total = len(document) if isinstance(document, list) else 1
    return name, _document(path, name, document), total


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
    at.fail(None, f"cannot tell which format this is (top-level keys: {keys}); choose the format explicitly")


def _raw(path: Path) -> Iterator[tuple[int, ParsedLine]]:
    for parsed in raw.convert(Where(path), read_text(path)):
        yield 1, parsed


def _jsonl(path: Path, name: str) -> Iterator[tuple[int, ParsedLine]]:
    convert = _CONVERTERS[name]
    for lineno, offset, text in lines(path):
        value = parse_json_line(path, lineno, text)
        for at, item in records_of(Where(path, lineno), value):
            for parsed in convert(at, item):
                yield offset, parsed


def _document(path: Path, name: str, document: Any) -> Iterator[tuple[int, ParsedLine]]:
    convert = _CONVERTERS[name]
    for index, (at, item) in enumerate(records_of(Where(path), document), start=1):
        for parsed in convert(at, item):
            yield index, parsed
