"""Reading an import file: JSON Lines streamed line by line, or one JSON document, or text.

Each reader checks UTF-8 itself so that a bad byte is reported with its line and offset, and
caps what it holds in memory (common.MAX_LINE_BYTES / MAX_DOCUMENT_BYTES).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.errors import TraceImportError
from storage.importers.common import MAX_DOCUMENT_BYTES, MAX_LINE_BYTES, Where


def open_binary(path: Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise TraceImportError(path, None, f"cannot read the file ({exc.strerror or exc})") from exc


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise TraceImportError(path, None, f"cannot read the file ({exc.strerror or exc})") from exc


def decode(path: Path, raw: bytes, lineno: int | None, line_offset: int) -> str:
    """raw as UTF-8, or an error naming the line and the byte offset (in the line and the file).

    lineno None: raw is the whole file, and the line is counted from it.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start
        if lineno is None:
            lineno = raw.count(b"\n", 0, at) + 1
            in_line = at - (raw.rfind(b"\n", 0, at) + 1)
        else:
            in_line = at
        raise TraceImportError(
            path, lineno,
            f"not valid UTF-8 (byte {in_line + 1} of the line, byte offset {line_offset + at} in the file, "
            f"value {raw[at]:#04x}); the file must be UTF-8 text",
        ) from None
    return text.removeprefix("\ufeff") if line_offset == 0 else text  # a BOM some editors add


def lines(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset after the line, text) of every non-blank line."""
    offset = 0
    with open_binary(path) as handle:
        lineno = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                raise TraceImportError(path, lineno, f"the line is longer than {MAX_LINE_BYTES // 2**20} MiB")
            text = decode(path, raw, lineno, offset)
            offset += len(raw)
            if text.strip():
                yield lineno, offset, text


def parse_json_line(path: Path, lineno: int, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceImportError(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise TraceImportError(path, lineno, "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise TraceImportError(path, lineno, f"invalid JSON ({exc})") from None


def read_text(path: Path) -> str:
    """The whole file as text (raw model output), capped like one field."""
    size = file_size(path)
    if size > MAX_DOCUMENT_BYTES:
        raise TraceImportError(path, None, f"the file is {size:,} bytes; raw text imports are limited to {MAX_DOCUMENT_BYTES:,}")
    with open_binary(path) as handle:
        raw = handle.read()
    return decode(path, raw, None, 0)


def read_document(path: Path, hint: str = "") -> Any:
    """One JSON document (object or array) read whole; hint is appended to a JSON error."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceImportError(path, exc.lineno, f"invalid JSON ({exc.msg} at column {exc.colno}){hint}") from None
    except RecursionError:
        raise TraceImportError(path, None, "JSON nested too deeply") from None
    except ValueError as exc:
        raise TraceImportError(path, None, f"invalid JSON ({exc})") from None


def first_line(path: Path) -> tuple[int, str] | None:
    """The first non-blank line (for format detection), or None for an empty file."""
    for lineno, _, text in lines(path):
        return lineno, text
    return None


def records_of(at: Where, value: Any) -> Iterator[tuple[Where, Any]]:
    """The records a JSON value holds: itself, or each item of a top-level array (1-based index)."""
    if isinstance(value, list):
        for i, item in enumerate(value, start=1):
            yield at.nested(i), item
    else:
        yield at, value
