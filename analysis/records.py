"""Plain data records shared by every layer: a generated trace and its per-token columns.

These live in `analysis/` because it is the one package every other layer may import. They hold
data only; no I/O, no model, no Streamlit.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

THINKING: int = 0
ANSWER: int = 1
# Injected by budget forcing, not sampled: the forced end of thinking ("Final Answer:", "</think>")
# and injected "Wait"s. Counted apart, so thinking tokens never exceed the budget (128 thinking +
# 4 forced, not 132 thinking). Traces stored before this phase existed carry their forced tokens
# as THINKING; meta["forced_positions"] still lists them.
FORCED: int = 2
PHASE_NAMES = {THINKING: "thinking", ANSWER: "answer", FORCED: "forced"}
PHASES: tuple[int, ...] = (THINKING, ANSWER, FORCED)

StopReason = Literal["eos", "max_tokens", "stopped", "error", "imported"]
STOP_REASONS: tuple[str, ...] = ("eos", "max_tokens", "stopped", "error", "imported")

# A trace is graded only when it ended on its own: EOS, a token budget it ran into (the model's
# failure to conclude is an outcome), or a finished trace from a file. A Stop, an early stop or a
# failure leaves a partial text whose "answer" is whatever came last: such traces are stored
# ungraded (correct = NULL) and counted apart as not finished (docs/METHODS.md §7).
GRADED_STOP_REASONS: tuple[str, ...] = ("eos", "max_tokens", "imported")

TOP_K_ALTERNATIVES = 5


def finished_normally(stop_reason: str | None, meta: dict | None = None) -> bool:
    """True when a trace with this stop reason gets a grade (see GRADED_STOP_REASONS); a trace a
    backend marked partial (meta["partial"]: a stream that broke off) never does."""
    return stop_reason in GRADED_STOP_REASONS and not (meta or {}).get("partial")


@dataclass(frozen=True)
class TokenStep:
    """One generated token as captured while streaming."""

    position: int  # 0-based index among generated tokens
    token_id: int
    text: str
    logprob: float  # natural log of p(chosen token), from the sampling distribution before temperature
    entropy: float  # nats, of the same distribution
    top_ids: tuple[int, ...]  # K most likely alternatives, most likely first
    top_texts: tuple[str, ...]
    top_logprobs: tuple[float, ...]
    phase: int  # THINKING, ANSWER or FORCED


@dataclass(frozen=True)
class TokenColumns:
    """Per-token fields of one trace in columnar form: every array has length T (tokens).

    Column order is the storage order. `top_*` are [T, K]; K may be 0 for imported traces that
    came without alternatives. Ids may be -1 when only token strings are known (imports).
    """

    token_id: np.ndarray  # int64 [T]
    text: list[str]  # [T]
    logprob: np.ndarray  # float32 [T], NaN where unknown
    entropy: np.ndarray  # float32 [T], NaN where unknown
    top_ids: np.ndarray  # int64 [T, K]
    top_texts: list[list[str]]  # [T][K]
    top_logprobs: np.ndarray  # float32 [T, K]
    phase: np.ndarray  # int8 [T], THINKING, ANSWER or FORCED

    def __post_init__(self) -> None:
        n = len(self.text)
        for name in ("token_id", "logprob", "entropy", "phase"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TokenColumns.{name} has {len(getattr(self, name))} rows, text has {n}")
        if self.top_ids.shape[0] != n or self.top_logprobs.shape[0] != n or len(self.top_texts) != n:
            raise ValueError("TokenColumns top-k columns must have one row per token")

    def __len__(self) -> int:
        return len(self.text)

    @classmethod
    def empty(cls) -> "TokenColumns":
        return cls.from_steps([])

    @classmethod
    def from_steps(cls, steps: list[TokenStep]) -> "TokenColumns":
        k = max((len(s.top_ids) for s in steps), default=0)
        return cls(
            token_id=np.array([s.token_id for s in steps], dtype=np.int64),
            text=[s.text for s in steps],
            logprob=np.array([s.logprob for s in steps], dtype=np.float32),
            entropy=np.array([s.entropy for s in steps], dtype=np.float32),
            top_ids=np.array([s.top_ids for s in steps], dtype=np.int64).reshape(len(steps), k),
            top_texts=[list(s.top_texts) for s in steps],
            top_logprobs=np.array([s.top_logprobs for s in steps], dtype=np.float32).reshape(len(steps), k),
            phase=np.array([s.phase for s in steps], dtype=np.int8),
        )

    def n_phase(self, phase: int) -> int:
        return int(np.count_nonzero(self.phase == phase))

    def with_forced(self, positions) -> "TokenColumns":
        """A copy whose tokens at `positions` (injected, not sampled) have phase FORCED."""
        index = np.asarray([p for p in positions if 0 <= p < len(self)], dtype=np.int64)
        if index.size == 0:
            return self
        phase = self.phase.copy()
        phase[index] = FORCED
        return replace(self, phase=phase)


@dataclass
class TraceRecord:
    """A finished (or stopped) generation, ready to be stored. Text fields are untrusted."""

    prompt: str
    model: str
    thinking_text: str
    answer_text: str
    tokens: TokenColumns
    stop_reason: str
    latency_s: float = 0.0
    reference_answer: str | None = None
    extracted_answer: str | None = None
    correct: bool | None = None
    prompt_source: str = "user"
    strategy: str = "single"
    settings: dict = field(default_factory=dict)  # sampling settings and reasoning format used
    meta: dict = field(default_factory=dict)  # anything else worth keeping (forced end positions, errors)

    def __post_init__(self) -> None:
        if self.stop_reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {self.stop_reason!r}; expected one of {STOP_REASONS}")

    @property
    def n_thinking_tokens(self) -> int:
        return self.tokens.n_phase(THINKING)

    @property
    def n_answer_tokens(self) -> int:
        return self.tokens.n_phase(ANSWER)

    @property
    def n_forced_tokens(self) -> int:
        """Tokens injected by budget forcing; len(tokens) = thinking + forced + answer."""
        return self.tokens.n_phase(FORCED)

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.latency_s if self.latency_s > 0 else 0.0
