"""A real app server and a real browser for the browser tests: `streamlit run app.py` on a free
loopback port, and Debian's Chromium driven by Playwright (never `playwright install`)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]
_START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(db_path: Path, model_cache_dir: Path, log_path: Path) -> Iterator[str]:
    """The app's URL while a server runs on `db_path`; the server is stopped on exit.

    The file watcher is off: edits elsewhere in the tree must not interrupt a test mid-way."""
    port = _free_port()
    env = {**os.environ, "THINKSCOPE_DB": str(db_path), "THINKSCOPE_CACHE": str(model_cache_dir)}
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless",
             "true", "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + _START_TIMEOUT_S
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        pytest.fail(f"streamlit did not start: {Path(log_path).read_text()}")
                    time.sleep(0.3)
            yield url
        finally:
            server.terminate()
            server.wait(10)


@contextmanager
def chromium_page() -> Iterator:
    """A Playwright page in Chromium; THINKSCOPE_FAILURE_SCREENSHOT=path keeps a last screenshot."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `apt-get install chromium` (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        finally:
            failure_shot = os.environ.get("THINKSCOPE_FAILURE_SCREENSHOT")
            if failure_shot:
                page.screenshot(path=failure_shot, full_page=True)
            browser.close()
