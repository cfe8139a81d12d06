"""Rendering a live generation (thinking streamed in a bounded box, then folded; the answer below) and
following any background job from a script run.

Where the time went before (issue 10): every token woke the script thread, and every redraw re-sent the
whole thinking text as Markdown for the browser to parse again, on the same two cores as the decoder.
Now the script thread sleeps between redraws at a fixed rate, reads the worker's token list, and sends
only the newest piece of text: the box holds frozen segments plus one live segment that is re-sent.
"""
from __future__ import annotations

import time

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

from analysis.records import ANSWER, TokenColumns, TraceRecord
from generation.streaming import Finished, LiveGeneration
from ui.token_view import TOKEN_CSS, text_html, token_spans

REFRESH_S = 0.25  # redraw period: each redraw is one websocket message and one browser render
_SEGMENT_TOKENS = 48  # a live segment is frozen at its first newline past this many tokens...
_MAX_SEGMENT_TOKENS = 192  # ...or here at the latest, so one redraw never re-sends more than this
_BOX_PX = 320  # height of the thinking box (it scrolls, following the newest text)


def follow(job, draw, refresh_s: float = REFRESH_S) -> None:
    """Call `draw()` every `refresh_s` until `job` (LiveGeneration or BackgroundJob) has ended, then once more.

    A rerun (a click anywhere, including the page's Stop) ends this script run but not the job: the next
    run follows it again, or shows its end. Streamlit's own Stop ends the run for good, so it stops the job.
    """
    try:
        while not job.wait(refresh_s):
            draw()
        draw()
    except StopException:
        job.stop()
        raise


def _phase_split(steps) -> int:
    """Index of the first answer token (len(steps) while still thinking)."""
    return next((k for k, s in enumerate(steps) if s.phase == ANSWER), len(steps))


def _columns_html(cols: TokenColumns, start: int, stop: int) -> str:
    part = TokenColumns(cols.token_id[start:stop], cols.text[start:stop], cols.logprob[start:stop],
                        cols.entropy[start:stop], cols.top_ids[start:stop], cols.top_texts[start:stop],
                        cols.top_logprobs[start:stop], cols.phase[start:stop])
    return '<div class="ts-tokens">' + token_spans(part, start) + "</div>"


def _pieces_html(steps, first: int, colour: bool) -> str:
    if colour:
        return '<div class="ts-tokens">' + token_spans(TokenColumns.from_steps(steps), first) + "</div>"
    return text_html("".join(s.text for s in steps))


def thought_label(seconds: float, n_tokens: int) -> str:
    return f"Thought for {seconds:.1f} s, {n_tokens} tokens"


class LiveView:
    """The live layout: label, bounded thinking box, answer. `draw` is cheap to call at a fixed rate."""

    def __init__(self, colour: bool):
        self.colour = colour
        st.html(TOKEN_CSS)
        self.label = st.empty()
        self.thinking = st.empty()
        self.box = self.thinking.container(height=_BOX_PX, border=True, autoscroll=True, gap=None,
                                           key="live_thinking")
        self.segment = self.box.empty()
        self.segment_start = 0  # first token of the live segment
        self.drawn_to = -1  # tokens already in the live segment's last draw
        self.folded = False
        st.markdown("**Answer**")
        self.answer = st.empty()
        self.answer_drawn = -1

    def draw(self, live: LiveGeneration) -> None:
        steps = live.steps[:]  # a snapshot: the worker keeps appending
        n_think = _phase_split(steps)
        elapsed = time.perf_counter() - (live.started or time.perf_counter())
        if not self.folded:
            self._draw_thinking(steps, n_think)
            if n_think < len(steps):
                self._fold(steps[:n_think], live.answer_started_s or elapsed)
            else:
                rate = n_think / elapsed if elapsed > 0 else 0.0
                self.label.markdown(f"**Thinking… {n_think} tokens · {elapsed:.1f} s · {rate:.1f} tok/s**")
        if len(steps) != self.answer_drawn:
            self.answer_drawn = len(steps)
            answer = steps[n_think:]
            self.answer.html(_pieces_html(answer, n_think, self.colour) if answer else text_html("…"))

    def _draw_thinking(self, steps, n_think: int) -> None:
        while True:  # freeze full segments, so only the newest piece is ever re-sent
            start = self.segment_start
            cut = next((k for k in range(start + _SEGMENT_TOKENS - 1, min(n_think, start + _MAX_SEGMENT_TOKENS))
                        if "\n" in steps[k].text), None)
            if cut is None and n_think - start >= _MAX_SEGMENT_TOKENS:
                cut = start + _MAX_SEGMENT_TOKENS - 1
            if cut is None:
                break
            self.segment.html(_pieces_html(steps[start : cut + 1], start, self.colour))
            self.segment_start, self.drawn_to = cut + 1, -1
            self.segment = self.box.empty()
        if n_think != self.drawn_to and n_think > self.segment_start:
            self.drawn_to = n_think
            self.segment.html(_pieces_html(steps[self.segment_start : n_think], self.segment_start, self.colour))

    def _fold(self, thinking_steps, seconds: float) -> None:
        """The answer has started: the thinking folds into one closed expander (sent once)."""
        self.folded = True
        self.label.empty()
        with self.thinking.expander(thought_label(seconds, len(thinking_steps)), expanded=False):
            st.html(_pieces_html(thinking_steps, 0, self.colour) if thinking_steps else text_html("(none)"))

    def final(self, record: TraceRecord, thought_s: float | None) -> None:
        """The ended trace, from its stored record: open if it was stopped, so the partial text shows."""
        self.label.empty()
        draw_record(record, thought_s, self.colour, self.thinking, self.answer)


