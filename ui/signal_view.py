"""The analysis section of the Trace and Generate pages: settings, run with progress, stored results."""
from __future__ import annotations

import numpy as np
import streamlit as st

from analysis.records import TraceRecord
from analysis.trace_signals import LENS_DTYPES, REFERENCE_KINDS, AnalysisSettings, MissingReferenceError, TraceAnalysis
from generation.analyze import analyze_trace
from generation.models import ModelLoadError
from storage.analyses import get_analysis, save_analysis
from storage.config import StorageConfig
from storage.errors import StorageError
from ui.resources import cached_model
from ui.signal_charts import jsd_heatmap_figure, mi_curve_figure
from ui.token_view import ANALYSIS_SIGNALS, analysis_tokens_html

_REFERENCE_LABELS = {"stored": "Stored reference answer", "typed": "Type a reference", "self": "Model's own final answer"}


def settings_form(record: TraceRecord, key: str) -> tuple[str, AnalysisSettings | None]:
    """(analysing model, settings) from the widgets; settings None (with the error shown) if invalid."""
    c1, c2 = st.columns([2, 3])
    model = c1.text_input("Analysing model", record.model, key=f"{key}_model",
                          help="The trace's own model by default; any local causal LM works (the text is re-tokenized).")
    kinds = list(REFERENCE_KINDS)
    default = "stored" if record.reference_answer else "self"
    kind = c2.radio("Reference for MI", kinds, index=kinds.index(default), horizontal=True,
                    format_func=_REFERENCE_LABELS.get, key=f"{key}_reference")
    typed = st.text_input("Reference answer", key=f"{key}_typed") if kind == "typed" else None
    with st.expander("Analysis parameters"):
        p = st.columns(5)
        values = dict(
            sigma=p[0].number_input("MI kernel σ", 1.0, 1000.0, 50.0, 10.0, key=f"{key}_sigma"),
            eps=p[1].number_input("MI ridge ε", 1e-8, 1.0, 1e-5, format="%.0e", key=f"{key}_eps"),
            tau=p[2].number_input("Peak τ (IQR)", 0.0, 10.0, 1.5, 0.5, key=f"{key}_tau"),
            g=p[3].number_input("Settling g (nats)", 0.0, 0.7, 0.5, 0.05, key=f"{key}_g"),
            rho=p[4].number_input("Deep band ρ", 0.05, 1.0, 0.85, 0.05, key=f"{key}_rho"),
            k=int(p[0].number_input("Confidence top-k", 1, 100, 20, key=f"{key}_k")),
            window=int(p[1].number_input("Confidence window", 1, 65536, 2048, key=f"{key}_window")),
            layer=int(p[2].number_input("MI layer (-1 = last block)", -1, 512, -1, key=f"{key}_layer")),
            lens_dtype=p[3].selectbox("Logit-lens matmul", LENS_DTYPES, key=f"{key}_dtype",
                                      help="auto: bfloat16 where the hardware has bf16 units, else float32. "
                                           "bfloat16 is ~3x faster; divergences near g are recomputed in "
                                           "float32, so depths and DTR are exact and only the heatmap "
                                           "carries ~1e-3 nats of rounding."),
        )
    try:
        return model.strip(), AnalysisSettings(reference=kind, typed_reference=typed if kind == "typed" else None, **values)
    except ValueError as exc:
        st.error(str(exc))
        return model.strip(), None


def run_analysis(config: StorageConfig, trace_id: int, record: TraceRecord, model: str,
                 settings: AnalysisSettings) -> TraceAnalysis | None:
    """Load the analysing model, analyse with a progress bar, store; errors are shown, not raised."""
    try:
        loaded = cached_model(model)
    except ModelLoadError as exc:
        st.error(f"Cannot load {model!r} to analyse this trace: {exc} Choose another analysing model.")
        return None
    bar = st.progress(0.0, text="Starting the analysis…")
    try:
        analysis = analyze_trace(loaded, record, settings, progress=lambda f, msg: bar.progress(min(1.0, f), text=msg))
    except ValueError as exc:  # missing reference, empty trace, context too long: messages for people
        bar.empty()
        st.error(str(exc))
        return None
    bar.empty()
    try:
        save_analysis(config, trace_id, analysis)
    except StorageError as exc:
        st.warning(f"The analysis ran but could not be stored: {exc}")
    return analysis


