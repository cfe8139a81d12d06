"""Per-run accuracy, cost and efficiency metrics (METHODS item 6), from plain per-sample numbers.

Token counts, not texts, are the inputs; `first_correct_token_index` bridges from a trace's token
texts to the token where its first correct intermediate answer ends.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from analysis.answers import (
    DEFAULT_GRADE,
    DEFAULT_MENTIONS,
    GradeSettings,
    MentionSettings,
    grade,
    intermediate_answers,
)

__all__ = [
    "RunMetrics",
    "SampleOutcome",
    "char_to_token_index",
    "cost_usd",
    "e3",
    "first_correct_token_index",
    "ock_score",
    "outcome_efficiency",
    "summarize_run",
    "wilson_interval",
]


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (nan, nan) when n = 0.
    Unlike the normal approximation it stays inside [0, 1] and is sane at k = 0 or k = n."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if not math.isfinite(z) or z <= 0:
        raise ValueError(f"wilson_interval z must be positive, got {z!r}")
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def outcome_efficiency(first_correct_tokens: Sequence[int | None], total_tokens: Sequence[int]) -> float:
    """xi_O = (1/N) sum_i sigma_i * That_i / T_i (Chen et al. 2024).

    first_correct_tokens[i]: 0-based index of the token where trace i's first correct intermediate
    answer ends (so That_i = index + 1), None when no answer in the trace is correct (sigma_i = 0).
    total_tokens[i]: T_i, all generated tokens of trace i. N counts every trace, so wrong traces
    pull the mean down: 1.0 means every trace was right and stopped as soon as it was.
    """
    if len(first_correct_tokens) != len(total_tokens):
        raise ValueError("outcome_efficiency needs one total per trace")
    if not total_tokens:
        return math.nan
    acc = 0.0
    for idx, total in zip(first_correct_tokens, total_tokens):
        if total < 0:
            raise ValueError(f"token totals must be >= 0, got {total}")
        if idx is None:
            continue
        if not 0 <= idx < total:
            raise ValueError(f"first correct token {idx} lies outside a trace of {total} tokens")
        acc += (idx + 1) / total
    return acc / len(total_tokens)


def e3(accuracy: float, mean_tokens: float) -> float:
    """E3 = A^2 / T (Plan-and-Budget), A as a fraction in [0, 1], T = mean decoding tokens per
    query. Squaring A keeps a cheap but wrong run from scoring well. nan when T <= 0."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"e3 takes accuracy as a fraction in [0, 1], got {accuracy!r}")
    return accuracy * accuracy / mean_tokens if mean_tokens > 0 else math.nan


def ock_score(accuracy_percent: float, mean_total_tokens: float) -> float:
    """OckScore (OckBench) = accuracy% - 10 ln(T / 10000 + 1), T = mean total tokens per problem."""
    if not 0.0 <= accuracy_percent <= 100.0:
        raise ValueError(f"ock_score takes accuracy in percent [0, 100], got {accuracy_percent!r}")
    if mean_total_tokens < 0:
        raise ValueError(f"mean_total_tokens must be >= 0, got {mean_total_tokens!r}")
    return accuracy_percent - 10.0 * math.log(mean_total_tokens / 10000.0 + 1.0)


def cost_usd(total_tokens: float, price_per_million: float) -> float:
    """Dollars for `total_tokens` at `price_per_million` dollars per million tokens."""
    if total_tokens < 0 or price_per_million < 0:
        raise ValueError("cost_usd needs non-negative tokens and price")
    return total_tokens * price_per_million / 1_000_000.0


def char_to_token_index(char_offset: int, token_texts: Sequence[str]) -> int | None:
    """Index of the token whose text covers character `char_offset` of "".join(token_texts);
    None when the offset lies past the end. Empty tokens cover nothing."""
    if char_offset < 0:
        raise ValueError(f"char_offset must be >= 0, got {char_offset}")
    ends = []
    total = 0
    for t in token_texts:
        total += len(t)
        ends.append(total)
    # the first token whose cumulative end passes the offset
    i = bisect.bisect_right(ends, char_offset)
    return i if i < len(ends) else None


