"""Live generation: a worker thread decodes and feeds a queue; the caller reads events from it.

The worker always finishes by building a TraceRecord — also when stopped or when it fails — and
hands it to `on_finish` (the caller stores it), so a generation stopped halfway is kept, not lost.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from analysis.answers import extract_answer, grade
from analysis.records import TokenColumns, TokenStep, TraceRecord
from analysis.reasoning import ReasoningFormat, split_reasoning, token_phases
from generation.backends import Backend, StreamOutcome, as_backend
from generation.decoding import DecodeOutcome, SamplingConfig
from generation.models import LoadedModel

log = logging.getLogger(__name__)
_JOIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    sampling: SamplingConfig
    fmt: ReasoningFormat
    reference_answer: str | None = None
    prompt_source: str = "user"

    def __post_init__(self) -> None:
        if not self.prompt or not self.prompt.strip():
            raise ValueError("The prompt is empty: type a question first.")


@dataclass(frozen=True)
class Finished:
    """Last event of a stream: the stored record and whatever `on_finish` returned (e.g. a trace id)."""

    record: TraceRecord
    stored: Any
    error: str | None = None


def build_record(
    request: GenerationRequest,
    model_name: str,
    steps: list[TokenStep],
    outcome: DecodeOutcome,
    latency_s: float,
    error: str | None = None,
) -> TraceRecord:
    pieces = [s.text for s in steps]
    text = "".join(pieces)
    columns = TokenColumns.from_steps(steps)
    # Phases from the finished text, so they agree with the stored thinking/answer split exactly.
    columns = replace(columns, phase=token_phases(pieces, request.fmt))
    thinking, answer = split_reasoning(text, request.fmt)
    extracted = extract_answer(answer, thinking)
    meta: dict = {"raw_text": text}
    if outcome.forced_positions:
        meta["forced_positions"] = outcome.forced_positions
    if error:
        meta["error"] = error
    meta.update(outcome.meta)  # a backend's own notes
    return TraceRecord(
        prompt=request.prompt,
        model=model_name,
        thinking_text=thinking,
        answer_text=answer,
        tokens=columns,
        stop_reason=outcome.stop_reason,
        latency_s=latency_s,
        reference_answer=request.reference_answer or None,
        extracted_answer=extracted,
        correct=grade(extracted, request.reference_answer),
        prompt_source=request.prompt_source,
        settings={**request.sampling.to_dict(), "format": request.fmt.to_dict()},
        meta=meta,
    )


class LiveGeneration:
    """Context manager around one streaming generation.

    with LiveGeneration(loaded, request, on_finish=store) as live:
        for event in live.events():   # TokenStep..., then one Finished
            ...
    Leaving the block (normally, by exception, or by a Streamlit rerun) stops the worker and waits
    for it, so no generation outlives the code that asked for it.
    """

    def __init__(
        self,
        loaded: LoadedModel | Backend,
        request: GenerationRequest,
        on_finish: Callable[[TraceRecord], Any] | None = None,
        ignore_eos: bool = False,
    ):
        self._backend = as_backend(loaded)
        self._request = request
        self._on_finish = on_finish
        self._ignore_eos = ignore_eos
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="thinkscope-generation", daemon=True)
        self.finished: Finished | None = None

    def __enter__(self) -> "LiveGeneration":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._thread.join(_JOIN_TIMEOUT_S)

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def events(self, poll_s: float = 0.05, ticks: bool = False) -> Iterator[TokenStep | Finished | None]:
        """Tokens as they come, then one Finished. With `ticks`, None every `poll_s` without a token,
        so a UI can refresh its clock (and notice a Stop) even while a slow model is between tokens."""
        while True:
            try:
                event = self._queue.get(timeout=poll_s)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return
                if ticks:
                    yield None
                continue
            yield event
            if isinstance(event, Finished):
                return

    def _work(self) -> None:
        steps: list[TokenStep] = []
        outcome = StreamOutcome()
        error = None
        start = time.perf_counter()
        try:
            for step in self._backend.stream(self._request, self._stop, outcome, ignore_eos=self._ignore_eos):
                steps.append(step)
                self._queue.put(step)
        except Exception as exc:  # the record is still stored, marked with the error
            log.exception("generation failed")
            outcome.stop_reason = "error"
            error = f"{type(exc).__name__}: {exc}"
        finally:
            record = build_record(
                self._request, self._backend.name, steps, outcome, time.perf_counter() - start, error
            )
            stored, store_error = None, None
            if self._on_finish is not None:
                try:
                    stored = self._on_finish(record)
                except Exception as exc:
                    log.exception("storing the trace failed")
                    store_error = f"The trace could not be stored: {exc}"
            self.finished = Finished(record, stored, error or store_error)
            self._queue.put(self.finished)


def generate(
    loaded: LoadedModel | Backend,
    request: GenerationRequest,
    on_token: Callable[[TokenStep], None] | None = None,
    on_finish: Callable[[TraceRecord], Any] | None = None,
) -> Finished:
    """Blocking convenience wrapper (CLI, scripts, tests)."""
    with LiveGeneration(loaded, request, on_finish) as live:
        for event in live.events():
            if isinstance(event, Finished):
                return event
            if on_token is not None:
                on_token(event)
    assert live.finished is not None
    return live.finished
