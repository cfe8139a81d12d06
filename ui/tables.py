"""Tables and figures as people read them: the columns they look for first, numbers formatted,
columns with no value dropped, and a sentence instead of an empty table. Every page's tables go
through `show_table`; counts and rates through the `*_text` helpers ("—" when unknown)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import streamlit as st

# kind -> (column_config factory, default printf format). Formats follow Streamlit's NumberColumn.
_NUMBER_FORMATS = {
    "int": "%d",
    "float": "%.2f",
    "float1": "%.1f",
    "float4": "%.4f",
    "percent": "percent",  # 0.3333 -> 33.33%
    "seconds": "%.2f s",
    "rate": "%.1f",
    "usd": "$%.6f",  # a few hundred tokens cost a ten-thousandth of a dollar
    "sci": "scientific",  # E3 is accuracy² / tokens: 1.2E-3 reads better than 0.0012
}
KINDS = (*_NUMBER_FORMATS, "text", "long_text", "bool", "datetime", "link")


@dataclass(frozen=True)
class Col:
    """One shown column: `name` in the frame, its header, how its values read."""

    name: str
    label: str
    kind: str = "text"
    width: str | int | None = None  # "small" | "medium" | "large" or pixels; None fits the content
    help: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if not (self.width in (None, "small", "medium", "large") or (isinstance(self.width, int) and self.width > 0)):
            raise ValueError(f"column {self.name!r}: width must be small, medium, large or pixels")

    def config(self):
        cc = st.column_config
        if self.kind in _NUMBER_FORMATS:
            return cc.NumberColumn(self.label, format=_NUMBER_FORMATS[self.kind], width=self.width, help=self.help)
        if self.kind == "bool":
            return cc.CheckboxColumn(self.label, width=self.width, help=self.help)
        if self.kind == "datetime":
            return cc.DatetimeColumn(self.label, format="YYYY-MM-DD HH:mm", width=self.width, help=self.help)
        if self.kind == "link":
            return cc.LinkColumn(self.label, display_text="open", width=self.width, help=self.help)
        return cc.TextColumn(self.label, width=self.width or ("large" if self.kind == "long_text" else None),
                             help=self.help)


def _is_empty(series: pd.Series) -> bool:
    values = series.dropna()
    if values.empty:
        return True
    return values.map(lambda v: isinstance(v, str) and not v.strip()).all()


def shown_columns(frame: pd.DataFrame, columns: Sequence[Col]) -> list[Col]:
    """The columns that will be shown, in order: those in the frame with at least one value."""
    return [c for c in columns if c.name in frame.columns and not _is_empty(frame[c.name])]


def show_table(frame: pd.DataFrame | Sequence[dict], columns: Sequence[Col], *, empty: str, key: str | None = None,
               container=None, **dataframe_kwargs):
    """`frame` with only `columns`, in their order (put the ones people look for first), formatted;
    columns without a single value are left out. An empty frame shows `empty` (one sentence saying
    why) instead, and returns None; otherwise st.dataframe's return value (a selection, if asked)."""
    target = container or st
    frame = pd.DataFrame(frame) if not isinstance(frame, pd.DataFrame) else frame
    if frame.empty:
        target.info(empty)
        return None
    shown = shown_columns(frame, columns)
    dataframe_kwargs.setdefault("hide_index", True)
    dataframe_kwargs.setdefault("width", "stretch")
    dataframe_kwargs.setdefault("placeholder", "—")  # a missing value, not the word "None"
    return target.dataframe(
        frame, key=key, column_order=[c.name for c in shown], column_config={c.name: c.config() for c in shown},
        **dataframe_kwargs,
    )


# --- single values ------------------------------------------------------------------------------


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def seconds_text(seconds: float | None) -> str:
    """"12.3 s", or "—" when not measured (imported traces have no timing)."""
    return f"{seconds:.1f} s" if _known(seconds) and seconds > 0 else "—"


def rate_text(tokens: int, seconds: float | None) -> str:
    return f"{tokens / seconds:.1f} tok/s" if tokens > 0 and _known(seconds) and seconds > 0 else "—"


