"""The analysis section of the Trace and Generate pages: settings, run with progress, stored results."""
from __future__ import annotations

import numpy as np
import streamlit as st

from analysis.records import TraceRecord
from analysis.trace_signals import (
    LENS_DTYPES,
    REFERENCE_KINDS,
    TOP_INFORMATIVE_K,
    AnalysisSettings,
    MissingReferenceError,
    TraceAnalysis,
    top_informative,
)
from generation.analyze import analyze_trace, choose_analysis_model
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
    c1, c2, c3 = st.columns([4, 5, 2])
    model = c1.text_input("Analysing model", record.model, key=f"{key}_model",
                          help="The trace's own model by default; any local causal LM works (the text is re-tokenized).")
    kinds = list(REFERENCE_KINDS)
    default = "stored" if record.reference_answer else "self"
    kind = c2.radio("Reference for MI", kinds, index=kinds.index(default), horizontal=True,
                    format_func=_REFERENCE_LABELS.get, key=f"{key}_reference")
    tau = c3.number_input("Peak τ (IQR)", 0.0, 10.0, 1.5, 0.25, key=f"{key}_tau",
                          help="MI peaks: m_t > Q3 + τ·IQR over this trace. Lower it to see more peaks.")
    typed = st.text_input("Reference answer", key=f"{key}_typed") if kind == "typed" else None
    with st.expander("Analysis parameters"):
        p = st.columns(4)
        values = dict(
            tau=tau,
            sigma=p[0].number_input("MI kernel σ", 1.0, 1000.0, 50.0, 10.0, key=f"{key}_sigma"),
            eps=p[1].number_input("MI ridge ε", 1e-8, 1.0, 1e-5, format="%.0e", key=f"{key}_eps"),
            g=p[2].number_input("Settling g (nats)", 0.0, 0.7, 0.5, 0.05, key=f"{key}_g"),
            rho=p[3].number_input("Deep band ρ", 0.05, 1.0, 0.85, 0.05, key=f"{key}_rho"),
            k=int(p[0].number_input("Confidence top-k", 1, 100, 20, key=f"{key}_k")),
            window=int(p[1].number_input("Confidence window", 1, 65536, 2048, key=f"{key}_window")),
            layer=int(p[2].number_input("MI layer (-1 = last block)", -1, 512, -1, key=f"{key}_layer")),
            lens_dtype=p[3].selectbox("Logit-lens matmul", LENS_DTYPES, key=f"{key}_dtype",
                                      help="float32: exact. bfloat16: bf16 inputs, float32 output; fast on "
                                           "CUDA GPUs, float32 speed elsewhere. Divergences within 0.05 nats "
                                           "of g are recomputed in float32 and random others spot-checked: "
                                           "depths and DTR match float32 unless an unchecked entry errs by "
                                           "more than 0.05 nats (sampled, not certified). "
                                           "auto: bfloat16 on CUDA GPUs, else float32."),
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
    # One wrapping row, each metric as wide as its text: seven fixed columns cut "deep ≥ layer 2…".
    row = st.container(horizontal=True, gap="medium")
    for label, value, delta in (
        ("MI peaks", f"{s.n_peaks} / {s.n_tokens}", f"ratio {s.peak_ratio:.3f}"),
        ("Mean MI", f"{s.mean_mi:.3f}", None),
        ("DTR", f"{s.dtr:.3f}", f"deep ≥ layer {s.deep_band_start} of {s.n_layers}"),
        ("Self-certainty", f"{s.self_certainty:.2f}", None),
        ("Lowest-group conf.", f"{s.lowest_group_confidence:.2f}", None),
        ("Tail conf.", f"{s.tail_confidence:.2f}", None),
        ("Mean entropy", f"{s.mean_entropy:.2f} nats", None),
    ):
        row.metric(label, value, delta, delta_color="off", delta_arrow="off", width="content")
    t = analysis.tokens
    signal = st.radio("Colour tokens by", list(ANALYSIS_SIGNALS), horizontal=True, key=f"{key}_colour") if full else "MI"
    values = {"MI": t.mi, "settling depth": t.settling_depth, "entropy": t.entropy,
              "log-probability": t.logprob, "confidence": t.confidence}[signal]
    extra = [f"MI {m:.3f} · settles at layer {d} · entropy {e:.2f} · log p {lp:.2f}"
             for m, d, e, lp in zip(t.mi, t.settling_depth, t.entropy, t.logprob)]
    top = top_informative(t.mi) if s.n_peaks == 0 else np.empty(0, np.int64)
    if s.n_peaks:
        st.caption("Outlined tokens are MI peaks (m_t > Q3 + τ·IQR). Hover a token for its signals.")
    else:
        st.info(no_peaks_message(analysis, "above" if full else "on the Trace page"))
    st.html(analysis_tokens_html(t.text, t.phase, np.asarray(values, dtype=float), signal, t.is_peak, extra))
    st.plotly_chart(mi_curve_figure(analysis, top), width="stretch", key=f"{key}_mi")
    if top.size:
        st.markdown(f"**Most informative tokens (top {top.size} by m_t) — a ranking, not IQR peaks**")
        st.dataframe(top_informative_frame(analysis, top), hide_index=True, key=f"{key}_top")
    if full:
        st.plotly_chart(jsd_heatmap_figure(analysis), width="stretch", key=f"{key}_jsd")


def no_peaks_message(analysis: TraceAnalysis, where: str = "above") -> str:
    """Why the peak outlines are missing, with the numbers (docs/METHODS.md §1)."""
    s, mi = analysis.summary, analysis.tokens.mi
    finite = mi[np.isfinite(mi)]
    if not finite.size:
        return "No MI peaks: this trace has no finite MI value, so the IQR rule has nothing to rank."
    return (f"No token passes the IQR peak rule: the largest m_t is {finite.max():.4f}, not above the threshold "
            f"Q3 + τ·IQR = {s.mi_threshold:.4f} (τ = {analysis.settings.tau:g}). Lower τ {where} and run the "
            f"analysis again to see peaks; the {min(TOP_INFORMATIVE_K, finite.size)} most informative tokens "
            "are listed below instead.")


def top_informative_frame(analysis: TraceAnalysis, positions: np.ndarray):
    """Rows for the top-k view: position, token (as text), m_t, and its context."""
    import pandas as pd

    t = analysis.tokens
    return pd.DataFrame({
        "position": positions,
        "token": [repr(t.text[i])[1:-1] for i in positions],
        "m_t": np.round(t.mi[positions], 4),
        "context": ["".join(t.text[max(0, i - 6): i + 7]).replace("\n", " ") for i in positions],
    })


def analysis_section(config: StorageConfig, trace_id: int, record: TraceRecord) -> None:
    """Trace page: the stored analysis for the chosen model + settings, or a button to run it."""
    st.subheader("Deep-thinking signals")
    key = "an"
    forget_widgets_on_new_trace(key, trace_id)
    model, settings = settings_form(record, key=key)
    if settings is None or not model:
        return
    try:
        stored = get_analysis(config, trace_id, model, settings.key)
    except StorageError as exc:
        st.error(str(exc))
        return
    label = "Re-run analysis" if stored else "Run analysis"
    # A model named only by the trace (maybe an imported file) is loaded only once the user says so.
    choice = choose_analysis_model(record.model, None if model == record.model else model)
    if choice.needs_confirmation:
        st.warning(choice.message)
    confirmed = not choice.needs_confirmation or st.checkbox(f"Load {model} to analyse this trace", key=f"{key}_confirm")
    if st.button(label, type="secondary" if stored else "primary", key=f"{key}_run", disabled=not confirmed):
        analysis = run_analysis(config, trace_id, record, model, settings)
    else:
        analysis = stored.analysis if stored else None
        if analysis is None:
            st.caption("Not analysed yet with this model and these settings.")
    if analysis is not None:
        show_analysis(analysis, key=key)


def forget_widgets_on_new_trace(key: str, trace_id: int) -> None:
    """Reset the section's widgets when another trace is shown, so that the analysing model and the
    reference chosen for one trace never carry over to the next (they default from the trace)."""
    marker = f"{key}__trace"
    if st.session_state.get(marker) != trace_id:
        for name in [k for k in st.session_state if isinstance(k, str) and k.startswith(f"{key}_")]:
            del st.session_state[name]
        st.session_state[marker] = trace_id


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
    """Binned-accuracy Pearson r per signal (docs/METHODS.md §2 protocol), on graded traces only."""
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


# One sentence for each table or chart of the Signals page that can come out empty.

def no_peak_words_reason(n_traces: int, tau: float) -> str:
    return (f"No MI peaks in these {n_traces} analysed traces (IQR rule, τ = {tau:g}), so no word can be counted at "
            "one. Lower τ on the Trace page and analyse again, or read each trace's most informative tokens there.")


def scatter_empty_reason(frame, column: str, label: str) -> str | None:
    """Why the signal-vs-correctness chart for `column` would show no point, or None if it shows some."""
    graded = frame[frame["correct"].notna()]
    if graded.empty:
        return f"{label}: no point, because none of these traces is graded (no reference answer, or not finished)."
    if not np.isfinite(graded[column].astype(float)).any():
        return f"{label}: no point, because no graded trace has a value for it."
    return None


def correlation_empty_reason(table) -> str | None:
    """Why the correlation bar chart has no bar, or None if it has one."""
    if np.isfinite(table["r"].astype(float)).any():
        return None
    reasons = [r for r in table["why no r"] if r]
    return "No bar: no signal has a correlation yet" + (f" ({reasons[0]})." if reasons else ".")

