"""Import / export: bring traces in from other tools' files, take them out as JSONL or Parquet."""
import streamlit as st

from ui.import_view import export_section, import_section
from ui.resources import storage_config

st.title("Import / export")
config = storage_config()
tab_in, tab_out = st.tabs(["Import", "Export"])
with tab_in:
    import_section(config)
with tab_out:
    export_section(config)