def first_correct_token_index(
    token_texts: Sequence[str],
    reference: str | None,
    mention_settings: MentionSettings = DEFAULT_MENTIONS,
    grade_settings: GradeSettings = DEFAULT_GRADE,
) -> int | None:
    """Token index where the first intermediate answer equal to `reference` ends, or None
    (no reference, or no correct mention). Searches the concatenated token texts, so thinking and
    answer tokens both count, in generation order."""
    if reference is None:
        return None
    text = "".join(token_texts)
    for m in intermediate_answers(text, mention_settings):
        if grade(m.value, reference, grade_settings):
            return char_to_token_index(m.char_end - 1, token_texts)
    return None


@dataclass(frozen=True)
class SampleOutcome:
    """What the run metrics need from one generated sample."""

    correct: bool | None  # None: no reference to grade against
    n_thinking_tokens: int
    n_answer_tokens: int
    latency_s: float = 0.0
    first_correct_token: int | None = None  # 0-based index over thinking+answer tokens

    def __post_init__(self) -> None:
        if self.n_thinking_tokens < 0 or self.n_answer_tokens < 0:
            raise ValueError("token counts must be >= 0")
        if not math.isfinite(self.latency_s) or self.latency_s < 0:
            raise ValueError(f"latency_s must be finite and >= 0, got {self.latency_s!r}")
        fc = self.first_correct_token
        if fc is not None and not 0 <= fc < self.n_total_tokens:
            raise ValueError(f"first_correct_token {fc} lies outside the {self.n_total_tokens} tokens")

    @property
    def n_total_tokens(self) -> int:
        return self.n_thinking_tokens + self.n_answer_tokens


@dataclass(frozen=True)
class RunMetrics:
    """Summary of one run. None where a value is undefined (no samples, no references, no price)."""

    n_samples: int
    n_graded: int  # samples with a known correctness
    n_correct: int
    accuracy: float | None  # fraction of graded samples
    accuracy_ci: tuple[float, float] | None  # Wilson 95%
    mean_thinking_tokens: float | None
    mean_answer_tokens: float | None
    mean_total_tokens: float | None
    mean_latency_s: float | None  # over samples with a latency (0 means not measured, e.g. imports)
    tokens_per_s: float | None  # their tokens / their latency: throughput, not a mean of rates
    outcome_efficiency: float | None  # over graded samples
    e3: float | None
    ock_score: float | None
    cost_usd: float | None  # all tokens of the run at the given price


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_run(samples: Sequence[SampleOutcome], price_per_million: float | None = None) -> RunMetrics:
    """Accuracy and efficiency over a run's samples.

    Token and latency means use every sample; accuracy, outcome efficiency, E3 and OckScore use the
    graded ones (an ungraded sample says nothing about correctness). A graded sample marked correct
    without a first_correct_token still counts as sigma = 0 for outcome efficiency: the caller
    could not locate the answer, and inventing a position would flatter the run. Conversely a
    wrong final answer with a correct intermediate one has sigma = 1, as the definition says.
    """
    graded = [s for s in samples if s.correct is not None]
    n_correct = sum(1 for s in graded if s.correct)
    accuracy = n_correct / len(graded) if graded else None
    totals = [s.n_total_tokens for s in samples]
    mean_total = _mean(totals)
    timed = [s for s in samples if s.latency_s > 0]
    latency = sum(s.latency_s for s in timed)
    efficiency = None
    if graded:
        efficiency = outcome_efficiency(
            [s.first_correct_token for s in graded],
            [s.n_total_tokens for s in graded],
        )
    graded_mean_total = _mean([s.n_total_tokens for s in graded])
    return RunMetrics(
        n_samples=len(samples),
        n_graded=len(graded),
        n_correct=n_correct,
        accuracy=accuracy,
        accuracy_ci=wilson_interval(n_correct, len(graded)) if graded else None,
        mean_thinking_tokens=_mean([s.n_thinking_tokens for s in samples]),
        mean_answer_tokens=_mean([s.n_answer_tokens for s in samples]),
        mean_total_tokens=mean_total,
        mean_latency_s=_mean([s.latency_s for s in timed]),
        tokens_per_s=sum(s.n_total_tokens for s in timed) / latency if latency > 0 else None,
        outcome_efficiency=efficiency,
        e3=e3(accuracy, graded_mean_total) if accuracy is not None and graded_mean_total else None,
        ock_score=ock_score(100.0 * accuracy, graded_mean_total) if accuracy is not None else None,
        cost_usd=cost_usd(sum(totals), price_per_million) if price_per_million is not None else None,
    )
