"""Watching it think, and stopping it, in a real browser: `streamlit run` and Debian's Chromium.

One server for the module (a fresh database); each test gets its own page (its own session)."""
import os
import re
from pathlib import Path

import pytest

from tests.browser_support import chromium_page, running_app

pytestmark = pytest.mark.browser

THINKING = re.compile(r"Thinking… \d+ tokens · [\d.]+ s · [\d.]+ tok/s")
# Greedy SmolLM2-135M thinks for well over 100 tokens here before it writes "Answer:".
LONG_PROMPT = "Describe in detail how a bicycle works, step by step."


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, model_cache_dir):
    tmp = tmp_path_factory.mktemp("browser-stream")
    with running_app(tmp / "stream.duckdb", model_cache_dir, tmp / "streamlit.log") as url:
        yield url


@pytest.fixture
def page():
    with chromium_page() as page:
        yield page


def _set_number(page, name: str, value: int) -> None:
    box = page.get_by_role("spinbutton", name=name)
    box.fill(str(value))
    box.press("Enter")


def _box_text(page) -> str:
    return page.locator(".st-key-live_thinking").inner_text()


def test_thinking_streams_visibly_and_stop_shows_the_partial_trace(app_url, page):
    page.goto(app_url)
    prompt = page.get_by_label("Prompt")
    prompt.wait_for(timeout=120_000)  # the first visit loads the model
    prompt.fill(LONG_PROMPT)
    _set_number(page, "Temperature", 0)
    _set_number(page, "Max thinking tokens", 2000)
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate").click()

    label = page.get_by_text(THINKING)
    label.wait_for(timeout=60_000)
    page.wait_for_function("() => document.querySelector('.st-key-live_thinking')?.innerText.trim().length > 0",
                           timeout=60_000)
    first = _box_text(page)
    # The thinking text itself is in the page, and grows while "Thinking…" is still shown.
    page.wait_for_function(
        """n => { const box = document.querySelector('.st-key-live_thinking');
                  return box && box.innerText.length > n && document.body.innerText.includes('Thinking…'); }""",
        arg=len(first), timeout=60_000)
    assert label.is_visible()
    grown = _box_text(page)
    assert grown.startswith(first.strip()[:20]) and len(grown) > len(first)
    if os.environ.get("THINKSCOPE_SCREENSHOT_DIR"):  # the README picture: a few lines of thinking in the box
        page.wait_for_function("() => document.querySelector('.st-key-live_thinking').innerText.length > 250",
                               timeout=300_000)
        grown = _box_text(page)
        page.screenshot(path=str(Path(os.environ["THINKSCOPE_SCREENSHOT_DIR"]) / "generate.png"), full_page=True)

    page.locator(".st-key-gen_stop button").click()  # the page's Stop, not Streamlit's own
    # Nothing else is touched: the stopped trace, its link and the partial thinking appear by themselves.
    page.get_by_text(re.compile(r"Stopped after \d+ tokens, [\d.]+ s")).wait_for(timeout=5_000)
    page.get_by_text(re.compile(r"Saved as trace #\d+")).wait_for(timeout=5_000)
    thought = page.get_by_text(re.compile(r"^Thought for [\d.]+ s, \d+ tokens$"))
    assert thought.is_visible()
    main = page.get_by_test_id("stMain").inner_text()
    assert " ".join(grown.split())[:60] in " ".join(main.split()), "the partial thinking stays on the page"
    assert not page.get_by_text(THINKING).is_visible()


def test_live_colouring_draws_escaped_token_spans(app_url, page):
    page.goto(app_url)
    prompt = page.get_by_label("Prompt")
    prompt.wait_for(timeout=120_000)
    prompt.fill("What is 2 + 3?")
    _set_number(page, "Max thinking tokens", 24)
    _set_number(page, "Max answer tokens", 8)
    page.get_by_text("Colour tokens by log-probability").click()
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text(re.compile(r"Saved as trace #\d+")).wait_for(timeout=120_000)
    spans = page.locator('[data-testid="stMain"] .ts-tokens span[title^="#"]')
    assert spans.count() > 0, "each token is a coloured span whose tooltip gives its log p"
    assert "log p" in spans.first.get_attribute("title")


def test_sweep_stop_keeps_finished_cells_and_says_so(app_url, page):
    page.goto(f"{app_url}/length_curve")
    page.get_by_label("Prompt text").wait_for(timeout=120_000)
    page.get_by_label("Prompt text").fill(LONG_PROMPT)  # no sample ends on its own within seconds
    page.get_by_label("Reference answer (needed for accuracy)").fill("2")
    budgets = page.get_by_label("Thinking budgets (tokens)")
    for text, samples in (("4", 2), ("4,2000", 2)):
        budgets.fill(text)
        budgets.press("Enter")
        _set_number(page, "Samples per budget", samples)
        _set_number(page, "Free-running samples", 0)
        page.wait_for_timeout(500)
        page.locator(".st-key-sweep_run button").click()
        if text == "4":  # a first, short sweep: its two cells are stored
            page.get_by_text(re.compile(r"2 cells stored · 2 generated now")).wait_for(timeout=120_000)
    # The second sweep resumes (the two cells are kept) and is stopped while its batch decodes.
    page.get_by_text(re.compile(r"2/4 cells · [1-9]\d* tokens in this batch")).wait_for(timeout=60_000)
    page.locator(".st-key-sweep_stop button").click()
    page.get_by_text("Stopped: 2 of 4 cells kept; run again to resume.").wait_for(timeout=5_000)
    page.get_by_text(re.compile(r"2 cells stored · 0 generated now")).wait_for(timeout=5_000)


def _trace_count(page) -> int:
    caption = page.get_by_text(re.compile(r"^\d+ traces · stored in")).first
    caption.wait_for(timeout=60_000)
    return int(caption.inner_text().split()[0])


def test_streamlits_own_stop_ends_the_generation_and_keeps_its_trace(app_url, page):
    page.goto(f"{app_url}/traces")
    before = _trace_count(page)
    page.goto(app_url)
    prompt = page.get_by_label("Prompt")
    prompt.wait_for(timeout=120_000)
    prompt.fill(LONG_PROMPT)
    _set_number(page, "Max thinking tokens", 2000)
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text(THINKING).wait_for(timeout=60_000)
    top_stop = page.get_by_test_id("stStatusWidget").get_by_role("button", name="Stop")
    top_stop.click()
    top_stop.wait_for(state="hidden", timeout=10_000)  # the script run ended
    spinners = page.locator('[data-testid="stSpinner"], [data-testid="stExpanderIconSpinner"]')
    assert spinners.count() == 0, "no spinner is left turning"
    page.goto(f"{app_url}/traces")
    assert _trace_count(page) == before + 1, "the stopped generation is stored"
