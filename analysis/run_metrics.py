"""Per-run accuracy, cost and efficiency metrics (docs/METHODS.md §6), from plain per-query and
per-sample numbers.

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
    "QueryOutcome",
    "RunMetrics",
    "SampleOutcome",
    "TokenCount",
    "char_to_token_index",
    "cost_usd",
    "e3",
    "first_correct_token_index",
    "ock_score",
    "outcome_efficiency",
    "sample_efficiency_terms",
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
    """What the run metrics need from one generated sample.

    correct: the stored grade; None when ungraded (no reference, or the trace did not finish).
    finished: False for a stopped, failed or partial trace (analysis.records.finished_normally):
    it never counts toward accuracy, even if an old row still carries a grade, and is counted
    apart as "not finished" (docs/METHODS.md §6).
    first_correct_token: 0-based index over all the sample's tokens of the end of its first
    correct intermediate answer, None when none was located.
    """

    correct: bool | None
    n_thinking_tokens: int
    n_answer_tokens: int
    latency_s: float = 0.0
    first_correct_token: int | None = None
    finished: bool = True
    n_forced_tokens: int = 0  # injected by budget forcing, counted apart from thinking and answer

    def __post_init__(self) -> None:
        if self.n_thinking_tokens < 0 or self.n_answer_tokens < 0 or self.n_forced_tokens < 0:
            raise ValueError("token counts must be >= 0")
        if not math.isfinite(self.latency_s) or self.latency_s < 0:
            raise ValueError(f"latency_s must be finite and >= 0, got {self.latency_s!r}")
        fc = self.first_correct_token
        if fc is not None and not 0 <= fc < self.n_total_tokens:
            raise ValueError(f"first_correct_token {fc} lies outside the {self.n_total_tokens} tokens")

    @property
    def n_total_tokens(self) -> int:
        return self.n_thinking_tokens + self.n_answer_tokens + self.n_forced_tokens

    @property
    def grade(self) -> bool | None:
        """The grade metrics use: None unless the sample finished and was graded."""
        return self.correct if self.finished else None


@dataclass(frozen=True)
class TokenCount:
    """Tokens decoded for one query, by kind. Strategies that decode more than they store (step
    search: pruned branches, prefixes shared by several beams) report this instead of the sum
    over their stored samples."""

    thinking: int = 0
    answer: int = 0
    forced: int = 0

    def __post_init__(self) -> None:
        if min(self.thinking, self.answer, self.forced) < 0:
            raise ValueError("token counts must be >= 0")

    @property
    def total(self) -> int:
        return self.thinking + self.answer + self.forced

    def to_dict(self) -> dict:
        return {"thinking": self.thinking, "answer": self.answer, "forced": self.forced, "total": self.total}

    @staticmethod
    def of(samples: Sequence[SampleOutcome]) -> "TokenCount":
        return TokenCount(sum(s.n_thinking_tokens for s in samples), sum(s.n_answer_tokens for s in samples),
                          sum(s.n_forced_tokens for s in samples))


@dataclass(frozen=True)
class QueryOutcome:
    """One query (prompt) of a run: the grade of the answer the strategy selected and every
    sample it generated. correct is None when ungraded (no reference, or the query did not
    finish: the run was stopped during it). decoded: the tokens actually decoded when they
    differ from the sum over `samples` (see TokenCount)."""

    correct: bool | None
    samples: tuple[SampleOutcome, ...]
    decoded: TokenCount | None = None
    finished: bool = True

    @property
    def tokens(self) -> TokenCount:
        return self.decoded if self.decoded is not None else TokenCount.of(self.samples)

    @property
    def grade(self) -> bool | None:
        return self.correct if self.finished else None

    @staticmethod
    def single(sample: SampleOutcome) -> "QueryOutcome":
        """A query answered by one sample (sweeps, plain generations): its grade is the sample's."""
        return QueryOutcome(sample.grade, (sample,), finished=sample.finished)


