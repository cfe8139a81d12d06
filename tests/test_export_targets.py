"""Issue 11, item 15: an export never replaces a device node or a symlink with a regular file.

Non-regular targets are written through (so /dev/full reports its error and stays a device),
`-` is standard output, a symlink to a regular file keeps the link, and a folder gets a message
instead of "[Errno 21] ... .part -> ...".
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from storage import StorageConfig, StorageError, save_trace
from storage.jsonl import export_jsonl
from storage.testing import make_record

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path) -> StorageConfig:
    cfg = StorageConfig(tmp_path / "db.duckdb")
    save_trace(cfg, make_record(prompt="exported"))
    return cfg


def _cli(cfg: StorageConfig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli.py", "--db", str(cfg.db_path), *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)


def _full_device(path: Path) -> None:
    full = os.stat("/dev/full").st_rdev
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, full)
    except PermissionError:
        pytest.skip("mknod needs root")


def test_export_onto_a_copy_of_dev_full_reports_the_error_and_keeps_the_device(db, tmp_path):
    target = tmp_path / "full"
    _full_device(target)
    with pytest.raises(StorageError, match="No space left on device"):
        export_jsonl(db, target)
    assert stat.S_ISCHR(os.stat(target).st_mode)  # before: replaced by a regular file, exit 0
    done = _cli(db, "export", str(target))
    assert done.returncode == 1 and "No space left on device" in done.stderr and "Traceback" not in done.stderr
    assert stat.S_ISCHR(os.stat(target).st_mode)
    assert not list(tmp_path.glob("full*.part"))


def test_export_through_a_symlink_to_stdout_writes_to_stdout_and_keeps_the_link(db, tmp_path):
    link = tmp_path / "out.jsonl"
    link.symlink_to("/proc/self/fd/1")
    done = _cli(db, "export", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    first = done.stdout.splitlines()[0]
    assert json.loads(first)["prompt"]["text"] == "exported"


def test_dash_exports_to_standard_output_with_the_summary_on_stderr(db):
    done = _cli(db, "export", "-")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["prompt"]["text"] == "exported"
    assert "exported 1 traces to -" in done.stderr
    done = _cli(db, "export", "--format", "parquet", "-")
    assert done.returncode == 2 and "writes a folder" in done.stderr


def test_a_symlink_to_a_regular_file_keeps_the_link_and_replaces_the_file(db, tmp_path):
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert export_jsonl(db, link) == 1
    assert link.is_symlink() and "exported" in real.read_text()


def test_export_onto_a_folder_says_so(db, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(StorageError) as info:
        export_jsonl(db, folder)
    message = str(info.value)
    assert "is a folder" in message and "Errno" not in message and ".part" not in message
    done = _cli(db, "export", str(folder))
    assert done.returncode == 1 and "is a folder" in done.stderr
    assert list(folder.iterdir()) == []
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    done = _cli(db, "export", "--format", "parquet", str(plain))
    assert done.returncode == 1 and "it is a file" in done.stderr and plain.read_text() == "x"
