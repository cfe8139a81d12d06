"""Reading an import file: JSON Lines streamed line by line, one JSON document, CSV or Parquet
rows, or text.

Each reader checks UTF-8 itself so that a bad byte is reported with its line and offset, and
caps what it holds in memory (common.MAX_LINE_BYTES / MAX_DOCUMENT_BYTES, and for a JSON line
content.MAX_LINE_VALUES: parsing costs ~100 bytes per JSON value, so a 150 MB line of 6 M tokens
is refused before it is parsed instead of taking 3 GB).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from storage.content import MAX_FIELD_CHARS, MAX_LINE_VALUES
from storage.errors import TraceImportError
from storage.importers.common import MAX_DOCUMENT_BYTES, MAX_LINE_BYTES, Where
from storage.jsonl_decode import describe_json_error

PARQUET_MAGIC = b"PAR1"
_PARQUET_BATCH = 1000  # rows read at a time


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
            if len(raw) > 2 * MAX_LINE_VALUES:  # shorter lines cannot hold more values than that
                check_values(path, lineno, raw)
            text = decode(path, raw, lineno, offset)
            offset += len(raw)
            if text.strip():
                yield lineno, offset, text


def check_values(path: Path, lineno: int, raw: bytes) -> None:
    """Refuse a line with more than MAX_LINE_VALUES JSON values before json.loads builds them."""
    # Commas and brackets bound the values from above (zero-copy counts); only a line over the
    # limit by that bound is counted exactly, leaving out the ones inside strings.
    if raw.count(b",") + raw.count(b"[") + raw.count(b"{") < MAX_LINE_VALUES:
        return
    values = values_outside_strings(raw) + 1
    if values > MAX_LINE_VALUES:
        raise TraceImportError(
            path, lineno,
            f"the line holds about {values:,} JSON values ({len(raw) / 2**20:,.0f} MiB); one line may hold at most "
            f"{MAX_LINE_VALUES:,} (about 250,000 tokens with 5 alternatives each), so that reading it stays "
            "within bounded memory. Split the trace, or leave out its per-token arrays",
        )


def values_outside_strings(raw: bytes, chunk: int = 1 << 22) -> int:
    """Commas, '[' and '{' of a JSON text that are not inside strings, counted in chunks with numpy
    (memory: a few times `chunk`, not the line: re.sub over a 150 MB line built 1.5 GB of pieces)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    inside, total = 0, 0
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        quote = part == 0x22
        after_backslash = np.empty(len(part), dtype=bool)
        after_backslash[1:] = part[:-1] == 0x5C
        after_backslash[0] = start > 0 and raw[start - 1] == 0x5C
        for q in np.flatnonzero(quote & after_backslash).tolist():
            p, run = start + q - 1, 0
            while p >= 0 and raw[p] == 0x5C:
                run, p = run + 1, p - 1
            quote[q] = run % 2 == 0  # escaped when an odd run of backslashes precedes it
        state = (np.cumsum(quote, dtype=np.int64) + inside) & 1  # 1 inside a string
        structural = (part == 0x2C) | (part == 0x5B) | (part == 0x7B)
        total += int(np.count_nonzero(structural & (state == 0)))
        inside = int(state[-1])
    return total


def parse_json_line(path: Path, lineno: int, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceImportError(path, lineno, f"invalid JSON ({describe_json_error(exc, text)})") from None
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
        raise TraceImportError(path, exc.lineno, f"invalid JSON ({describe_json_error(exc, text)}){hint}") from None
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


def is_parquet(path: Path) -> bool:
    with open_binary(path) as handle:
        return handle.read(4) == PARQUET_MAGIC


def parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(1-based row number, row as a dict of Python values), a batch of rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        index = 0
        for batch in reader.iter_batches(batch_size=_PARQUET_BATCH):
            for row in batch.to_pylist():
                index += 1
                yield index, row
    except (pa.ArrowException, OSError) as exc:
        raise TraceImportError(path, None, f"cannot read the Parquet file ({exc})") from None


def parquet_count(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise TraceImportError(path, None, f"cannot read the Parquet file ({exc})") from None


def csv_delimiter(path: Path, header: str) -> str:
    return "\t" if path.suffix.lower() == ".tsv" or ("\t" in header and "," not in header) else ","


def csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, int, dict]]:
    """(line where the row starts, byte offset read so far, row without empty cells) of a CSV file
    with a header line. Cells may hold newlines inside quotes, as CSV allows."""
    csv.field_size_limit(MAX_FIELD_CHARS + 1)  # the default, 131,072 characters, is below a long trace
    with open_binary(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="strict", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = next(reader, None)
            if not header:
                raise TraceImportError(path, None, "the CSV file has no header line")
            names = [h.strip() for h in header]
            start = reader.line_num + 1
            for row in reader:
                if any(cell.strip() for cell in row):
                    if len(row) > len(names):
                        raise TraceImportError(path, start, f"the row has {len(row)} cells, the header {len(names)}")
                    yield start, handle.tell(), {n: c for n, c in zip(names, row) if c != ""}
                start = reader.line_num + 1
        except UnicodeDecodeError as exc:
            raise TraceImportError(path, reader.line_num + 1,
                                   f"not valid UTF-8 (value {exc.object[exc.start]:#04x}); the file must be UTF-8 text") from None
        except csv.Error as exc:
            raise TraceImportError(path, reader.line_num, f"invalid CSV ({exc})") from None
