"""The whole app in a real browser: `streamlit run`, Debian's Chromium driven by Playwright."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path, model_cache_dir):
    port = _free_port()
    env = {**os.environ, "THINKSCOPE_DB": str(tmp_path / "browser.duckdb"), "THINKSCOPE_CACHE": str(model_cache_dir)}
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()}")
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture
def page(tmp_path, request):
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `apt-get install chromium` (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        failure_shot = os.environ.get("THINKSCOPE_FAILURE_SCREENSHOT")
        if failure_shot:
            page.screenshot(path=failure_shot, full_page=True)
        browser.close()


def _trace_count(page) -> int:
    caption = page.get_by_text(re.compile(r"^\d+ traces · stored in")).first
    caption.wait_for(timeout=60_000)
    return int(caption.inner_text().split()[0])


def test_generate_streams_live_then_the_trace_is_listed(app_url, page):
    page.goto(f"{app_url}/traces")
    seeded = _trace_count(page)
    assert seeded > 0, "a new database starts with the sample traces"

    page.goto(app_url)
    prompt = page.get_by_label("Prompt")
    prompt.wait_for(timeout=120_000)  # the first visit loads the model
    prompt.fill("Tom has 12 apples and eats 5. How many apples are left?")
    page.get_by_label("Reference answer (optional, used to grade the answer)").fill("7")
    max_thinking = page.get_by_role("spinbutton", name="Max thinking tokens")
    max_thinking.fill("64")
    max_thinking.press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate").click()

    page.get_by_text(re.compile(r"Thinking… \d+ tokens · [\d.]+ s · [\d.]+ tok/s")).wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"Thought for [\d.]+ s, \d+ tokens")).wait_for(timeout=120_000)
    saved = page.get_by_text(re.compile(r"Saved as trace #\d+"))
    saved.wait_for(timeout=60_000)
    if os.environ.get("THINKSCOPE_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["THINKSCOPE_SCREENSHOT_DIR"]) / "generate.png"), full_page=True)

    trace_id = re.search(r"#(\d+)", saved.inner_text()).group(1)

    page.goto(f"{app_url}/traces")
    assert _trace_count(page) == seeded + 1

    page.goto(f"{app_url}/trace?id={trace_id}")
    page.get_by_text("Colour tokens by").wait_for(timeout=60_000)
    page.get_by_text("Tom has 12 apples and eats 5.").wait_for()
    if os.environ.get("THINKSCOPE_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["THINKSCOPE_SCREENSHOT_DIR"]) / "trace.png"), full_page=True)