def token_count_text(n_thinking: int, n_answer: int, n_forced: int = 0, n_tokens: int | None = None) -> str:
    """"128 thinking + 4 forced + 20 answer"; "—" when the trace has no per-token data."""
    if n_tokens == 0 or (n_tokens is None and n_thinking + n_answer + n_forced == 0):
        return "—"
    parts = [f"{n_thinking} thinking"] + ([f"{n_forced} forced"] if n_forced else []) + [f"{n_answer} answer"]
    return " + ".join(parts)


# --- the trace list (Traces page) ---------------------------------------------------------------

# What people look for first (grade, prompt, answers, lengths, how it ended) fits in the main
# column at a 1,400 px window (about 940 px); model and date follow.
TRACE_COLUMNS = (
    Col("trace_id", "id", "int", width=50),
    Col("correct", "correct", width=75),
    Col("prompt", "prompt", width=250),
    Col("extracted_answer", "answer", width=90),
    Col("reference_answer", "reference", width=80),
    Col("n_thinking_tokens", "thinking", "int", width=70, help="sampled thinking tokens"),
    Col("n_forced", "forced", "int", width=60, help="tokens injected by budget forcing, not sampled"),
    Col("n_answer_tokens", "answer tok.", "int", width=75),
    Col("stop_reason", "ended", width=85),
    Col("tokens_per_s", "tok/s", "rate", width=55),
    Col("model", "model", width=170),
    Col("created_at", "created (UTC)", "datetime", width=130),
)


def trace_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """storage.traces.list_traces rows as shown: forced tokens counted apart, unknown speeds empty
    (imported text has no timing), the embedded model's name short."""
    rows = frame.copy()
    if rows.empty:
        return rows
    forced = rows["n_tokens"] - rows["n_thinking_tokens"] - rows["n_answer_tokens"]
    rows["n_forced"] = forced.where(forced > 0)
    has_tokens = rows["n_tokens"] > 0  # imported as text: counts unknown, not zero
    for name in ("n_thinking_tokens", "n_answer_tokens"):
        rows[name] = rows[name].where(has_tokens)
    rows["tokens_per_s"] = rows["tokens_per_s"].where(rows["tokens_per_s"] > 0)
    rows["model"] = rows["model"].astype(str).str.replace("embedded:", "", regex=False)
    return rows


# --- strategy runs (Strategies page) ------------------------------------------------------------


def run_columns(cost_column: str) -> tuple[Col, ...]:
    """Strategy runs (storage.runs.list_runs, docs/METHODS.md §6): what a run is judged by first."""
    return (
        Col("run_id", "run", "int", width=50),
        Col("strategy", "strategy", width=140),
        Col("accuracy", "accuracy", "percent", width=85, help="of the selected answer, per query"),
        Col("e3", "E3", "sci", width=80, help="accuracy² / total tokens per query"),
        Col("ock_score", "OckScore", "float", width=80, help="accuracy% − 10 ln(tokens per query / 10000 + 1)"),
        Col(cost_column, "cost", "usd", width=90, help=cost_column),
        Col("total_tokens_per_query", "tokens / query", "float1", width=100),
        Col("n_traces", "traces", "int", width=60),
        Col("model", "model", width=170),
        Col("mean_thinking_tokens", "thinking / sample", "float1", width=115),
        Col("mean_answer_tokens", "answer / sample", "float1", width=110),
        Col("mean_latency_s", "latency / sample", "seconds", width=110),
        Col("tokens_per_s", "tok/s", "rate", width=60),
        Col("outcome_efficiency", "outcome eff.", "percent", width=90),
        Col("n_ties", "ties", "int", width=50, help="votes tied; the first answer seen wins"),
        Col("n_not_finished", "not finished", "int", width=90),
        Col("created_at", "created (UTC)", "datetime", width=130),
    )


_MARKDOWN_PUNCTUATION = frozenset("\\`*_{}[]()#+-.!|<>~$:&")


def md_text(text: str) -> str:
    """Untrusted text for an element that renders Markdown (st.error, st.caption): every Markdown
    character backslash-escaped, so a quoted image is not fetched and a quoted link is not live."""
    return "".join("\\" + ch if ch in _MARKDOWN_PUNCTUATION else ch for ch in str(text))