def draw_record(record: TraceRecord, thought_s: float | None, colour: bool, thinking_slot=None,
                answer_slot=None) -> None:
    """A finished or stopped trace as the Generate page shows it (also on later reruns)."""
    if thinking_slot is None:
        st.html(TOKEN_CSS)
        thinking_slot = st.empty()
    seconds = record.latency_s if thought_s is None else thought_s
    cols = record.tokens
    answer_at = np.flatnonzero(cols.phase == ANSWER)
    n_think = int(answer_at[0]) if answer_at.size else len(cols)
    with thinking_slot.expander(thought_label(seconds, record.n_thinking_tokens),
                                expanded=record.stop_reason == "stopped"):
        with st.container(height=_BOX_PX if len(record.thinking_text) > 1500 else "content", border=False):
            if colour and len(cols):
                st.html(_columns_html(cols, 0, n_think))
            else:
                st.html(text_html(record.thinking_text or "(none)"))
    if answer_slot is None:
        st.markdown("**Answer**")
        answer_slot = st.empty()
    if colour and n_think < len(cols):
        answer_slot.html(_columns_html(cols, n_think, len(cols)))
    else:
        answer_slot.html(text_html(record.answer_text or "(no answer)"))


def stream_to_page(live: LiveGeneration, colour: bool) -> Finished | None:
    """Draw the generation until it ends, then the ended trace in place. A rerun leaves it running."""
    view = LiveView(colour)
    follow(live, lambda: view.draw(live))
    if live.finished is not None:
        view.final(live.finished.record, live.answer_started_s)
        backend_notes(live.finished.record.meta)
    return live.finished


def backend_notes(meta: dict) -> None:
    """What a server backend could not give this trace, said where the trace is shown."""
    if meta.get("logprobs") is False:
        st.info("This server sent no log-probabilities: the trace is stored without them (no token colours "
                "or confidence). Deep-thinking signals can still re-score it with a local model.")
    if meta.get("budget_cut"):
        st.warning(f"Thinking was cut at its budget: {meta['budget_cut']}.")
    if meta.get("partial"):
        st.warning(f"Partial trace, stored as such: {meta.get('stream_error', 'the stream broke')}.")


def follow_with_bar(job, text) -> None:
    """Follow a BackgroundJob with a progress bar that moves with tokens (`job.progress["fraction"]`);
    `text(progress)` words the bar. The bar is removed when the job ends."""
    bar = st.progress(0.0, text="Starting…")

    def draw() -> None:
        progress = job.progress
        words = "Stopping: the batch in progress is dropped…" if job.stopping and not job.done else text(progress)
        bar.progress(min(1.0, max(0.0, progress.get("fraction", 0.0))), text=words)

    follow(job, draw)
    bar.empty()


def stop_job(key: str) -> None:
    """A Stop button's callback: stop the job kept under `key` (it runs before the rerun it causes)."""
    entry = st.session_state.get(key)
    if entry is not None:
        entry[0].stop()
