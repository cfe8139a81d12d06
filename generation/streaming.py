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

from analysis.answers import extract_answer, grade_trace
from analysis.records import ANSWER, TokenColumns, TokenStep, TraceRecord
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
    # Then the injected tokens apart (budget forcing), so thinking counts stay within the budget.
    columns = replace(columns, phase=token_phases(pieces, request.fmt)).with_forced(outcome.forced_positions)
    thinking, answer = split_reasoning(text, request.fmt)
    extracted = extract_answer(answer, thinking, fmt=request.fmt)
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
        # stopped / failed traces stay ungraded (docs/METHODS.md §7)
        correct=grade_trace(outcome.stop_reason, extracted, request.reference_answer, meta=meta),
        prompt_source=request.prompt_source,
        settings={**request.sampling.to_dict(), "format": request.fmt.to_dict()},
        meta=meta,
    )


class _StoppableThread:
    """A worker thread with a stop event and a done event: the one mechanism behind a live
    generation and a background job. Leaving `with` stops the worker and waits for it."""

    def __init__(self, target: Callable[[], None], name: str):
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=target, name=name, daemon=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._thread.join(_JOIN_TIMEOUT_S)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work is finished (True) or `timeout` seconds pass (False)."""
        return self._done.wait(timeout)


class LiveGeneration(_StoppableThread):
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
        super().__init__(self._work, "thinkscope-generation")
        self.finished: Finished | None = None
        # Read by a UI at its own pace (list appends are atomic), so it never wakes per token:
        # every token in order, when the worker started, and seconds from start to the first answer token.
        self.steps: list[TokenStep] = []
        self.started: float | None = None
        self.answer_started_s: float | None = None

    def start(self) -> "LiveGeneration":
        """Start the worker without tying it to a `with` block (a UI that outlives one script run)."""
        self.started = time.perf_counter()
        return super().start()

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
        start = self.started or time.perf_counter()
        try:
            for step in self._backend.stream(self._request, self._stop, outcome, ignore_eos=self._ignore_eos):
                if step.phase == ANSWER and self.answer_started_s is None:
                    self.answer_started_s = time.perf_counter() - start
                steps.append(step)
                self.steps.append(step)
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
            self._done.set()
            self._queue.put(self.finished)


class BackgroundJob(_StoppableThread):
    """A long job (a sweep, a strategy run) on a thread of its own, so that a UI script run can end,
    rerun and come back to it; the job never touches the UI.

    `work(stop_event, report)` does the job and returns its result; it calls `report(**fields)` to
    publish progress, which a UI reads from `progress` at its own pace. `expected` exceptions are the
    job's clear refusals (kept in `error` without a logged traceback); others are logged too.
    """

    def __init__(self, work: Callable[[threading.Event, Callable[..., None]], Any],
                 expected: tuple[type[BaseException], ...] = (), name: str = "thinkscope-job"):
        self._work = work
        self._expected = expected
        self.progress: dict = {}
        self.result: Any = None
        self.error: BaseException | None = None
        super().__init__(self._run, name)

    def _run(self) -> None:
        try:
            self.result = self._work(self._stop, self._report)
        except Exception as exc:
            if not isinstance(exc, self._expected):
                log.exception("background job failed")
            self.error = exc
        finally:
            self._done.set()

    def _report(self, **fields) -> None:
        # A new dict each time: a reader on another thread always sees one consistent snapshot.
        self.progress = {**self.progress, **fields}

    @property
    def done(self) -> bool:
        return self._done.is_set()


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
