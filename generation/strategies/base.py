"""The one interface every strategy implements, its settings, and helpers they share."""
from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.confidence import ConfidenceSettings, trace_confidence, trace_self_certainty
from analysis.reasoning import ReasoningFormat
from analysis.records import TraceRecord, finished_normally
from analysis.voting import Vote
from generation.backends import Backend
from generation.batch import BatchRow, BatchSettings, BudgetForcing, EarlyStop, Progress, generate_batch
from generation.decoding import SamplingConfig
from generation.models import LoadedModel

# Effort levels as the commercial APIs expose them, mapped to maximum thinking budgets (tokens).
EFFORT_BUDGETS = {"low": 64, "medium": 256, "high": 1024, "max": 4096}
# How a beam's step scores combine (generation/strategies/search.py AGGREGATES; docs/METHODS.md §5).
STEP_AGGREGATES = ("last", "min", "mean", "geomean", "prod")


@dataclass(frozen=True)
class StrategySettings:
    """Everything a strategy may read. n: samples per prompt (strategies that need one use one)."""

    sampling: SamplingConfig = SamplingConfig()
    n: int = 4
    borda_p: float = 0.5  # Borda exponent; 0 is a plain majority vote
    alpha: float = 0.3  # Best-of-Majority share threshold
    eta: float = 10.0  # DeepConf: keep the top eta% (offline) / threshold percentile (online)
    warmup: int = 16  # DeepConf online warm-up traces (capped at n)
    window: int = 2048  # DeepConf group window, tokens
    min_thinking_tokens: int = 0  # s1 minimum budget
    max_waits: int = 0  # s1: how many times an early end may be replaced by "Wait"
    effort: str = "medium"
    beam_width: int = 2  # M: children per beam (beam search, DVTS)
    max_steps: int = 6  # search rounds; the last one runs to the end
    step_aggregate: str = "last"  # how a beam's step scores combine: one of STEP_AGGREGATES
    step_scorer: str = "self_certainty"  # or "prm:<hub id or directory>" (the model itself is passed apart)
    # adaptive_probe (docs/METHODS.md §9): the first pass's thinking budget, and the fitted mapping from
    # its self-certainty to the final budget: (lowest self-certainty of the bin, budget), thresholds
    # increasing; a confidence below every threshold gets the first bin's budget.
    probe_tokens: int = 32
    budget_map: tuple[tuple[float, int], ...] = ()
    calibration: str = ""  # which prompts the mapping was fitted on (stored with the run)
    # tiered: escalate when the small model's self-certainty is below this (fitted on calibration prompts)
    escalate_below: float | None = None
    escalate_model: str = ""  # the larger model's name, stored with the run (the model itself is passed apart)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"N must be at least 1 (got {self.n})")
        if not 0 <= self.alpha <= 1 or not 0 < self.eta <= 100 or self.borda_p < 0:
            raise ValueError("alpha must be in [0, 1], eta in (0, 100], borda_p >= 0")
        if self.warmup < 1 or self.window < 1:
            raise ValueError("warmup and window must be >= 1")
        if self.effort not in EFFORT_BUDGETS:
            raise ValueError(f"effort must be one of {', '.join(EFFORT_BUDGETS)}, not {self.effort!r}")
        BudgetForcing(self.min_thinking_tokens, self.max_waits)
        if self.beam_width < 1 or self.max_steps < 1 or self.step_aggregate not in STEP_AGGREGATES:
            raise ValueError(f"beam_width and max_steps must be >= 1; step_aggregate one of {', '.join(STEP_AGGREGATES)}")
        if self.step_scorer != "self_certainty" and not self.step_scorer.startswith("prm:"):
            raise ValueError(f"step_scorer is self_certainty or prm:<hub id or directory>, not {self.step_scorer!r}")
        if self.probe_tokens < 1:
            raise ValueError(f"probe_tokens must be >= 1 (got {self.probe_tokens})")
        object.__setattr__(self, "budget_map", tuple((float(t), int(b)) for t, b in self.budget_map))
        thresholds = [t for t, _ in self.budget_map]
        if any(b < 1 for _, b in self.budget_map) or thresholds != sorted(set(thresholds)):
            raise ValueError("budget_map needs budgets >= 1 and strictly increasing confidence thresholds")

    def to_dict(self) -> dict:
        return {"sampling": self.sampling.to_dict(), "n": self.n, "borda_p": self.borda_p, "alpha": self.alpha,
                "eta": self.eta, "warmup": self.warmup, "window": self.window,
                "min_thinking_tokens": self.min_thinking_tokens, "max_waits": self.max_waits, "effort": self.effort,
                "beam_width": self.beam_width, "max_steps": self.max_steps, "step_aggregate": self.step_aggregate,
                # only when used: older runs keep the identity (resume key) they were stored with
                **({"step_scorer": self.step_scorer} if self.step_scorer != "self_certainty" else {}),
                **({"probe_tokens": self.probe_tokens, "budget_map": [list(m) for m in self.budget_map],
                    "calibration": self.calibration, "escalate_below": self.escalate_below,
                    "escalate_model": self.escalate_model} if self.budget_map or self.calibration else {})}