def show_analysis(analysis: TraceAnalysis, key: str, full: bool = True) -> None:
    s = analysis.summary
    st.caption(
        f"Analysed by {analysis.analysis_model} in {analysis.elapsed_s:.1f} s · MI reference: "
        f"{REFERENCE_KINDS[analysis.reference_kind]} — “{analysis.reference_text[:80]}”"
    )
    for note in analysis.notes:
        st.info(note)
    cols = st.columns(7)
    cols[0].metric("MI peaks", f"{s.n_peaks} / {s.n_tokens}", f"ratio {s.peak_ratio:.3f}", delta_color="off")
    cols[1].metric("Mean MI", f"{s.mean_mi:.3f}")
    cols[2].metric("DTR", f"{s.dtr:.3f}", f"deep ≥ layer {s.deep_band_start} of {s.n_layers}", delta_color="off")
    cols[3].metric("Self-certainty", f"{s.self_certainty:.2f}")
    cols[4].metric("Lowest-group conf.", f"{s.lowest_group_confidence:.2f}")
    cols[5].metric("Tail conf.", f"{s.tail_confidence:.2f}")
    cols[6].metric("Mean entropy", f"{s.mean_entropy:.2f} nats")
    t = analysis.tokens
    signal = st.radio("Colour tokens by", list(ANALYSIS_SIGNALS), horizontal=True, key=f"{key}_colour") if full else "MI"
    values = {"MI": t.mi, "settling depth": t.settling_depth, "entropy": t.entropy,
              "log-probability": t.logprob, "confidence": t.confidence}[signal]
    extra = [f"MI {m:.3f} · settles at layer {d} · entropy {e:.2f} · log p {lp:.2f}"
             for m, d, e, lp in zip(t.mi, t.settling_depth, t.entropy, t.logprob)]
    st.caption("Outlined tokens are MI peaks (m_t > Q3 + τ·IQR). Hover a token for its signals.")
    st.html(analysis_tokens_html(t.text, t.phase, np.asarray(values, dtype=float), signal, t.is_peak, extra))
    st.plotly_chart(mi_curve_figure(analysis), width="stretch", key=f"{key}_mi")
    if full:
        st.plotly_chart(jsd_heatmap_figure(analysis), width="stretch", key=f"{key}_jsd")


def analysis_section(config: StorageConfig, trace_id: int, record: TraceRecord) -> None:
    """Trace page: the stored analysis for the chosen model + settings, or a button to run it."""
    st.subheader("Deep-thinking signals")
    model, settings = settings_form(record, key="an")
    if settings is None or not model:
        return
    try:
        stored = get_analysis(config, trace_id, model, settings.key)
    except StorageError as exc:
        st.error(str(exc))
        return
    label = "Re-run analysis" if stored else "Run analysis"
    if st.button(label, type="secondary" if stored else "primary", key="an_run"):
        analysis = run_analysis(config, trace_id, record, model, settings)
    else:
        analysis = stored.analysis if stored else None
        if analysis is None:
            st.caption("Not analysed yet with this model and these settings.")
    if analysis is not None:
        show_analysis(analysis, key="an")


def live_analysis(config: StorageConfig, finished) -> TraceAnalysis | None:
    """Generate page: analyse the trace that just ended with the model that wrote it, show its peaks."""
    record = finished.record
    if not isinstance(finished.stored, int) or len(record.tokens) == 0:
        return None
    kind = "stored" if record.reference_answer else "self"
    try:
        settings = AnalysisSettings(reference=kind)
    except MissingReferenceError as exc:
        st.info(f"Not analysed: {exc}")
        return None
    st.markdown("**MI peaks of this trace**")
    analysis = run_analysis(config, finished.stored, record, record.model, settings)
    if analysis is not None:
        show_analysis(analysis, key="live", full=False)
    return analysis


# --- Signals page: across traces -------------------------------------------------------------

COMPARE_WORDS = ("So", "Hmm", "Wait", "Therefore")
# (column of list_analyses, label); entropy enters negated so that "higher = more confident" for all.
CORRELATED_SIGNALS = (
    ("dtr", "DTR"), ("peak_ratio", "MI peak ratio"), ("mean_mi", "mean MI"), ("self_certainty", "self-certainty"),
    ("neg_mean_entropy", "negative entropy"), ("lowest_group_confidence", "lowest-group confidence"),
    ("tail_confidence", "tail confidence"), ("trace_tokens", "length (tokens)"),
)


def peak_word_frames(words_table, top: int = 20):
    """(top words at peaks, comparison rows for COMPARE_WORDS): counts at peaks and overall."""
    import pandas as pd

    from analysis.signal_correlation import peak_word_counts

    texts = words_table.column("text").to_pylist()
    peaks = np.asarray(words_table.column("is_peak").to_pylist(), dtype=bool)
    at_peaks = peak_word_counts([texts], [peaks])
    overall = peak_word_counts([texts], [np.ones(len(texts), dtype=bool)])
    n_peaks = int(peaks.sum())
    rows = [{"word": w, "at peaks": c, "share of peaks": c / n_peaks if n_peaks else np.nan,
             "occurrences": overall[w], "peak rate": c / overall[w]} for w, c in at_peaks.most_common(top)]
    compare = [{"word": w, "at peaks": at_peaks.get(w, 0), "occurrences": overall.get(w, 0),
                "peak rate": at_peaks.get(w, 0) / overall[w] if overall.get(w) else np.nan} for w in COMPARE_WORDS]
    return pd.DataFrame(rows), pd.DataFrame(compare)


def correlation_frame(frame, n_bins: int):
    """Binned-accuracy Pearson r per signal (METHODS item 2 protocol), on graded traces only."""
    import pandas as pd

    from analysis.signal_correlation import CorrelationSettings, binned_signal_correlation

    graded = frame[frame["correct"].notna()].copy()
    graded["neg_mean_entropy"] = -graded["mean_entropy"].astype(float)
    rows = []
    for column, label in CORRELATED_SIGNALS:
        result = binned_signal_correlation(graded[column].astype(float).to_numpy(), graded["correct"].astype(bool).to_numpy(),
                                           CorrelationSettings(n_bins=n_bins))
        rows.append({"signal": label, "r": result.r, "why no r": result.reason or "",
                     "bin accuracy": ", ".join("–" if np.isnan(a) else f"{a:.2f}" for a in result.accuracy),
                     "traces": int(result.counts.sum())})
    return pd.DataFrame(rows), len(graded)
