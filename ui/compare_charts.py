"""Figures for the Compare page: accuracy against tokens per prompt with the Pareto front, and two
traces' steps aligned side by side. Pure: data in, a figure or escaped HTML out."""
from __future__ import annotations

import html
import math

import pandas as pd
import plotly.graph_objects as go

from analysis.pareto import pareto_front
from analysis.step_alignment import align_steps, word_diff


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def pareto_figure(metrics: pd.DataFrame) -> go.Figure:
    """One point per run (columns: run, accuracy, ci_low, ci_high, tokens_per_prompt) with its
    Wilson 95% interval; the runs on the Pareto front (max accuracy, min tokens) joined by a line."""
    acc = [_num(a) for a in metrics["accuracy"]]
    tok = [_num(t) for t in metrics["tokens_per_prompt"]]
    front = pareto_front(acc, tok)
    on_front = set(front)
    fig = go.Figure()
    for i, row in enumerate(metrics.itertuples(index=False)):
        if acc[i] is None or tok[i] is None:
            continue
        low, high = _num(row.ci_low), _num(row.ci_high)
        fig.add_scatter(
            x=[tok[i]], y=[acc[i]], mode="markers+text", name=row.run, text=[row.run], textposition="top center",
            marker=dict(size=14, symbol="star" if i in on_front else "circle"),
            error_y=dict(type="data", symmetric=False, array=[0 if high is None else high - acc[i]],
                         arrayminus=[0 if low is None else acc[i] - low]),
            hovertemplate=f"{row.run}<br>accuracy %{{y:.0%}}<br>%{{x:.0f}} tokens per prompt"
                          f"<br>{'on' if i in on_front else 'off'} the Pareto front<extra></extra>",
        )
    if front:
        fig.add_scatter(x=[tok[i] for i in front], y=[acc[i] for i in front], mode="lines", name="Pareto front",
                        line=dict(dash="dash", color="grey"), hoverinfo="skip")
    finite = [t for t in tok if t is not None and math.isfinite(t)]
    fig.update_layout(
        height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.15),
        xaxis=dict(title="tokens per prompt (all samples)", rangemode="tozero" if finite else None),
        yaxis=dict(title="accuracy (final answers)", range=[-0.05, 1.1], tickformat=".0%"),
    )
    return fig


_ALIGN_CSS = """<style>
.ts-align { width: 100%; border-collapse: collapse; font-size: 0.88rem; table-layout: fixed; }
.ts-align th { text-align: left; padding: 4px 6px; border-bottom: 1px solid #ccc; }
.ts-align td { vertical-align: top; padding: 3px 6px; border-bottom: 1px solid #eee; white-space: pre-wrap;
               word-break: break-word; }
.ts-align td.same { color: #777; }
.ts-align td.only-left { background: rgba(214, 39, 40, 0.12); }
.ts-align td.only-right { background: rgba(44, 160, 44, 0.14); }
.ts-align mark { background: rgba(255, 200, 0, 0.55); padding: 0; }
</style>"""


def _diff_cell(pieces: list[tuple[str, bool]]) -> str:
    return "".join(f"<mark>{html.escape(p)}</mark>" if differs else html.escape(p) for p, differs in pieces)


def alignment_html(left_name: str, right_name: str, left: list[str], right: list[str]) -> str:
    """Two step lists side by side (analysis.step_alignment): equal steps greyed, changed pairs with
    their differing words marked, steps only one side has shaded. Every text is escaped."""
    rows = align_steps(left, right)
    out = [_ALIGN_CSS, '<table class="ts-align"><colgroup><col style="width:2.5em"><col><col style="width:2.5em">'
           '<col></colgroup><tr><th>#</th><th>', html.escape(left_name), "</th><th>#</th><th>",
           html.escape(right_name), "</th></tr>"]
    for row in rows:
        li = "" if row.left is None else str(row.left + 1)
        ri = "" if row.right is None else str(row.right + 1)
        if row.kind == "equal":
            cells = (f'<td class="same">{html.escape(left[row.left])}</td>',
                     f'<td class="same">{html.escape(right[row.right])}</td>')
        elif row.kind == "changed":
            a, b = word_diff(left[row.left], right[row.right])
            cells = (f"<td>{_diff_cell(a)}</td>", f"<td>{_diff_cell(b)}</td>")
        elif row.kind == "left_only":
            cells = (f'<td class="only-left">{html.escape(left[row.left])}</td>', "<td></td>")
        else:
            cells = ("<td></td>", f'<td class="only-right">{html.escape(right[row.right])}</td>')
        out.append(f'<tr class="{row.kind}"><td>{li}</td>{cells[0]}<td>{ri}</td>{cells[1]}</tr>')
    out.append("</table>")
    same = sum(r.kind == "equal" for r in rows)
    out.append(f'<div style="color:#777;font-size:0.8rem">{same} of {len(rows)} rows identical after normalising</div>')
    return "".join(out)
