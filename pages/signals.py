"""Signals: MI-peak words and per-trace signals against correctness, across analysed traces."""
import json

import streamlit as st

from storage.analyses import analysis_settings_in_use, analysis_token_words, list_analyses
from storage.errors import StorageError
from ui.resources import storage_config
from ui.signal_charts import correlation_bar_figure, signal_vs_correct_figure
from ui.signal_view import (correlation_empty_reason, correlation_frame, no_peak_words_reason, peak_word_frames,
                            scatter_empty_reason)

st.title("Signals across traces")
config = storage_config()
try:
    groups = analysis_settings_in_use(config)
except StorageError as exc:
    st.error(str(exc))
    st.stop()
if groups.empty:
    st.info("No trace has been analysed yet. Run an analysis on the Trace page, or `python cli.py analyze`.")
    st.stop()

labels = [f"{r.analysis_model} · reference {r.reference_kind} · settings {r.settings_key} ({r.n_traces} traces)"
          for r in groups.itertuples()]
choice = st.selectbox("Analyses", range(len(labels)), format_func=labels.__getitem__, key="signals_group")
group = groups.iloc[choice]
settings = json.loads(group["settings"])
with st.expander("Settings of these analyses"):
    st.json(settings)
frame = list_analyses(config, group["analysis_model"], group["settings_key"])

st.subheader("Words at MI peaks")
top, compare = peak_word_frames(analysis_token_words(config, group["analysis_model"], group["settings_key"]))
c1, c2 = st.columns([3, 2])
if top.empty:
    c1.info(no_peak_words_reason(len(frame), float(settings.get("tau", 1.5))))
else:
    c1.dataframe(top, hide_index=True, key="peak_words")
c2.caption("Words the paper reports at peaks, for comparison")
c2.dataframe(compare, hide_index=True, key="compare_words")

st.subheader("Per-trace signals vs correctness")
st.dataframe(frame[["trace_id", "correct", "trace_tokens", "dtr", "peak_ratio", "n_peaks", "mean_mi",
                    "self_certainty", "lowest_group_confidence", "mean_entropy"]], hide_index=True, key="per_trace")
cols = st.columns(3)
for col, (column, label) in zip(cols, (("dtr", "DTR"), ("peak_ratio", "MI peak ratio"), ("trace_tokens", "length"))):
    if reason := scatter_empty_reason(frame, column, label):
        col.caption(reason)
    else:
        col.plotly_chart(signal_vs_correct_figure(frame, column, label), width="stretch", key=f"scatter_{column}")

st.subheader("Binned-accuracy correlation")
n_bins = st.number_input("Quantile bins", 2, 10, 5, key="signals_bins")
table, n_graded = correlation_frame(frame, int(n_bins))
st.caption(f"{n_graded} graded traces: bins by each signal's quantiles, accuracy per bin, Pearson r of bin mean vs "
           "accuracy (paper: DTR r = 0.683, length r = -0.594).")
st.dataframe(table, hide_index=True, key="correlations")
if reason := correlation_empty_reason(table):
    st.caption(reason)
else:
    st.plotly_chart(correlation_bar_figure(table), width="stretch", key="corr_bar")