@dataclass
class Context:
    """One prompt's job: what to generate and where progress and Stop go."""

    loaded: LoadedModel | Backend
    prompt: str
    reference: str | None
    fmt: ReasoningFormat
    settings: StrategySettings
    progress: Progress | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    prompt_source: str = "user"
    escalate: LoadedModel | Backend | None = None  # tiered: the larger model or server low-confidence prompts go to
    prm: object | None = None  # a generation.prm.ProcessRewardModel: step search and best-of-N score with it

    def sample(self, n: int, sampling: SamplingConfig | None = None, forcing: BudgetForcing = BudgetForcing(),
               early_stop: EarlyStop | None = None) -> list[TraceRecord]:
        rows = [BatchRow(self.prompt, self.reference, self.prompt_source)] * n
        settings = BatchSettings(sampling or self.settings.sampling, forcing, early_stop)
        return generate_batch(self.loaded, rows, self.fmt, settings, self.stop_event, self.progress)


@dataclass(frozen=True)
class PromptResult:
    """The samples of one prompt and the vote that picked its answer; `scores` per sample (or None)."""

    records: list[TraceRecord]
    vote: Vote
    scores: list[float] | None = None
    score_name: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Strategy:
    name: str
    title: str
    describe: str
    generate: Callable[[Context], PromptResult]
    needs: tuple[str, ...] = ()  # backend capabilities (generation/backends/base.py) beyond plain sampling
    check: Callable[[StrategySettings], None] | None = None  # raises ValueError for settings it cannot honour

    def validate(self, settings: StrategySettings) -> None:
        """Refuse unusable settings before a run is created or anything is generated."""
        if self.check is not None:
            self.check(settings)


def answers(records: list[TraceRecord]) -> list[str | None]:
    """The answers that may vote: a stopped, failed or cut trace has none (its "answer" is whatever
    came last; docs/METHODS.md §4), so it holds its place in N but carries no vote."""
    return [r.extracted_answer if finished_normally(r.stop_reason) else None for r in records]


def self_certainty(record: TraceRecord) -> float:
    """Mean token self-certainty over the response (every generated token); NaN when there is none."""
    return trace_self_certainty(record.meta.get("token_self_certainty") or [])


def lowest_group_confidence(record: TraceRecord, window: int) -> float:
    values = record.meta.get("token_confidence") or []
    if not values:
        return math.nan
    return trace_confidence(np.asarray(values, dtype=np.float64), ConfidenceSettings(window=window)).lowest_group


def with_budget(sampling: SamplingConfig, max_thinking_tokens: int) -> SamplingConfig:
    return replace(sampling, max_thinking_tokens=max_thinking_tokens)
