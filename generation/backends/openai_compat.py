"""A backend that generates through an OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama,
`transformers serve`).

Client: the `openai` package, with its own retries off. It parses chunks (standard and extra
fields such as `reasoning_content`), owns timeouts and connection pooling, and is the reference
client for the API; retries are ours so that a backoff wait ends the moment the user presses Stop.

Two ways to talk to the server:
- chat: /v1/chat/completions. The server applies the chat template; reasoning may arrive in
  `delta.reasoning_content`, `delta.reasoning` or as tags inside `delta.content`. The text cannot be
  continued, so a thinking budget can only cut thinking short, not force an answer.
- completions (when `template` names a local tokenizer): the prompt is rendered here with that
  tokenizer's chat template and sent to /v1/completions, so a generation can be continued from any
  text: s1 budget forcing (forced end of thinking, "Wait") works as with the local model.

What is stored: one TokenStep per server chunk, or per token when the server sends log-probabilities
(token ids are -1: the server does not send them; entropy is unknown). record.meta["backend"] says
where it came from; meta["logprobs"] is False when the server sent none. The API key is read from
the environment when the client is made and is never stored anywhere; credentials inside the base
URL (user:password@, api_key=...) are redacted from everything stored, shown or raised.

Nothing hangs: a generation that gets no new token for `stall_timeout_s` (a server sending only
keep-alive comments, empty chunks, or nothing at all) or outlives `deadline_s` is closed and stored
as a partial trace (meta["partial"], meta["timeout"], meta["stream_error"] says why).
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

from analysis.reasoning import PhaseTracker, ReasoningFormat, find_boundary
from analysis.records import ANSWER, TOP_K_ALTERNATIVES, TokenStep, TraceRecord
from generation.backends.base import Capabilities, Progress, StreamOutcome
from generation.backends.openai_config import DEFAULT_API_KEY_ENV, OpenAIConfig, RemoteError, redact_text
from generation.backends.openai_wire import (
    Piece,
    Stopped,
    Watchdog,
    broken_stream_text,
    chat_pieces,
    close_on_stop,
    completion_pieces,
    load_template,
    not_an_event_stream,
    retry_after,
    status_text,
)
from generation.batch import BatchRow, BatchSettings, BudgetForcing
from generation.decoding import SamplingConfig
from generation.prompting import chat_messages, detect_format, render_prompt
from generation.streaming import GenerationRequest, build_record

__all__ = ["DEFAULT_API_KEY_ENV", "OpenAIBackend", "OpenAIConfig", "RemoteError"]


@dataclass
class _RowState:
    """One generation as it grows: its steps, budgets and the forcing done so far."""

    fmt: ReasoningFormat
    budget: int
    k: int | None = None  # alternatives per step; fixed by the first piece (every step needs the same K)
    steps: list[TokenStep] = field(default_factory=list)
    tracker: PhaseTracker | None = None
    n_thinking: int = 0
    n_answer: int = 0
    saw_reasoning_field: bool = False
    closed_reasoning: bool = False
    logprobs_seen: bool = False
    forced: list[int] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    forced_end_at: int | None = None
    chunks: int = 0  # chunks received, with or without text

    def __post_init__(self) -> None:
        self.tracker = PhaseTracker(self.fmt)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    def add(self, text: str, logprob: float = math.nan, top: tuple = (), forced: bool = False) -> TokenStep:
        if self.k is None:
            self.k = min(len(top), TOP_K_ALTERNATIVES)
        top = tuple(top[: self.k]) + (("", math.nan),) * (self.k - min(len(top), self.k))
        phase = self.tracker.feed(text)
        step = TokenStep(position=len(self.steps), token_id=-1, text=text, logprob=logprob, entropy=math.nan,
                         top_ids=(-1,) * self.k, top_texts=tuple(t for t, _ in top),
                         top_logprobs=tuple(float(lp) for _, lp in top), phase=phase)
        if forced:
            self.forced.append(len(self.steps))
        self.steps.append(step)
        if phase == ANSWER:
            self.n_answer += 1
        else:
            self.n_thinking += 1
        return step

    def cut_at_delimiter(self) -> None:
        """Take the end-of-thinking delimiter (and any step overlapping it) out, as the local sampler does."""
        boundary = find_boundary(self.text, self.fmt)
        cut = boundary.think_end if boundary is not None else len(self.text)
        kept, end = [], 0
        for s in self.steps:
            if end + len(s.text) > cut:
                break
            kept.append(s)
            end += len(s.text)
        self.removed.append(self.text[end:])
        self.steps = []
        self.tracker, self.n_thinking, self.n_answer = PhaseTracker(self.fmt), 0, 0
        forced = set(self.forced)
        self.forced = []
        for k, s in enumerate(kept):
            self.add(s.text, s.logprob, tuple(zip(s.top_texts, s.top_logprobs)), forced=k in forced)


class OpenAIBackend:
    """Generation through an OpenAI-compatible server; see the module docstring."""

    def __init__(self, config: OpenAIConfig):
        import openai

        self.config = config
        self._openai = openai
        self._client = openai.OpenAI(base_url=config.base_url, api_key=config.api_key(), max_retries=0,
                                     timeout=openai.Timeout(config.timeout_s, connect=config.connect_timeout_s))
        self._tokenizer = load_template(config.template) if config.template else None
        self.name = config.model or self._first_model()
        self.capabilities = Capabilities(logprobs=config.logprobs, full_distribution=False, token_ids=False,
                                         budget_forcing=self._tokenizer is not None, hidden_states=False)

    # -- Backend interface -------------------------------------------------------------------------

    def default_format(self) -> ReasoningFormat:
        if self._tokenizer is not None:

            return detect_format(self._tokenizer)
        # Reasoning servers send thinking apart or inside <think>; plain models then just answer.
        return ReasoningFormat(kind="think_tags")

    def stream(self, request: GenerationRequest, stop_event: threading.Event, outcome: StreamOutcome,
               ignore_eos: bool = False) -> Iterator[TokenStep]:
        state = _RowState(request.fmt, request.sampling.max_thinking_tokens)
        outcome.meta["backend"] = self.config.describe()
        try:
            yield from self._generate(request.prompt, state, request.sampling, BudgetForcing(), stop_event, outcome,
                                      ignore_eos)
        finally:
            self._finish_meta(state, outcome)

    def sample(self, rows: Sequence[BatchRow], fmt: ReasoningFormat, settings: BatchSettings,
               stop_event: threading.Event | None = None, progress: Progress | None = None) -> list[TraceRecord]:
        """Every row as its own request, `concurrency` at a time; one record per row, in row order.
        Progress is reported from the calling thread (Streamlit widgets only work there)."""
        if len(rows) == 0:
            raise ValueError("N must be at least 1: nothing to generate")
        if any(r.prefix_ids for r in rows):
            raise ValueError("rows with token prefixes need token ids, which a server does not send")
        if settings.early_stop is not None or settings.step_delimiter is not None:
            raise ValueError("early stopping and step delimiters need local logits; use the local backend")
        stop_event = stop_event or threading.Event()
        # The rows watch `cancel`: set by a Stop, and also when the caller is interrupted (a Streamlit
        # rerun raises inside `progress`), so no request outlives the call that asked for it.
        cancel = threading.Event()
        tokens = [0] * len(rows)
        records: list[TraceRecord | None] = [None] * len(rows)
        with ThreadPoolExecutor(min(self.config.concurrency, len(rows)), "thinkscope-remote") as pool:
            futures = {pool.submit(self._sample_row, k, row, fmt, settings, cancel, tokens, len(rows)): k
                       for k, row in enumerate(rows)}
            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                    if stop_event.is_set():
                        cancel.set()
                    for fut in finished:
                        records[futures[fut]] = fut.result()
                    if progress is not None:
                        progress(len(rows) - len(pending), len(rows), sum(tokens))
            except BaseException:
                cancel.set()
                raise
        return [r for r in records if r is not None]

    # -- one generation ------------------------------------------------------------------------

    def _sample_row(self, k: int, row: BatchRow, fmt: ReasoningFormat, settings: BatchSettings,
                    stop_event: threading.Event, tokens: list[int], batch_size: int) -> TraceRecord:
        sampling = settings.sampling
        budget = row.max_thinking_tokens or sampling.max_thinking_tokens
        # Each row its own seed, else N samples of one prompt would all be the same sample.
        sampling = replace(sampling, max_thinking_tokens=budget,
                           seed=None if sampling.seed is None else sampling.seed + k)
        state = _RowState(fmt, budget)
        outcome = StreamOutcome(meta={"backend": self.config.describe()})
        start = time.perf_counter()
        error = None
        try:
            for _ in self._generate(row.prompt, state, sampling, settings.forcing, stop_event, outcome,
                                    settings.ignore_eos):
                tokens[k] += 1
        except Exception as exc:  # kept as a marked trace, like the local worker does
            outcome.stop_reason = "error"
            error = f"{type(exc).__name__}: {exc}"
        self._finish_meta(state, outcome)
        request = GenerationRequest(row.prompt, sampling, fmt, row.reference_answer, row.prompt_source)
        record = build_record(request, self.name, state.steps, outcome, time.perf_counter() - start, error)
        record.settings.update(min_thinking_tokens=settings.forcing.min_thinking_tokens,
                               max_waits=settings.forcing.max_waits, wait_text=settings.forcing.wait_text,
                               concurrency=self.config.concurrency)
        record.meta.update(batch_size=batch_size, wait_positions=list(state.waits),
                           removed_delimiters=list(state.removed), forced_end_position=state.forced_end_at)
        return record

    def _finish_meta(self, state: _RowState, outcome: StreamOutcome) -> None:
        outcome.forced_positions = list(state.forced)
        outcome.meta["logprobs"] = state.logprobs_seen
        if state.saw_reasoning_field:
            outcome.meta["reasoning_field"] = True  # thinking arrived apart; its delimiters were added here
        if not state.logprobs_seen:
            outcome.meta["token_boundaries"] = "server chunks (no log-probabilities sent)"

    def _generate(self, prompt: str, state: _RowState, sampling: SamplingConfig, forcing: BudgetForcing,
                  stop_event: threading.Event, outcome: StreamOutcome, ignore_eos: bool) -> Iterator[TokenStep]:
        """Segments until the generation ends: each request runs until the end, a budget, or a forcing
        point; with prefix continuation the next request continues from the text so far."""
        fmt = state.fmt
        can_force = self._tokenizer is not None
        inject: str | None = None
        outcome.stop_reason = "error"
        watchdog = Watchdog(self.config.stall_timeout_s, self.config.deadline_s)
        while True:
            if stop_event.is_set():
                outcome.stop_reason = "stopped"
                return
            if inject is not None:
                yield state.add(inject, forced=True)
                inject = None
            think_left = 0 if state.tracker.in_answer else max(state.budget - state.n_thinking, 0)
            max_tokens = think_left + sampling.max_answer_tokens - state.n_answer
            try:
                stream = self._open(prompt, state, sampling, max_tokens, stop_event, outcome, ignore_eos, watchdog)
            except Stopped:
                outcome.stop_reason = "stopped"
                return
            finish = None
            chunks_before = state.chunks
            with close_on_stop(stop_event, stream, watchdog):
                try:
                    for piece, reason in self._pieces(stream, state):
                        finish = reason or finish  # a trailing chunk (usage) must not erase it
                        if piece is None:
                            continue
                        watchdog.progress()
                        yield from self._add_piece(state, piece)
                        if state.n_answer >= sampling.max_answer_tokens:
                            outcome.stop_reason = "max_tokens"
                            return
                        if not state.tracker.in_answer and state.n_thinking >= state.budget:
                            if not can_force or state.forced_end_at is not None:
                                outcome.stop_reason = "max_tokens"
                                if not can_force:
                                    outcome.meta["budget_cut"] = ("thinking reached its budget and was cut: this "
                                                                  "server cannot continue a prefix to force an answer")
                                return
                            state.forced_end_at = len(state.steps)
                            inject = fmt.forced_end_text
                            break
                        if (can_force and state.tracker.in_answer and state.forced_end_at is None
                                and forcing.may_wait(state.n_thinking, len(state.waits))):
                            state.cut_at_delimiter()
                            inject = forcing.wait_piece(state.text)
                            state.waits.append(len(state.steps))
                            break
                except Exception as exc:
                    if stop_event.is_set():
                        outcome.stop_reason = "stopped"
                        return
                    kind = watchdog.fired or watchdog.expired()
                    raise self._partial(outcome, state, watchdog.describe(kind) if kind else
                                        broken_stream_text(exc, len(state.steps)), kind) from exc
            if inject is not None:
                continue
            if stop_event.is_set():
                outcome.stop_reason = "stopped"
                return
            if watchdog.fired:  # the watcher closed the stream, which may then end without an error
                raise self._partial(outcome, state, watchdog.describe(watchdog.fired), watchdog.fired)
            if finish is None:
                got = state.chunks - chunks_before
                ctype = (stream.response.headers.get("content-type") or "no Content-Type").split(";")[0]
                raise self._partial(outcome, state, (
                    f"the server closed the stream after {len(state.steps)} tokens without a finish reason"
                    if got else f"the server's answer ({ctype}) held no chat chunks: it is not an OpenAI event "
                                "stream, or the server closed it before sending any"))
            if finish == "stop" and can_force and not state.tracker.in_answer and forcing.may_wait(state.n_thinking, len(state.waits)):
                inject = forcing.wait_piece(state.text)  # an early end of the whole output: "Wait" instead
                state.waits.append(len(state.steps))
                continue
            outcome.stop_reason = "eos" if finish == "stop" else "max_tokens"
            return

    def _partial(self, outcome: StreamOutcome, state: _RowState, why: str, timeout: str | None = None) -> RemoteError:
        """Mark what arrived as a partial trace (stored by the caller) and say why it ended."""
        outcome.meta["partial"] = True
        if timeout is not None:
            outcome.meta["timeout"] = timeout
            why = f"{why} after {len(state.steps)} tokens; what arrived is kept"
        outcome.meta["stream_error"] = why
        return RemoteError(why)

    def _add_piece(self, state: _RowState, piece: Piece) -> list[TokenStep]:
        text = piece.text
        fmt = state.fmt
        # Reasoning sent apart from the content: put the format's own delimiters around it, so the
        # stored text splits into thinking and answer like a local trace does.
        if piece.reasoning and not state.saw_reasoning_field:
            state.saw_reasoning_field = True
            if fmt.kind == "think_tags" and not fmt.starts_in_thinking and not state.steps:
                text = fmt.open_tag + text
        added = []
        if not piece.reasoning and state.saw_reasoning_field and not state.closed_reasoning:
            # Its own step (listed as forced, like injected text): the token completing a delimiter is
            # thinking, so glued to the first answer token it would make that token thinking too.
            state.closed_reasoning = True
            added.append(state.add(fmt.close_tag + "\n\n" if fmt.kind == "think_tags" else f"\n{fmt.answer_marker}",
                                   forced=True))
        if not math.isnan(piece.logprob):
            state.logprobs_seen = True
        return added + [state.add(text, piece.logprob, piece.top)]

    # -- the wire ------------------------------------------------------------------------------

    def _first_model(self) -> str:
        try:
            # Bounded like a generation: a server that never answers must not hold the caller.
            models = self._client.models.list(timeout=min(self.config.timeout_s, self.config.stall_timeout_s)).data
        except self._openai.APIError as exc:
            reason = redact_text(str(exc)).rstrip(".")
            raise RemoteError(f"Could not list the models of {self.config.public_url}: {reason}. Give the model "
                              "name.") from exc
        if not models:
            raise RemoteError(f"{self.config.public_url} serves no model.")
        return models[0].id

    def _open(self, prompt: str, state: _RowState, sampling: SamplingConfig, max_tokens: int,
              stop_event: threading.Event, outcome: StreamOutcome, ignore_eos: bool, watchdog: Watchdog):
        params: dict = {"model": self.name, "max_tokens": max(1, max_tokens), "temperature": sampling.temperature,
                        "stream": True}
        if sampling.temperature > 0:
            params["top_p"] = sampling.top_p
        if sampling.seed is not None:
            params["seed"] = sampling.seed
        if ignore_eos:
            params["extra_body"] = {"ignore_eos": True}  # vLLM/SGLang extension, for benchmarks
        if self._tokenizer is not None:

            params["prompt"] = render_prompt(self._tokenizer, prompt, state.fmt) + state.text
            if self.config.logprobs and self.config.top_logprobs:
                params["logprobs"] = self.config.top_logprobs
            create: Callable = self._client.completions.create
        else:
            params["messages"] = chat_messages(prompt, state.fmt)
            if self.config.logprobs:
                params.update(logprobs=True, top_logprobs=self.config.top_logprobs)
            create = self._client.chat.completions.create
        url = self.config.public_url
        attempt = 0
        while True:
            if (kind := watchdog.expired()) is not None:  # retries and waits count against the stall budget
                raise self._partial(outcome, state, watchdog.describe(kind), kind)
            # Each request may wait for its answer only as long as the watchdog has left.
            left = max(watchdog.remaining(), 1e-3)
            timeout = self._openai.Timeout(min(self.config.timeout_s, left),
                                           connect=min(self.config.connect_timeout_s, left))
            try:
                stream = create(**params, timeout=timeout)
            except self._openai.APIStatusError as exc:
                retryable = exc.status_code == 429 or exc.status_code >= 500
                if not retryable or attempt >= self.config.max_retries:
                    raise RemoteError(f"{url} answered {redact_text(status_text(exc))}"
                                      f"{f' after {attempt} retries' if attempt else ''}.") from exc
                delay = retry_after(exc.response.headers) or self.config.backoff(attempt)
            except self._openai.APIConnectionError as exc:  # also timeouts
                if (kind := watchdog.expired()) is not None:
                    raise self._partial(outcome, state, watchdog.describe(kind), kind) from exc
                if attempt >= self.config.max_retries:
                    raise RemoteError(f"Could not reach {url} ({type(exc).__name__}: {redact_text(str(exc))})"
                                      f"{f' after {attempt} retries' if attempt else ''}.") from exc
                delay = self.config.backoff(attempt)
            else:
                wrong = not_an_event_stream(stream.response)
                if wrong is None:
                    return stream
                stream.close()
                raise RemoteError(f"{url} {wrong}")
            attempt += 1
            outcome.meta["retries"] = attempt
            if stop_event.wait(min(delay, max(watchdog.remaining(), 0.0))):
                raise Stopped()

    def _pieces(self, stream, state: _RowState) -> Iterator[tuple[Piece | None, str | None]]:
        """(piece or None, finish_reason or None) per text part of each chunk."""
        for chunk in stream:
            state.chunks += 1
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason
            parts: list[Piece] = []
            if self._tokenizer is not None:
                if choice.text:
                    parts = completion_pieces(choice)
            else:
                delta = choice.delta
                extra = getattr(delta, "model_extra", None) or {}
                reasoning = getattr(delta, "reasoning_content", None) or extra.get("reasoning_content") \
                    or getattr(delta, "reasoning", None) or extra.get("reasoning")
                lps = getattr(choice, "logprobs", None)
                entries = list(getattr(lps, "content", None) or []) if lps is not None else []
                if reasoning:
                    parts += chat_pieces(reasoning, True, entries if not delta.content else [])
                if delta.content:
                    parts += chat_pieces(delta.content, False, entries if not reasoning else [])
            if not parts:
                yield None, finish
            for part in parts:
                yield part, finish
