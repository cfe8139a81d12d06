"""Streamlit-facing code: cached resources, chart builders, shared widgets.

Importing this package also takes the app out of Streamlit's `pages/`-folder fallback. Streamlit
decides once per process, when the first browser session opens, whether the app is a "pages
directory" app (MPA v1): it is if `pages/` exists next to the main script, until `st.navigation`
is first called. So a deep link (`/trace?id=5`) opened first on a fresh server ran `pages/trace.py`
directly, without app.py: plain file-name sidebar, narrow layout. Every page imports `ui` before
anything else of ours, so this is the first of our code to run on that request: it records that
app.py's `st.navigation` is the app's navigation and reruns, and the rerun (same page, same query)
goes through app.py. The browser test tests/test_browser_deeplink.py guards this.
"""
from __future__ import annotations


def _leave_pages_fallback() -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    in_fallback = PagesManager.uses_pages_directory is True
    # False, not None: a PagesManager created later must not guess from the pages/ folder either.
    PagesManager.uses_pages_directory = False
    if in_fallback and get_script_run_ctx() is not None:
        import streamlit as st

        st.rerun()


_leave_pages_fallback()
