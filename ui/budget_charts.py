"""The Budgets chart: accuracy against mean thinking tokens for fixed budgets (the L1 curve), the
per-prompt oracle frontier and each policy run over the same prompts. Pure: points in, figure out."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from analysis.budget_oracle import FrontierPoint, PolicyRow


def budget_figure(fixed: Sequence[FrontierPoint], budgets: Sequence[int], frontier: Sequence[FrontierPoint],
                  hull: Sequence[FrontierPoint], policies: Sequence[PolicyRow]) -> go.Figure:
    fig = go.Figure()
    # The exact frontier is a step function: no choice reaches more accuracy before the next point.
    fig.add_scatter(x=[q.mean_cost for q in frontier], y=[q.mean_accuracy for q in frontier], mode="lines+markers",
                    line=dict(shape="hv", color="#2ca02c"), marker=dict(size=6), name="oracle (per-prompt budget)",
                    hovertemplate="oracle: %{y:.0%} at %{x:.0f} thinking tokens per prompt<extra></extra>")
    fig.add_scatter(x=[q.mean_cost for q in hull], y=[q.mean_accuracy for q in hull], mode="lines",
                    line=dict(dash="dot", color="#2ca02c"), name="oracle, concave hull (Lagrangian)",
                    hoverinfo="skip")
    fig.add_scatter(x=[q.mean_cost for q in fixed], y=[q.mean_accuracy for q in fixed], mode="lines+markers+text",
                    text=[str(b) for b in budgets], textposition="top center", marker=dict(size=10, color="#1f77b4"),
                    name="fixed budget (L1)",
                    hovertemplate="budget %{text}: %{y:.0%} at %{x:.0f} thinking tokens per prompt<extra></extra>")
    for row in policies:
        fig.add_scatter(x=[row.mean_thinking_tokens], y=[row.accuracy], mode="markers", name=row.label,
                        marker=dict(size=13, symbol="diamond"),
                        error_y=dict(type="data", symmetric=False, array=[row.ci_high - row.accuracy],
                                     arrayminus=[row.accuracy - row.ci_low]),
                        hovertemplate=f"{row.label}: %{{y:.0%}} at %{{x:.0f}} thinking tokens per prompt<extra></extra>")
    fig.update_layout(xaxis_title="mean thinking tokens per prompt", yaxis_title="accuracy (mean over prompts)",
                      yaxis=dict(range=[-0.05, 1.05], tickformat=".0%"), height=460,
                      legend=dict(orientation="h", y=-0.2), margin=dict(t=30))
    return fig
