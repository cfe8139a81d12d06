"""Thought Anchors in a real browser: open a trace, run importance with 2 samples, see the strip; branch
from a sentence and open the child trace (Chromium via Playwright, the real app and model)."""
import pytest
from playwright.sync_api import expect

from analysis.records import TokenColumns, TraceRecord
from generation.models import EMBEDDED_MODEL
from storage.anchors import branch_of
from storage.config import StorageConfig
from storage.traces import save_trace
from tests.browser_support import chromium_page, running_app

pytestmark = pytest.mark.browser


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value), timeout=30_000)


def test_importance_strip_then_branch_and_open_the_child(tmp_path, model_cache_dir):
    db = tmp_path / "anchors.duckdb"
    config = StorageConfig(db_path=db, seed_path=None)
    tid = save_trace(config, TraceRecord(
        prompt="What is the secret code number?", model=EMBEDDED_MODEL,
        thinking_text="The secret code number is 4817. I will write it <b>now</b>.", answer_text="4817",
        tokens=TokenColumns.empty(), stop_reason="imported", reference_answer="4817", latency_s=1.0))
    with running_app(db, model_cache_dir, tmp_path / "streamlit.log") as url:
        with chromium_page() as page:
            page.goto(f"{url}/trace?id={tid}")
            page.get_by_text("Which sentences matter (Thought Anchors)").click()
            _set_number(page, "Samples per sentence (N)", 2)
            _set_number(page, "Max new thinking tokens", 6)
            _set_number(page, "Answer tokens", 4)
            expect(page.get_by_text("rollouts to generate", exact=False)).to_be_visible(timeout=60_000)
            page.get_by_role("button", name="Run importance").click()
            strip = page.locator(".ts-anchor-strip")
            expect(strip).to_be_visible(timeout=300_000)
            sentences = strip.locator(".ts-anchor")
            expect(sentences).to_have_count(2)
            # Trace text is escaped: the <b> in the thinking is shown as text, not bold.
            expect(sentences.nth(1)).to_contain_text("<b>now</b>")
            assert strip.locator("b").count() == 0
            expect(page.get_by_text("Top anchors")).to_be_visible()

            page.get_by_text("Branch from here").click()
            page.get_by_text("delete", exact=True).click()
            expect(page.get_by_label("New sentence")).to_have_count(0, timeout=30_000)  # the rerun has drawn
            _set_number(page, "Samples", 2)
            _set_number(page, "New thinking tokens per branch", 6)
            page.get_by_role("button", name="Branch", exact=True).click()
            child_link = page.get_by_role("link", name=f"Trace #{tid + 1}", exact=True).first
            expect(child_link).to_be_visible(timeout=300_000)
            expect(page.get_by_text("Original", exact=True)).to_be_visible()
            child_link.click()
            expect(page.get_by_label("Trace id")).to_have_value(str(tid + 1), timeout=60_000)
            expect(page.get_by_text(f"Branch of trace #{tid}", exact=False)).to_be_visible(timeout=60_000)
        log = (tmp_path / "streamlit.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    branch = branch_of(config, tid + 1)
    assert branch is not None and branch.parent_trace_id == tid and branch.edit == "delete"
