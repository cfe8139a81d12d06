"""The Review page in a real browser: label a span, reload, see it; move through the queue by keyboard.

Server start and browser fixture follow tests/test_browser.py; the database is a temp file made
here (THINKSCOPE_DB). The test enters at the app's root like a user (the Generate page loads the
embedded model from the session's converted cache), then opens Review from the navigation.
"""
import re

import pytest

from storage.annotations import annotation_history, current_annotation
from storage.config import StorageConfig
from storage.testing import make_record
from storage.traces import create_run, save_trace
from tests.browser_support import chromium_page, running_app

THINKING = "First, 2 + 3. That is 5.\n\nLet me check: 5 - 3 = 2. Yes."

pytestmark = pytest.mark.browser


@pytest.fixture
def review_db(tmp_path):
    config = StorageConfig(db_path=tmp_path / "review.duckdb", seed_path=None)
    run = create_run(config, "m", "greedy")
    ids = [save_trace(config, make_record(prompt=f"What is {i} + 3?", thinking_text=THINKING, seed=i), run_id=run)
           for i in range(3)]
    return config, ids


@pytest.fixture
def app_url(tmp_path, review_db, model_cache_dir):
    config, _ = review_db
    with running_app(config.db_path, model_cache_dir, tmp_path / "streamlit.log") as url:
        yield url


@pytest.fixture
def page():
    with chromium_page() as page:
        yield page


def _pick(page, label: str, option: str) -> None:
    """Choose an option of a Streamlit selectbox by its visible label."""
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option).click()


def _at_trace(page, trace_id: int, where: str) -> None:
    page.get_by_text(re.compile(rf"^Trace #{trace_id} · {where}")).wait_for(timeout=30_000)
    _idle(page)


def _idle(page) -> None:
    """Wait until the script run has finished, so the next key or click meets the final page."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=30_000)


def test_label_a_span_reload_and_navigate_by_keyboard(app_url, page, review_db):
    config, ids = review_db
    page.goto(app_url)
    page.get_by_label("Prompt").wait_for(timeout=120_000)
    page.get_by_role("link", name="Review").click()
    name = page.get_by_role("textbox", name="Reviewer")
    name.fill("alice")
    name.press("Enter")
    page.get_by_text("0 of 3 reviewed by alice").wait_for(timeout=60_000)
    _at_trace(page, ids[0], "1 of 3 in this queue")

    _pick(page, "Step", "2: That is 5.")
    _pick(page, "Label", "computation")
    page.get_by_role("button", name="Add label").click()
    page.get_by_text("Saved as version 1.").wait_for(timeout=30_000)
    badge = page.locator(".ts-badge", has_text="computation")
    badge.wait_for(timeout=30_000)
    (span,) = current_annotation(config, ids[0], "alice").spans
    assert (span.text, span.label) == ("That is 5.", "computation")

    # A reload is a new session: the reviewer and the trace come back from the URL, the label from the database.
    assert f"trace={ids[0]}" in page.url and "reviewer=alice" in page.url
    page.reload()
    _at_trace(page, ids[0], "1 of 3 in this queue")
    page.locator(".ts-badge", has_text="computation").wait_for(timeout=30_000)
    assert "That is 5." in page.locator(".ts-steps").inner_text()

    # Keyboard: J next, K previous; typing in the notes must not move.
    page.locator(".ts-steps").click()  # focus the page, outside any input
    page.keyboard.press("j")
    _at_trace(page, ids[1], "2 of 3 in this queue")
    page.keyboard.press("j")
    _at_trace(page, ids[2], "3 of 3 in this queue")
    page.keyboard.press("k")
    _at_trace(page, ids[1], "2 of 3 in this queue")
    from playwright.sync_api import expect

    notes = page.get_by_label("Notes")
    expect(notes).to_have_count(1, timeout=30_000)  # the previous trace's editor is gone once the rerun ends
    notes.click()
    notes.press_sequentially("just kidding")
    page.wait_for_timeout(1000)
    assert page.get_by_text(re.compile(rf"^Trace #{ids[1]} · ")).is_visible()
    assert notes.input_value() == "just kidding"

    # The same reviewer in a second tab saves first; this tab's save is kept, flagged, and reported.
    tab_b = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    tab_b.goto(f"{app_url}/review?reviewer=alice&trace={ids[1]}")
    _at_trace(tab_b, ids[1], "2 of 3 in this queue")
    tab_b.get_by_text("underthought", exact=True).click()
    tab_b.get_by_role("button", name="Save review").click()
    tab_b.get_by_text("Saved as version 1.").wait_for(timeout=30_000)

    page.bring_to_front()
    page.get_by_role("button", name="Save review").click()
    page.get_by_text(re.compile(r"Saved as version 2, but version 1 had been saved")).wait_for(timeout=30_000)
    page.get_by_text("Version 1 — the one your save did not include").wait_for()
    history = annotation_history(config, ids[1], "alice")
    assert [(a.version, a.verdict, a.notes, a.stale) for a in history] == [
        (2, None, "just kidding", True), (1, "underthought", "", False),
    ]
