"""Running a strategy over prompts and storing it: one run, every sample a trace, one selection per
prompt, and the run's metrics. Storing is this module's job, so it is the one that imports storage."""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from analysis.answers import grade
from analysis.reasoning import ReasoningFormat
from analysis.records import TraceRecord, finished_normally
from analysis.run_metrics import QueryOutcome, SampleOutcome, TokenCount, first_correct_token_index, summarize_run
from generation.backends import Backend, as_backend, require
from generation.models import LoadedModel
from generation.strategies import Context, StrategySettings, get_strategy
from storage.config import StorageConfig
from storage.runs import (Selection, finish_run, get_run_metrics, identity_key, mark_interrupted, resume_or_create_run,
                          save_run_metrics, save_strategy_run, stored_selections, trace_records)

# (prompts done, prompts total, tokens generated in the current batch)
RunProgress = Callable[[int, int, int], None]
# The share of the whole job done, in [0, 1], called at every decode step: a bar that moves with
# tokens, not only when a prompt (or a sweep's batch of cells) ends.
JobFraction = Callable[[float], None]


def batch_share(rows_done: int, rows_total: int, tokens: int, capacity: int) -> float:
    """How far a batch has come, below 1 until it returns: its finished rows, or its tokens against
    the most it can make (`capacity`), whichever is further."""
    rows = rows_done / rows_total if rows_total else 0.0
    return min(0.99, max(rows, tokens / capacity if capacity else 0.0))


class _TokenTicks:
    """A prompt's decode steps as a fraction of the run. A strategy may decode several batches in turn
    (warm-up then the rest, search rounds); each restarts its token count, so counts are carried over."""

    def __init__(self, k: int, n_prompts: int, capacity: int, progress: RunProgress | None,
                 fraction: JobFraction | None):
        self.k, self.n, self.capacity, self._progress, self._fraction = k, n_prompts, capacity, progress, fraction
        self._carried = self._last = 0

    def __call__(self, rows_done: int, rows_total: int, tokens: int) -> None:
        if tokens < self._last:
            self._carried += self._last
        self._last = tokens
        if self._progress:
            self._progress(self.k, self.n, tokens)
        if self._fraction:
            self._fraction((self.k + batch_share(0, 0, self._carried + tokens, self.capacity)) / self.n)


@dataclass(frozen=True)
class PromptItem:
    prompt: str
    reference_answer: str | None = None
    source: str = "user"


@dataclass(frozen=True)
class StrategyRun:
    run_id: int
    selections: list[Selection]
    trace_ids: list[list[int]]  # per prompt, its samples in order
    metrics: dict
    stopped: bool  # some prompts are missing (Stop): running it again resumes this run
    kept: int = 0  # prompts kept from the interrupted run it resumed
    resumed: bool = False


def sample_outcome(record: TraceRecord) -> SampleOutcome:
    """A record's figures for the run metrics; a trace that did not finish is ungraded (docs/METHODS.md §6)."""
    finished = finished_normally(record.stop_reason)
    first = None
    if record.reference_answer and finished:
        first = first_correct_token_index(record.tokens.text, record.reference_answer)
    thinking, answer = record.n_thinking_tokens, record.n_answer_tokens
    return SampleOutcome(record.correct if finished else None, thinking, answer, record.latency_s, first, finished,
                         max(0, len(record.tokens) - thinking - answer))


def query_outcome(records: Sequence[TraceRecord], selection: Selection, finished: bool = True) -> QueryOutcome:
    """One prompt of a strategy run: the selected answer's grade, its samples, and the tokens the
    strategy reports as decoded when that differs from its stored samples (step search)."""
    decoded = selection.detail.get("decoded_tokens")
    count = TokenCount(decoded["thinking"], decoded["answer"], decoded["forced"]) if decoded else None
    return QueryOutcome(selection.correct if finished else None, tuple(sample_outcome(r) for r in records), count,
                        finished)


