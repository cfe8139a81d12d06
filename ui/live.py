"""Rendering a live generation: thinking indicator, streamed thinking, streamed answer."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import streamlit as st

from analysis.records import ANSWER, TokenStep
from generation.streaming import Finished, LiveGeneration
from ui.token_view import TOKEN_CSS, text_html

_REFRESH_S = 0.1  # redraw at most this often: each redraw is a websocket message


@dataclass
class StreamCounters:
    """What the thinking indicator shows; updated per token, rendered per refresh."""

    started: float = field(default_factory=time.perf_counter)
    thinking_tokens: int = 0
    answer_tokens: int = 0
    thinking_text: str = ""
    answer_text: str = ""
    thinking_ended_at: float | None = None

    def add(self, step: TokenStep) -> None:
        if step.phase == ANSWER:
            self.answer_tokens += 1
            self.answer_text += step.text
            if self.thinking_ended_at is None:
                self.thinking_ended_at = time.perf_counter()
        else:
            self.thinking_tokens += 1
            self.thinking_text += step.text

    def thinking_label(self) -> str:
        elapsed = (self.thinking_ended_at or time.perf_counter()) - self.started
        if self.thinking_ended_at is not None:
            return f"Thought for {elapsed:.1f} s, {self.thinking_tokens} tokens"
        rate = self.thinking_tokens / elapsed if elapsed > 0 else 0.0
        return f"Thinking… {self.thinking_tokens} tokens · {elapsed:.1f} s · {rate:.1f} tok/s"


def stream_to_page(live: LiveGeneration) -> Finished | None:
    """Draw the generation as it streams. A Streamlit rerun interrupts this; the caller's `with` stops it."""
    st.html(TOKEN_CSS)
    counters = StreamCounters()
    status = st.status(counters.thinking_label(), expanded=True)
    thinking_slot = status.empty()
    st.markdown("**Answer**")
    answer_slot = st.empty()
    last_draw = 0.0
    finished = None
    for event in live.events(ticks=True):
        if isinstance(event, Finished):
            finished = event
            break
        if event is not None:
            counters.add(event)
        now = time.perf_counter()
        if now - last_draw >= _REFRESH_S:
            last_draw = now
            status.update(label=counters.thinking_label())
            thinking_slot.markdown(text_html(counters.thinking_text), unsafe_allow_html=True)
            answer_slot.markdown(text_html(counters.answer_text or "…"), unsafe_allow_html=True)
    if counters.thinking_ended_at is None:
        counters.thinking_ended_at = time.perf_counter()
    thinking_slot.markdown(text_html(counters.thinking_text), unsafe_allow_html=True)
    answer_slot.markdown(text_html(counters.answer_text or "(no answer)"), unsafe_allow_html=True)
    state = "error" if finished is not None and finished.error else "complete"
    status.update(label=counters.thinking_label(), state=state, expanded=False)
    if finished is not None:
        backend_notes(finished.record.meta)
    return finished


def backend_notes(meta: dict) -> None:
    """What a server backend could not give this trace, said where the trace is shown."""
    if meta.get("logprobs") is False:
        st.info("This server sent no log-probabilities: the trace is stored without them (no token colours "
                "or confidence). Deep-thinking signals can still re-score it with a local model.")
    if meta.get("budget_cut"):
        st.warning(f"Thinking was cut at its budget: {meta['budget_cut']}.")
    if meta.get("partial"):
        st.warning(f"Partial trace, stored as such: {meta.get('stream_error', 'the stream broke')}.")
