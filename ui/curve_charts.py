"""Plotly figures for the accuracy-vs-length curve. Pure: curves in, figure out."""
from __future__ import annotations

import plotly.graph_objects as go

from analysis.length_curve import CurvePoint, LengthCurve


LABEL_OFFSET_PX = 45  # how far the best / decline labels sit from their point


def _series(fig: go.Figure, points: tuple[CurvePoint, ...], name: str, symbol: str) -> None:
    if not points:
        return
    fig.add_scatter(
        x=[p.mean_tokens for p in points], y=[p.accuracy for p in points], name=name, mode="lines+markers",
        marker=dict(symbol=symbol, size=9),
        error_y=dict(type="data", symmetric=False, array=[p.ci_high - p.accuracy for p in points],
                     arrayminus=[p.accuracy - p.ci_low for p in points]),
        customdata=[[p.label, p.n_correct, p.n, p.ci_low, p.ci_high] for p in points],
        hovertemplate="%{customdata[0]}<br>accuracy %{y:.0%} (%{customdata[1]}/%{customdata[2]})"
                      "<br>95% CI %{customdata[3]:.0%}–%{customdata[4]:.0%}<br>mean thinking %{x:.0f} tokens"
                      "<extra></extra>",
    )


def length_curve_figure(by_budget: LengthCurve, by_length: LengthCurve) -> go.Figure:
    """Accuracy with Wilson 95% intervals against mean thinking tokens: budgets and length quantiles
    on the same axes; the best budget and the decline point marked."""
    fig = go.Figure()
    _series(fig, by_budget.points, "thinking budget (forced)", "circle")
    _series(fig, by_length.points, "free-running, length quantile", "diamond")
    for point, label, colour in ((by_budget.best, "best", "green"), (by_budget.decline, "decline", "red")):
        if point is not None:
            fig.add_scatter(x=[point.mean_tokens], y=[point.accuracy], mode="markers", name=label,
                            hovertemplate=f"{label}: {point.label}<extra></extra>",
                            marker=dict(size=18, color=colour, symbol="star" if label == "best" else "x"))
            # The label sits off the point with an arrow to it: as text on the point it covered the
            # series' own markers and error bars. Best to the left, decline (longer, so further
            # right) to the right, so they never collide; above the point unless it is near the top.
            dx = -LABEL_OFFSET_PX if label == "best" else LABEL_OFFSET_PX
            dy = LABEL_OFFSET_PX if point.accuracy > 0.85 else -LABEL_OFFSET_PX  # pixels, +down
            fig.add_annotation(x=point.mean_tokens, y=point.accuracy, text=f"{label}: {point.label}",
                               showarrow=True, arrowhead=2, arrowcolor=colour, font=dict(color=colour),
                               ax=dx, ay=dy, bgcolor="rgba(255,255,255,0.85)")
    fig.update_layout(
        height=380, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="mean thinking tokens",
        yaxis=dict(title="accuracy", range=[-0.05, 1.05], tickformat=".0%"), legend=dict(orientation="h", y=1.12),
    )
    return fig