@dataclass(frozen=True)
class RunMetrics:
    """Summary of one run (docs/METHODS.md §6). None where a value is undefined (no queries, no
    grades, no price).

    Per query: accuracy is the share of graded queries whose *selected* answer is right; tokens per
    query are the tokens decoded for a query, every sample (and pruned search branch) included.
    E3 and OckScore combine these two, over the graded queries (so A and T describe the same
    queries), with T = total tokens (thinking + answer + forced). Per sample: sample accuracy,
    mean tokens per stored sample, latency and outcome efficiency. Not-finished samples and
    queries are never graded and are counted apart.
    """

    n_queries: int
    n_queries_graded: int
    n_queries_correct: int
    n_queries_not_finished: int
    accuracy: float | None  # selected answer right / graded queries
    accuracy_ci: tuple[float, float] | None  # Wilson 95% over graded queries
    thinking_tokens_per_query: float | None
    answer_tokens_per_query: float | None
    total_tokens_per_query: float | None  # thinking + answer + forced, all samples of the query
    e3: float | None  # accuracy^2 / total tokens per graded query
    ock_score: float | None  # accuracy% - 10 ln(total tokens per graded query / 10000 + 1)
    n_samples: int
    n_samples_graded: int
    n_samples_correct: int
    n_not_finished: int  # samples stopped, failed or cut: ungraded, counted apart
    sample_accuracy: float | None  # right / graded finished samples
    mean_thinking_tokens: float | None  # per stored sample
    mean_answer_tokens: float | None
    mean_forced_tokens: float | None
    mean_total_tokens: float | None
    mean_latency_s: float | None  # over samples with a latency (0 means not measured, e.g. imports)
    tokens_per_s: float | None  # their tokens / their latency: throughput, not a mean of rates
    outcome_efficiency: float | None  # over graded finished samples with tokens
    total_tokens: int  # every token decoded by the run (the cost basis)
    cost_usd: float | None  # total_tokens at the given price


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sample_efficiency_terms(sample: SampleOutcome) -> tuple[int, int | None]:
    """(T_i, That_i) of one graded sample for outcome efficiency; That_i None when sigma_i = 0.

    sigma follows the grade (docs/METHODS.md §6): a sample graded correct has sigma = 1 even when no
    intermediate mention of the answer was located, with That = T (its first correct answer is then
    the final one, which ends the trace); a wrong final answer with a correct intermediate one has
    sigma = 1 too, as "any answer in trace i is correct" says."""
    total = sample.n_total_tokens
    if sample.first_correct_token is not None:
        return total, sample.first_correct_token + 1
    if sample.grade:
        return total, total
    return total, None


def summarize_run(queries: Sequence[QueryOutcome], price_per_million: float | None = None) -> RunMetrics:
    """Accuracy, cost and efficiency of a run from its queries (the one definition every page,
    stored run and CLI summary uses; docs/METHODS.md §6)."""
    graded_q = [q for q in queries if q.grade is not None]
    n_right_q = sum(1 for q in graded_q if q.grade)
    accuracy = n_right_q / len(graded_q) if graded_q else None
    graded_t = _mean([q.tokens.total for q in graded_q])
    samples = [s for q in queries for s in q.samples]
    graded = [s for s in samples if s.grade is not None]
    n_right = sum(1 for s in graded if s.grade)
    timed = [s for s in samples if s.latency_s > 0]
    latency = sum(s.latency_s for s in timed)
    efficiency = None
    measurable = [s for s in graded if s.n_total_tokens > 0]  # a text-only import has no length to use
    if measurable:
        terms = [sample_efficiency_terms(s) for s in measurable]
        efficiency = outcome_efficiency([None if h is None else h - 1 for _, h in terms], [t for t, _ in terms])
    total_tokens = sum(q.tokens.total for q in queries)
    return RunMetrics(
        n_queries=len(queries),
        n_queries_graded=len(graded_q),
        n_queries_correct=n_right_q,
        n_queries_not_finished=sum(1 for q in queries if not q.finished),
        accuracy=accuracy,
        accuracy_ci=wilson_interval(n_right_q, len(graded_q)) if graded_q else None,
        thinking_tokens_per_query=_mean([q.tokens.thinking for q in queries]),
        answer_tokens_per_query=_mean([q.tokens.answer for q in queries]),
        total_tokens_per_query=_mean([q.tokens.total for q in queries]),
        e3=e3(accuracy, graded_t) if accuracy is not None and graded_t else None,
        ock_score=ock_score(100.0 * accuracy, graded_t) if accuracy is not None else None,
        n_samples=len(samples),
        n_samples_graded=len(graded),
        n_samples_correct=n_right,
        n_not_finished=sum(1 for s in samples if not s.finished),
        sample_accuracy=n_right / len(graded) if graded else None,
        mean_thinking_tokens=_mean([s.n_thinking_tokens for s in samples]),
        mean_answer_tokens=_mean([s.n_answer_tokens for s in samples]),
        mean_forced_tokens=_mean([s.n_forced_tokens for s in samples]),
        mean_total_tokens=_mean([s.n_total_tokens for s in samples]),
        mean_latency_s=_mean([s.latency_s for s in timed]),
        tokens_per_s=sum(s.n_total_tokens for s in timed) / latency if latency > 0 else None,
        outcome_efficiency=efficiency,
        total_tokens=total_tokens,
        cost_usd=cost_usd(total_tokens, price_per_million) if price_per_million is not None else None,
    )

