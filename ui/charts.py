"""Plotly figure builders. Pure: data in, figure out; the pages only display them."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from analysis.records import ANSWER, TokenColumns


def token_signal_figure(tokens: TokenColumns) -> go.Figure:
    """Log-probability and entropy per token, with the answer span shaded."""
    positions = np.arange(len(tokens))
    # Escaped: Plotly draws <a href>, <b> and <br> in hover text, and token text is untrusted.
    hover = [html.escape(repr(t)[1:-1][:40]) for t in tokens.text]
    fig = go.Figure()
    fig.add_scatter(x=positions, y=tokens.logprob, name="log p (chosen token)", mode="lines",
                    customdata=hover, hovertemplate="#%{x} %{customdata}<br>log p = %{y:.3f}<extra></extra>")
    fig.add_scatter(x=positions, y=tokens.entropy, name="entropy (nats)", mode="lines", yaxis="y2",
                    customdata=hover, hovertemplate="#%{x} %{customdata}<br>entropy = %{y:.3f}<extra></extra>")
    answer_positions = positions[tokens.phase == ANSWER]
    if answer_positions.size:
        fig.add_vrect(x0=answer_positions[0] - 0.5, x1=positions[-1] + 0.5, fillcolor="green", opacity=0.08,
                      line_width=0, annotation_text="answer", annotation_position="top left")
    fig.update_layout(
        height=300, margin=dict(l=10, r=10, t=30, b=10), hovermode="x unified",
        xaxis_title="token position", yaxis=dict(title="log p"),
        # An overlaying axis defaults to tickmode "sync" (ticks at the primary axis' grid lines: 1.46,
        # 3.28, 5.11 …); "auto" gives round numbers, and its own grid would clash, so it has none.
        yaxis2=dict(title="entropy (nats)", overlaying="y", side="right", rangemode="tozero", tickmode="auto",
                    showgrid=False),
        legend=dict(orientation="h", y=1.12),
    )
    return fig
