"""Validating one parsed JSONL line into a TraceRecord, with errors that name line and field.

Everything in a trace file is untrusted: each field is type-checked explicitly (a JSON `true`
is not an integer, a string is not a number) before anything reaches the database. Numbers must
be finite and fit their column (storage/content.py has the rule and the limits).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import repeat
from pathlib import Path
from typing import Any, NoReturn

import math
import re

import numpy as np

from analysis.records import PHASES, STOP_REASONS, TokenColumns, TraceRecord
from storage.content import FLOAT32_MAX, MAX_LATENCY_S, MAX_TOKEN_ID, has_surrogate
from storage.errors import TraceImportError

FORMAT = "thinkscope.trace"
VERSION = 1

# Upgraders from version n to n + 1, applied in sequence to lines of older versions. Version 2
# adds {1: _v1_to_v2} here and only ever has to decode the newest shape below.
_UPGRADES: dict[int, Callable[[dict], dict]] = {}


@dataclass(frozen=True)
class ParsedRun:
    ref: int
    model: str
    strategy: str
    settings: dict
    note: str | None
    created_at: datetime | None


@dataclass(frozen=True)
class ParsedLine:
    record: TraceRecord
    created_at: datetime | None
    run: ParsedRun | None
    # Where the trace came from, for errors found when it is stored (a run.ref conflict).
    path: Path | None = None
    line: int | None = None


class _Line:
    """Where we are, for error messages."""

    def __init__(self, path: Path, lineno: int) -> None:
        self.path, self.lineno = path, lineno

    def fail(self, field: str | None, message: str) -> NoReturn:
        raise TraceImportError(self.path, self.lineno, message, field)


def decode_line(obj: Any, path: Path, lineno: int) -> ParsedLine:
    at = _Line(path, lineno)
    if not isinstance(obj, dict):
        at.fail(None, f"expected a JSON object, got {_kind(obj)}")
    obj = _upgrade(at, obj)

    prompt = _object(at, obj, "prompt", None)
    trace = _object(at, obj, "trace", None)
    tokens = _decode_tokens(at, _object(at, obj, "tokens", None))
    run = _decode_run(at, obj["run"]) if obj.get("run") is not None else None

    stop_reason = _string(at, trace, "stop_reason", "trace")
    if stop_reason not in STOP_REASONS:
        at.fail("trace.stop_reason", f"must be one of {', '.join(STOP_REASONS)}, got {stop_reason!r}")
    record = TraceRecord(
        prompt=_string(at, prompt, "text", "prompt"),
        model=_string(at, trace, "model", "trace"),
        thinking_text=_string(at, trace, "thinking_text", "trace"),
        answer_text=_string(at, trace, "answer_text", "trace"),
        tokens=tokens,
        stop_reason=stop_reason,
        latency_s=_latency(at, trace, "latency_s", "trace"),
        reference_answer=_string(at, prompt, "reference_answer", "prompt", optional=True),
        extracted_answer=_string(at, trace, "extracted_answer", "trace", optional=True),
        correct=_bool_or_none(at, trace, "correct", "trace"),
        prompt_source=_string(at, prompt, "source", "prompt", optional=True) or "imported",
        strategy=run.strategy if run else _string(at, trace, "strategy", "trace", optional=True) or "single",
        settings=_object(at, trace, "settings", "trace", optional=True),
        meta=_object(at, trace, "meta", "trace", optional=True),
    )
    return ParsedLine(record=record, created_at=_time(at, trace, "created_at", "trace"), run=run, path=path, line=lineno)


def describe_json_error(exc: "json.JSONDecodeError", text: str) -> str:
    """A JSON syntax error in words, for one line (the caller names file and line)."""
    msg = exc.msg.removesuffix(" at").removesuffix(":")  # "Invalid control character at"
    bad = text[exc.pos] if 0 <= exc.pos < len(text) else ""
    if msg.startswith("Invalid control character") and bad:
        name = "a NUL byte" if bad == "\x00" else f"the control character U+{ord(bad):04X}"
        return (f"{name} inside a string at column {exc.colno}; JSON strings must escape control "
                f"characters (write \\u{ord(bad):04x})")
    return f"{msg} at column {exc.colno}"


def _upgrade(at: _Line, obj: dict) -> dict:
    if obj.get("format") != FORMAT:
        at.fail("format", f"must be {FORMAT!r}, got {obj.get('format')!r}; is this a ThinkScope trace file?")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        at.fail("version", f"must be a positive integer, got {version!r}")
    if version > VERSION:
        at.fail("version", f"is {version}, written by a newer ThinkScope; this one reads up to version {VERSION}")
    while version < VERSION:
        obj = _UPGRADES[version](obj)
        version += 1
    return obj


def _decode_run(at: _Line, run: Any) -> ParsedRun:
    if not isinstance(run, dict):
        at.fail("run", f"must be an object, got {_kind(run)}")
    ref = run.get("ref")
    if isinstance(ref, bool) or not isinstance(ref, int):
        at.fail("run.ref", f"must be an integer, got {_kind(ref)}")
    return ParsedRun(
        ref=ref,
        model=_string(at, run, "model", "run"),
        strategy=_string(at, run, "strategy", "run"),
        settings=_object(at, run, "settings", "run", optional=True),
        note=_string(at, run, "note", "run", optional=True),
        created_at=_time(at, run, "created_at", "run"),
    )


def _decode_tokens(at: _Line, cols: dict) -> TokenColumns:
    text = _strings(at, _require(at, cols, "text", "tokens"), "tokens.text")
    n = len(text)
    token_id = _token_ids(at, _require(at, cols, "token_id", "tokens"), "tokens.token_id", n)
    logprob = _floats(at, _require(at, cols, "logprob", "tokens"), "tokens.logprob", n)
    entropy = _floats(at, _require(at, cols, "entropy", "tokens"), "tokens.entropy", n)
    phase = _ints(at, _require(at, cols, "phase", "tokens"), "tokens.phase", n)
    if n and not np.isin(phase, PHASES).all():
        i = int(np.flatnonzero(~np.isin(phase, PHASES))[0])
        at.fail(f"tokens.phase[{i}]", f"must be 0 (thinking), 1 (answer) or 2 (forced), got {int(phase[i])}")

    top_ids_rows = _rows(at, _require(at, cols, "top_ids", "tokens"), "tokens.top_ids", n)
    k = len(top_ids_rows[0]) if n else 0
    flat_ids = _token_ids(at, _flatten(at, top_ids_rows, "tokens.top_ids", k), "tokens.top_ids", n * k)
    top_lp_rows = _rows(at, _require(at, cols, "top_logprobs", "tokens"), "tokens.top_logprobs", n)
    flat_lp = _floats(at, _flatten(at, top_lp_rows, "tokens.top_logprobs", k), "tokens.top_logprobs", n * k)
    top_texts = _rows(at, _require(at, cols, "top_texts", "tokens"), "tokens.top_texts", n)
    _strings(at, _flatten(at, top_texts, "tokens.top_texts", k), "tokens.top_texts")
    return TokenColumns(
        token_id=token_id,
        text=text,
        logprob=logprob.astype(np.float32),
        entropy=entropy.astype(np.float32),
        top_ids=flat_ids.reshape(n, k),
        top_texts=[list(row) for row in top_texts],
        top_logprobs=flat_lp.astype(np.float32).reshape(n, k),
        phase=phase.astype(np.int8),
    )


def _require(at: _Line, obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        at.fail(f"{where}.{key}", "is missing")
    return obj[key]


def _object(at: _Line, obj: dict, key: str, where: str | None, optional: bool = False) -> dict:
    """obj[key] as a dict; `where` is the enclosing field name (None at the top level)."""
    field = f"{where}.{key}" if where else key
    value = obj.get(key)
    if value is None:
        if optional:
            return {}
        at.fail(field, "is missing")
    if not isinstance(value, dict):
        at.fail(field, f"must be an object, got {_kind(value)}")
    return value


def _string(at: _Line, obj: dict, key: str, where: str, optional: bool = False) -> str | None:
    if key not in obj and not optional:
        at.fail(f"{where}.{key}", "is missing")
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        at.fail(f"{where}.{key}", f"must be a string, got {_kind(value)}")
    if has_surrogate(value):
        at.fail(f"{where}.{key}", SURROGATE_MESSAGE)
    return value


SURROGATE_MESSAGE = ("holds a lone UTF-16 surrogate (such as \\ud800), which is not text and cannot be stored "
                     "as UTF-8; the file is damaged or was written by a tool that splits characters")


def _latency(at: _Line, obj: dict, key: str, where: str) -> float:
    """Seconds, 0 when unknown (null or absent)."""
    value = obj.get(key)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        at.fail(f"{where}.{key}", f"must be a number, got {_kind(value)}")
    return finite(at, f"{where}.{key}", value, 0.0, MAX_LATENCY_S, "seconds")


def finite(at, field: str, value: int | float, low: float, high: float, unit: str = "") -> float:
    """value as a float within [low, high], or an error naming the field (NaN, ±Infinity, a
    400-digit integer, 1e300 for a float32 column): ThinkScope stores finite numbers only."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number):
        at.fail(field, "is NaN; ThinkScope stores finite numbers only (write null for an unknown value)")
    if not low <= number <= high:
        if isinstance(value, int) and len(str(abs(value))) > 30:
            shown = f"an integer of {len(str(abs(value)))} digits"
        elif math.isinf(number):
            shown = "Infinity" if number > 0 else "-Infinity"
        else:
            shown = f"{number:.6g}"
        at.fail(field, f"is {shown}, outside {low:g} … {high:g}{' ' + unit if unit else ''}; ThinkScope stores "
                       "finite numbers only (write null for an unknown value)")
    return number


