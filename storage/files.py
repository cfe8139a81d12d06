"""Where export bytes land: atomic files, pass-through targets, and leftovers of killed processes.

An export to a regular file goes to a temporary file beside it (its name embeds the writer's
pid) and is renamed into place at the end, so a reader never sees a partial file and an error
midway leaves nothing. A target that is not a regular file (a terminal, a pipe, /dev/stdout, a
device node, or a symlink to one) is written through instead: renaming over it would silently
replace the device or the link with a regular file. `-` means standard output.

Temporary files and folders of a process killed with kill -9 (an export's .part file, a Parquet
export's work folder, DuckDB's spill folder) are removed by the next process that uses the same
place, once the pid in their name no longer runs (remove_stale).
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from storage.errors import StorageError

STDOUT = "-"


def write_lines_atomically(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Write each line (without its newline) to `path`; returns how many.

    Regular (or new) files are replaced atomically; other targets are written through; a folder
    is refused with a message that says so. Any OSError becomes a StorageError naming the target.
    """
    if str(path) == STDOUT:
        return _write_through(sys.stdout, lines, "standard output")
    path = Path(path)
    kind = target_kind(path)
    if kind == "directory":
        raise StorageError(f"Cannot write {path}: it is a folder. Give a file name, e.g. {path / 'traces.jsonl'}.")
    if kind == "special":
        try:
            out = open(path, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc
        try:
            return _write_through(out, lines, str(path))
        finally:
            try:
                out.close()
            except OSError:
                pass  # _write_through flushed and reported the failure; closing repeats it
    # A symlink to a regular file: replace the file it points to and keep the link.
    final = path.resolve() if path.is_symlink() else path
    tmp = final.with_name(f"{final.name}.{os.getpid()}.part")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final.parent, f"{final.name}.", ".part")
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
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def target_kind(path: Path) -> str:
    """"missing", "regular", "directory" or "special" (anything else, symlinks followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        return "directory"
    return "regular" if stat.S_ISREG(mode) else "special"


def _write_through(out, lines: Iterable[str], name: str) -> int:
    count = 0
    try:
        for line in lines:
            out.write(line)
            out.write("\n")
            count += 1
        out.flush()
    except OSError as exc:
        raise StorageError(f"Cannot write {name}: {exc.strerror or exc} (after {count} lines)") from exc
    return count


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just someone else's
    except OSError:
        return False
    return True


def remove_stale(folder: Path, prefix: str, suffix: str = "") -> int:
    """Remove files and folders named `prefix<pid>...suffix` in `folder` whose pid no longer runs;
    returns how many. Never raises: cleaning up is a courtesy, not a reason to fail."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith(suffix):
            continue
        digits = name[len(prefix):]
        pid_text = digits[: len(digits) - len(digits.lstrip("0123456789"))]
        if not pid_text or int(pid_text) == os.getpid() or pid_alive(int(pid_text)):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed
