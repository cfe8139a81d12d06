"""A shared link opened first on a freshly started server renders the real app, not Streamlit's
`pages/`-folder fallback (file-name sidebar, narrow layout). See ui/__init__.py."""
import pytest
from playwright.sync_api import expect

from tests.browser_support import chromium_page, running_app

pytestmark = pytest.mark.browser

NAVIGATION = ["Generate", "Traces", "Trace", "Accuracy vs length", "Strategies", "Budgets", "Signals", "Compare",
              "Import / export", "Review"]


@pytest.mark.parametrize(("link", "heading"), [("trace?id=2", "Trace"), ("review?reviewer=ana", "Review")])
def test_a_deep_link_opened_first_shows_the_full_app(tmp_path, link, heading):
    # A new server per case: the fallback only ever happened on a process's first session.
    with running_app(tmp_path / "deeplink.duckdb", tmp_path / "cache", tmp_path / "streamlit.log") as url:
        with chromium_page() as page:
            page.goto(f"{url}/{link}")
            page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=60_000)
            nav = page.locator('[data-testid="stSidebarNav"] a')
            nav.nth(len(NAVIGATION) - 1).wait_for(timeout=30_000)
            titles = [text.split("\n")[-1].strip() for text in nav.all_inner_texts()]
            assert titles == NAVIGATION
            # layout="wide" (set in app.py): the main column uses the 1,400 px window, not 736 px.
            main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
            assert main["width"] > 1000
            # Same page, same query (a page may add to it: Review names the trace it shows).
            assert page.url.startswith(f"{url}/{link}")
            if link.startswith("trace"):
                # The query survived the switch to the real navigation: trace 2 is the one shown.
                expect(page.get_by_label("Trace id")).to_have_value("2", timeout=30_000)
        log = (tmp_path / "streamlit.log").read_text()
    assert "Traceback" not in log