def _bool_or_none(at: _Line, obj: dict, key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        at.fail(f"{where}.{key}", f"must be true, false or null, got {_kind(value)}")
    return value


def _time(at: _Line, obj: dict, key: str, where: str) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        at.fail(f"{where}.{key}", f"must be an ISO 8601 time string, got {_kind(value)}")
    return parse_time(at, f"{where}.{key}", value)


_UNPADDED_YEAR = re.compile(r"^(\d{1,3})-(?=\d\d-\d\dT)")


def parse_time(at, field: str, value: str) -> datetime:
    """An ISO 8601 time as naive UTC; years 1 to 9999 (what Python and the export can write)."""
    try:
        # Exports before the fix wrote years below 1000 unpadded ("1-01-01T…"): read those back too.
        parsed = datetime.fromisoformat(_UNPADDED_YEAR.sub(lambda m: m.group(1).zfill(4) + "-", value, count=1))
    except ValueError:
        at.fail(field, f"is not an ISO 8601 time: {value[:40]!r}")
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:
            at.fail(field, f"is {value[:40]!r}, which in UTC falls outside the years 1 to 9999")
    return parsed


def _strings(at: _Line, value: Any, field: str) -> list[str]:
    if not isinstance(value, list):
        at.fail(field, f"must be a list of strings, got {_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            at.fail(f"{field}[{i}]", f"must be a string, got {_kind(item)}")
    if value and has_surrogate("".join(value)):
        i = next(i for i, item in enumerate(value) if has_surrogate(item))
        at.fail(f"{field}[{i}]", SURROGATE_MESSAGE)
    return value


def _rows(at: _Line, value: Any, field: str, n: int) -> list:
    if not isinstance(value, list):
        at.fail(field, f"must be a list of lists, got {_kind(value)}")
    if len(value) != n:
        at.fail(field, f"has {len(value)} rows but tokens.text has {n}")
    return value


def _flatten(at: _Line, rows: list, field: str, k: int) -> list:
    flat: list = []
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            at.fail(f"{field}[{i}]", f"must be a list, got {_kind(row)}")
        if len(row) != k:
            at.fail(f"{field}[{i}]", f"has {len(row)} alternatives, tokens.top_ids[0] has {k}")
        flat.extend(row)
    return flat


def _ints(at: _Line, value: Any, field: str, n: int) -> np.ndarray:
    if not isinstance(value, list):
        at.fail(field, f"must be a list of integers, got {_kind(value)}")
    if len(value) != n:
        at.fail(field, f"has {len(value)} entries but tokens.text has {n}")
    # Checking types in Python is the slow path only for bad lines; int64 overflow shows up as
    # an object array and is reported the same way.
    arr = np.array(value) if value else np.empty(0, dtype=np.int64)
    if arr.dtype.kind != "i" or _has_bool(value):
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or not -(2**63) <= item < 2**63:
                at.fail(f"{field}[{i}]", f"must be an integer, got {_kind(item)}")
    return arr.astype(np.int64)


def _token_ids(at: _Line, value: Any, field: str, n: int) -> np.ndarray:
    """Token ids: -1 (unknown) or 0 <= id < MAX_TOKEN_ID, so analysis can index a vocabulary."""
    arr = _ints(at, value, field, n)
    bad = (arr < -1) | (arr >= MAX_TOKEN_ID)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        at.fail(f"{field}[{i}]", f"is {int(arr[i])}, not a token id (-1 for unknown, else 0 … {MAX_TOKEN_ID - 1:,})")
    return arr


def _floats(at: _Line, value: Any, field: str, n: int) -> np.ndarray:
    if not isinstance(value, list):
        at.fail(field, f"must be a list of numbers, got {_kind(value)}")
    if len(value) != n:
        at.fail(field, f"has {len(value)} entries but tokens.text has {n}")
    arr = np.array(value) if value else np.empty(0, dtype=np.float64)
    if arr.dtype.kind in "if" and not _has_bool(value):
        arr = arr.astype(np.float64)
        bad = ~(np.abs(arr) <= FLOAT32_MAX)  # NaN, ±inf and what float32 cannot hold
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            finite(at, f"{field}[{i}]", value[i], -FLOAT32_MAX, FLOAT32_MAX)
        return arr
    out = np.empty(n, dtype=np.float64)
    for i, item in enumerate(value):
        if item is None:
            out[i] = np.nan  # the file's way of writing an unknown value
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            at.fail(f"{field}[{i}]", f"must be a number or null, got {_kind(item)}")
        else:
            out[i] = finite(at, f"{field}[{i}]", item, -FLOAT32_MAX, FLOAT32_MAX)
    return out


def _has_bool(values: list) -> bool:
    # numpy silently turns true/false into 1/0 inside a numeric list.
    return any(map(isinstance, values, repeat(bool)))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}" if abs(value) < 1e30 else "a number"
    if isinstance(value, str):
        return f"the string {value[:30]!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
