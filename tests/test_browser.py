"""The whole app in a real browser: `streamlit run`, Debian's Chromium driven by Playwright."""
import os
import re
from pathlib import Path

import pytest

from tests.browser_support import chromium_page, running_app

pytestmark = pytest.mark.browser


@pytest.fixture
def app_url(tmp_path, model_cache_dir):
    with running_app(tmp_path / "browser.duckdb", model_cache_dir, tmp_path / "streamlit.log") as url:
        yield url


@pytest.fixture
def page():
    with chromium_page() as page:
        yield page


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
