"""Writing export files so that a failed export never leaves a half-written file behind."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from storage.errors import StorageError


def write_lines_atomically(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Write each line (without its newline) to `path`; returns how many.

    The lines go to `path.part` first and are renamed into place at the end, so a reader never
    sees a partial file and an error (or a stop) midway removes the partial one.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = open(tmp, "w", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    count = 0
    try:
        with out:
            for line in lines:
                out.write(line)
                out.write("\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
