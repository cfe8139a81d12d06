"""ThinkScope: navigation only. Each page lives in pages/, its logic in the packages."""
import streamlit as st

st.set_page_config(page_title="ThinkScope", page_icon=":material/psychology:", layout="wide")
navigation = st.navigation(
    [
        st.Page("pages/generate.py", title="Generate", icon=":material/psychology:", default=True),
        st.Page("pages/traces.py", title="Traces", icon=":material/table_rows:"),
        st.Page("pages/trace.py", title="Trace", icon=":material/search:"),
        st.Page("pages/length_curve.py", title="Accuracy vs length", icon=":material/show_chart:"),
        st.Page("pages/strategies.py", title="Strategies", icon=":material/how_to_vote:"),
        st.Page("pages/budgets.py", title="Budgets", icon=":material/savings:"),
        st.Page("pages/signals.py", title="Signals", icon=":material/insights:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/import_export.py", title="Import / export", icon=":material/swap_vert:"),
        st.Page("pages/review.py", title="Review", icon=":material/rate_review:"),
    ]
)
navigation.run()
