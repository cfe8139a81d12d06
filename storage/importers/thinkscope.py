"""ThinkScope's own JSONL (see storage/jsonl.py), read through the common import path.

Lines keep their own stop reason and run grouping, so export -> import -> export is exact;
older versions are upgraded by jsonl_decode.decode_line.
"""
from __future__ import annotations

from typing import Any

from storage.errors import TraceImportError
from storage.importers.common import RecordImportError, Where, check_text
from storage.jsonl_decode import FORMAT, ParsedLine, decode_line

NAME = "thinkscope"


def convert(at: Where, obj: Any) -> list[ParsedLine]:
    try:
        parsed = decode_line(obj, at.path, at.line)
    except TraceImportError as exc:
        if at.record is None:
            raise
        # decode_line knows lines, not records of a JSON array: say which record it was.
        where = f"{at.path.name}, line {at.line}" if at.line is not None else at.path.name
        what = str(exc).removeprefix(f"Cannot import {where}: ").removesuffix(" Nothing from this file was stored.")
        what = what.removesuffix(".").removeprefix(f"field '{exc.field}': " if exc.field else "")
        raise RecordImportError(at.path, at.line, at.record, what, exc.field) from None
    record = parsed.record
    for field, value in (("prompt.text", record.prompt), ("trace.thinking_text", record.thinking_text),
                         ("trace.answer_text", record.answer_text)):
        check_text(at, field, value)
    return [parsed]


def looks_like(obj: dict) -> bool:
    return obj.get("format") == FORMAT
