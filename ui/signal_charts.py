"""Plotly figures for analysed traces. Pure: data in, figure out."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.trace_signals import TraceAnalysis

_CONTEXT_TOKENS = 6  # tokens either side shown in a hover


def _hover_context(texts: list[str]) -> list[str]:
    """Token plus surrounding text, as plain repr-escaped strings (plotly hovers render some HTML)."""
    def clean(s: str) -> str:
        return repr(s)[1:-1].replace("<", "‹").replace(">", "›")

    out = []
    for i, piece in enumerate(texts):
        before = "".join(texts[max(0, i - _CONTEXT_TOKENS) : i])
        after = "".join(texts[i + 1 : i + 1 + _CONTEXT_TOKENS])
        out.append(f"<b>{clean(piece)}</b><br>…{clean(before[-40:])}[{clean(piece)}]{clean(after[:40])}…")
    return out


def mi_curve_figure(analysis: TraceAnalysis, top_positions=()) -> go.Figure:
    """m_t per token with the IQR threshold and peaks; top_positions (the "most informative" ranking,
    shown when there are no peaks) get their own, differently labelled markers."""
    tokens, summary = analysis.tokens, analysis.summary
    x = np.arange(len(tokens))
    hover = _hover_context(tokens.text)
    fig = go.Figure()
    fig.add_scatter(x=x, y=tokens.mi, mode="lines", name="m_t", customdata=hover,
                    hovertemplate="#%{x} %{customdata}<br>m_t = %{y:.4f}<extra></extra>")
    peaks = np.flatnonzero(tokens.is_peak)
    fig.add_scatter(x=peaks, y=tokens.mi[peaks], mode="markers", name=f"peaks ({peaks.size})",
                    marker=dict(color="#d62728", size=9, symbol="diamond"),
                    customdata=[hover[i] for i in peaks],
                    hovertemplate="#%{x} %{customdata}<br>m_t = %{y:.4f} (peak)<extra></extra>")
    top = np.asarray(top_positions, dtype=np.int64)
    if top.size:
        fig.add_scatter(x=top, y=tokens.mi[top], mode="markers", name=f"top {top.size} m_t (not peaks)",
                        marker=dict(color="#ff7f0e", size=8, symbol="circle-open", line=dict(width=2)),
                        customdata=[hover[i] for i in top],
                        hovertemplate="#%{x} %{customdata}<br>m_t = %{y:.4f} (top-k, below the threshold)<extra></extra>")
    if math.isfinite(summary.mi_threshold):
        tau = analysis.settings.tau
        fig.add_hline(y=summary.mi_threshold, line_dash="dash", line_color="#d62728",
                      annotation_text=f"Q3 + {tau:g}·IQR = {summary.mi_threshold:.3f}", annotation_position="top left")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="token position",
                      yaxis_title="MI m_t (normalized HSIC)", legend=dict(orientation="h", y=1.15))
    return fig


def jsd_heatmap_figure(analysis: TraceAnalysis) -> go.Figure:
    """Layers (1..L, bottom to top) by tokens, JSD to the final layer in nats; settling depth overlaid."""
    tokens, summary = analysis.tokens, analysis.summary
    n_layers = summary.n_layers
    x = np.arange(len(tokens))
    labels = [repr(t)[1:-1].replace("<", "‹").replace(">", "›")[:30] for t in tokens.text]
    fig = go.Figure()
    fig.add_heatmap(z=tokens.jsd_lt, x=x, y=np.arange(1, n_layers + 1), colorscale="Viridis", zmin=0, zmax=math.log(2),
                    colorbar=dict(title="JSD (nats)"), customdata=np.tile(np.asarray(labels, dtype=object), (n_layers, 1)),
                    hovertemplate="#%{x} %{customdata}<br>layer %{y}: JSD = %{z:.3f} nats<extra></extra>")
    fig.add_scatter(x=x, y=tokens.settling_depth, mode="markers", name="settling depth c_t",
                    marker=dict(color="white", size=5, line=dict(color="black", width=1)),
                    customdata=labels, hovertemplate="#%{x} %{customdata}<br>settles at layer %{y}<extra></extra>")
    # The label is an annotation on an opaque box in paper x-coordinates: a plain hline label sits on
    # (and disappears into) the heatmap's colours.
    fig.add_hline(y=summary.deep_band_start - 0.5, line_dash="dot", line_color="white", line_width=2)
    fig.add_annotation(x=0, xref="paper", xanchor="left", y=summary.deep_band_start - 0.5, yanchor="bottom",
                       text=f"deep band ≥ layer {summary.deep_band_start}", showarrow=False,
                       font=dict(color="#111111", size=12), bgcolor="rgba(255,255,255,0.85)",
                       bordercolor="#111111", borderwidth=1, borderpad=2)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="token position",
                      yaxis_title="layer", legend=dict(orientation="h", y=1.12))
    return fig


def signal_vs_correct_figure(frame: pd.DataFrame, column: str, label: str) -> go.Figure:
    """One point per trace: the signal against correctness (jittered), coloured by correctness."""
    fig = go.Figure()
    rng = np.random.default_rng(0)
    for value, name, colour in ((True, "correct", "#2ca02c"), (False, "incorrect", "#d62728")):
        part = frame[frame["correct"] == value]
        fig.add_scatter(x=part[column], y=np.full(len(part), 1.0 if value else 0.0) + rng.uniform(-0.15, 0.15, len(part)),
                        mode="markers", name=name, marker=dict(color=colour), customdata=part["trace_id"],
                        hovertemplate=f"trace %{{customdata}}<br>{label} = %{{x:.3f}}<extra></extra>")
    fig.update_layout(height=240, margin=dict(l=10, r=10, t=30, b=10), title=label, xaxis_title=label,
                      yaxis=dict(tickvals=[0, 1], ticktext=["incorrect", "correct"]), showlegend=False)
    return fig


def correlation_bar_figure(rows: pd.DataFrame) -> go.Figure:
    """Pearson r of binned accuracy vs each signal, side by side (NaN bars are left out)."""
    ok = rows[np.isfinite(rows["r"].astype(float))]
    fig = go.Figure(go.Bar(x=ok["signal"], y=ok["r"], marker_color=np.where(ok["r"] >= 0, "#2ca02c", "#d62728"),
                           hovertemplate="%{x}: r = %{y:.3f}<extra></extra>"))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(range=[-1, 1], title="r"))
    return fig
