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
from analysis.records import TraceRecord
from analysis.run_metrics import SampleOutcome, first_correct_token_index, summarize_run
from generation.backends import Backend, as_backend, require
from generation.models import LoadedModel
from generation.strategies import Context, StrategySettings, get_strategy
from storage.config import StorageConfig
from storage.runs import Selection, save_run_metrics, save_strategy_run
from storage.traces import create_run

# (prompts done, prompts total, tokens generated in the current batch)
RunProgress = Callable[[int, int, int], None]


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
    stopped: bool


def sample_outcome(record: TraceRecord) -> SampleOutcome:
    first = None
    if record.reference_answer:
        first = first_correct_token_index(record.tokens.text, record.reference_answer)
    return SampleOutcome(record.correct, record.n_thinking_tokens, record.n_answer_tokens, record.latency_s, first)


def run_metrics(records: Sequence[TraceRecord], selections: Sequence[Selection], wall_s: float,
                price_per_million: float | None = None) -> dict:
    metrics = dataclasses.asdict(summarize_run([sample_outcome(r) for r in records], price_per_million))
    graded = [s for s in selections if s.correct is not None]
    metrics["selection_accuracy"] = sum(bool(s.correct) for s in graded) / len(graded) if graded else None
    metrics["total_tokens"] = sum(len(r.tokens) for r in records)
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
) -> StrategyRun:
    strategy = get_strategy(strategy_name)
    if not prompts:
        raise ValueError("no prompts to run")
    backend = as_backend(loaded)
    require(backend, strategy.needs, f"The strategy {strategy.title!r}")
    stop_event = stop_event or threading.Event()
    run_id = create_run(config, backend.name, strategy.name, {"strategy": strategy.name, **settings.to_dict(),
                                                             "format": fmt.to_dict(), "n_prompts": len(prompts)})
    start = time.perf_counter()
    all_records: list[TraceRecord] = []
    selections: list[Selection] = []
    trace_ids: list[list[int]] = []
    for k, item in enumerate(prompts):
        if stop_event.is_set():
            break
        tick = (lambda done, total, tokens, k=k: progress(k, len(prompts), tokens)) if progress else None
        ctx = Context(loaded, item.prompt, item.reference_answer or None, fmt, settings, tick, stop_event, item.source)
        result = strategy.generate(ctx)
        for r in result.records:
            r.strategy = strategy.name
        vote = result.vote
        selection = Selection(
            prompt=item.prompt, reference_answer=item.reference_answer or None, selected_answer=vote.winner,
            correct=grade(vote.winner, item.reference_answer) if vote.winner is not None and item.reference_answer
            else (False if item.reference_answer else None),
            chosen_index=vote.chosen_index, rule=vote.rule,
            detail={"tally": vote.tally, "note": vote.note, "used_indices": list(vote.used_indices),
                    "scores": result.scores, "score_name": result.score_name, **result.extra},
        )
        ids = save_strategy_run(config, run_id, result.records, [(selection, range(len(result.records)))])
        all_records.extend(result.records)
        selections.append(selection)
        trace_ids.append(ids)
        if progress:
            progress(k + 1, len(prompts), 0)
    metrics = run_metrics(all_records, selections, time.perf_counter() - start, price_per_million)
    save_run_metrics(config, run_id, metrics)
    return StrategyRun(run_id, selections, trace_ids, metrics, stop_event.is_set())