def run_metrics(records: Sequence[TraceRecord], selections: Sequence[Selection], wall_s: float,
                price_per_million: float | None = None, queries: Sequence[QueryOutcome] | None = None) -> dict:
    """The stored metrics of a run (analysis.run_metrics.summarize_run). Without `queries` every
    record is its own query (sweeps: no selection step)."""
    if queries is None:
        queries = [QueryOutcome.single(sample_outcome(r)) for r in records]
    metrics = dataclasses.asdict(summarize_run(queries, price_per_million))
    metrics["selection_accuracy"] = metrics["accuracy"]  # the key older readers look for
    metrics["n_ties"] = sum(1 for s in selections if s.detail.get("tie"))  # prompts the tie rule decided
    metrics["metrics_version"] = 2  # per-query E3/OckScore, decoded tokens (docs/METHODS.md §6)
    metrics["wall_s"] = wall_s
    metrics["price_per_million"] = price_per_million
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def run_strategy(
    config: StorageConfig,
    loaded: LoadedModel | Backend,
    strategy_name: str,
    prompts: Sequence[PromptItem],
    fmt: ReasoningFormat,
    settings: StrategySettings,
    progress: RunProgress | None = None,
    stop_event: threading.Event | None = None,
    price_per_million: float | None = None,
    fraction: JobFraction | None = None,
    escalate: LoadedModel | Backend | None = None,
    prm=None,
) -> StrategyRun:
    """Run the strategy over `prompts` into one run. A run of the same model, strategy, settings,
    format (preset included) and prompts that was stopped or killed is resumed: its stored prompts
    are kept and only the missing ones are generated (storage/runs.py resume_or_create_run, the
    mechanism sweeps use). A prompt cut short by Stop is not stored: it is missing, and generated
    again on resume, like a sweep's stopped cells."""
    strategy = get_strategy(strategy_name)
    if not prompts:
        raise ValueError("no prompts to run")
    backend = as_backend(loaded)
    require(backend, strategy.needs, f"The strategy {strategy.title!r}")
    strategy.validate(settings)
    if settings.step_scorer.startswith("prm:") and prm is None:
        raise ValueError(f"the settings name the step scorer {settings.step_scorer} but no PRM was loaded "
                         "(generation.prm.load_prm)")
    stop_event = stop_event or threading.Event()
    stored_settings = {"strategy": strategy.name, **settings.to_dict(), "format": fmt.to_dict(),
                       "n_prompts": len(prompts)}
    stored_settings["resume_key"] = identity_key(
        [backend.name, strategy.name, settings.to_dict(), fmt.to_dict(),
         [[item.prompt, item.reference_answer or None] for item in prompts]])
    # Marked running: reads as interrupted if this process dies before finish_run.
    run_id, resumed = resume_or_create_run(config, backend.name, strategy.name, stored_settings, "resume_key")
    kept = _kept_selections(config, run_id) if resumed else {}
    previous = (get_run_metrics(config, run_id) or {}) if resumed else {}
    start = time.perf_counter()
    all_records: list[TraceRecord] = []
    selections: list[Selection] = []
    queries: list[QueryOutcome] = []
    trace_ids: list[list[int]] = []
    n_kept = 0
    capacity = settings.n * (settings.sampling.max_thinking_tokens + settings.sampling.max_answer_tokens)
    try:
        for k, item in enumerate(prompts):
            found = kept.get((item.prompt, item.reference_answer or None))
            if found:
                selection, ids = found.pop(0)
                records = trace_records(config, ids)
                n_kept += 1
            else:
                if stop_event.is_set():
                    break
                tick = _TokenTicks(k, len(prompts), capacity, progress, fraction) if progress or fraction else None
                selection, records = _generate_prompt(strategy, loaded, item, fmt, settings, stop_event, tick,
                                                      escalate, prm)
                if selection is None:  # stopped midway: not a result, generated again on resume
                    break
                ids = save_strategy_run(config, run_id, records, [(selection, range(len(records)))])
            all_records.extend(records)
            selections.append(selection)
            queries.append(query_outcome(records, selection, bool(selection.detail.get("finished", True))))
            trace_ids.append(ids)
            if progress:
                progress(k + 1, len(prompts), 0)
            if fraction:
                fraction((k + 1) / len(prompts))
        wall_s = time.perf_counter() - start + (previous.get("wall_s") or 0.0)
        metrics = run_metrics(all_records, selections, wall_s, price_per_million, queries)
        save_run_metrics(config, run_id, metrics)
        finish_run(config, run_id, complete=len(selections) == len(prompts))
    except BaseException:  # Ctrl-C, a failed save (queued in the journal): resumable, not left running
        mark_interrupted(config, run_id)
        raise
    return StrategyRun(run_id, selections, trace_ids, metrics, len(selections) < len(prompts), n_kept, resumed)


def _kept_selections(config: StorageConfig, run_id: int) -> dict[tuple[str, str | None], list]:
    """A resumed run's finished prompts by (prompt, reference), in stored order (a prompt may repeat)."""
    kept: dict[tuple[str, str | None], list] = {}
    for selection, ids in stored_selections(config, run_id):
        if selection.detail.get("finished", True):
            kept.setdefault((selection.prompt, selection.reference_answer or None), []).append((selection, ids))
    return kept


def _generate_prompt(strategy, loaded, item: PromptItem, fmt: ReasoningFormat, settings: StrategySettings,
                     stop_event: threading.Event, tick, escalate=None, prm=None) -> tuple[Selection | None, list[TraceRecord]]:
    """One prompt's samples and its selection, graded; (None, samples) when Stop cut it short."""
    ctx = Context(loaded, item.prompt, item.reference_answer or None, fmt, settings, tick, stop_event, item.source,
                  escalate, prm)
    result = strategy.generate(ctx)
    for r in result.records:
        r.strategy = strategy.name
    if stop_event.is_set() and not all(finished_normally(r.stop_reason) for r in result.records):
        return None, result.records
    vote = result.vote
    # The winner was extracted by fmt's rules (a preset's answer format, analysis/answers.py extraction_for).
    selection = Selection(
        prompt=item.prompt, reference_answer=item.reference_answer or None, selected_answer=vote.winner,
        correct=grade(vote.winner, item.reference_answer) if vote.winner is not None and item.reference_answer
        else (False if item.reference_answer else None),
        chosen_index=vote.chosen_index, rule=vote.rule,
        detail={"tally": vote.tally, "note": vote.note, "used_indices": list(vote.used_indices),
                "tie": vote.tie_description(), "finished": True,
                "scores": result.scores, "score_name": result.score_name, **result.extra},
    )
    return selection, result.records
