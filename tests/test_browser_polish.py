"""In a real Chromium at 1,400 px: trace text is shown as text on the Trace, Review and Compare pages
(an image in it is never fetched, a link in it is not live), no metric value is cut, and the
server's log stays clean (no traceback, no deprecation warning, no file-watcher noise)."""
import pytest

from storage.config import StorageConfig
from storage.traces import save_trace
from tests.browser_support import chromium_page, running_app
from tests.test_pages_polish import FORCED, THINKING, ANSWER, HOSTILE, record, text_only

pytestmark = pytest.mark.browser

_CUT = """() => [...document.querySelectorAll(
    '[data-testid=stMetricValue], [data-testid=stMetricLabel], [data-testid=stMetricDelta]')]
    .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)"""
_LIVE_LINKS = "() => [...document.querySelectorAll('a')].map(a => a.href).filter(h => h.includes('127.0.0.1:9/'))"


def test_trace_text_is_text_and_figures_fit(tmp_path):
    from tests.test_compare_page import _strategy_run

    config = StorageConfig(db_path=tmp_path / "polish.duckdb", seed_path=None)
    imported = save_trace(config, text_only())
    phases = (THINKING,) * 8 + (FORCED,) * 4 + (ANSWER,) * 3
    texts = [f"w{i} " for i in range(8)] + ["Final", " Answer", ":", " "] + ["4", ".", ""]
    forced = save_trace(config, record(prompt=HOSTILE, phases=phases, texts=texts, latency_s=2.0))
    runs = [_strategy_run(config, "self_consistency", {"What is 2 + 3?": [HOSTILE, HOSTILE]}),
            _strategy_run(config, "greedy", {"What is 2 + 3?": ["5"]})]
    with running_app(config.db_path, tmp_path / "cache", tmp_path / "streamlit.log") as url:
        with chromium_page() as page:
            fetched = []
            page.on("request", lambda r: fetched.append(r.url) if "127.0.0.1:9/" in r.url else None)
            for link, shown in [(f"trace?id={imported}", "This trace has no per-token data"),
                                (f"trace?id={forced}", "8 thinking + 4 forced + 3 answer"),
                                (f"review?reviewer=ana&trace={imported}", "Step unit")]:
                page.goto(f"{url}/{link}")
                page.get_by_text(shown).first.wait_for(timeout=60_000)
                page.wait_for_timeout(1000)  # let every element of the run arrive
                assert page.get_by_text("![pixel](http://127.0.0.1:9/pixel.png)").count() >= 1, link
                assert page.evaluate(_CUT) == [], link
                assert page.evaluate(_LIVE_LINKS) == [], link
            page.goto(f"{url}/compare")
            page.get_by_text("Runs to compare").wait_for(timeout=60_000)
            picker = page.get_by_role("combobox").first
            for run_id in runs:
                picker.click()
                page.get_by_role("option", name=f"#{run_id} ").first.click()
                page.keyboard.press("Escape")
            page.get_by_text("Prompt by prompt").wait_for(timeout=60_000)
            page.get_by_text("answer: ![pixel]", exact=False).first.wait_for(timeout=30_000)
            assert page.evaluate(_LIVE_LINKS) == []
            assert fetched == []
        log = (tmp_path / "streamlit.log").read_text()
    for noise in ("Traceback", "use_container_width", "deprecat", "Inotify", "Could not convert"):
        assert noise not in log, log
