"""Step-level search (search-and-learn, docs/METHODS.md §5): beam search and DVTS with a pluggable step scorer.

Steps end at a blank line. Each round extends beams by one step in one batch (a beam's tokens so
far are the rows' prefix), scores the new step, and keeps the best:
- beam search (as search-and-learn's beam_search): every round decodes n rows, the live beams
  repeated in turn until there are n (so finished beams are refilled from the live ones); the
  children that completed join the finished pool, the top n/M of the rest stay live. The pool is
  sorted by aggregated score and cut back to n at the end.
- DVTS: n/M independent subtrees; each round every live subtree decodes M children and keeps its
  best; a subtree whose best child completed is done (one final trace per subtree).
A beam is finished when its step ended otherwise (the answer, EOS or a budget); the last round
runs to the end. n must be a multiple of M, and at least M.

Cost: every decoded token is counted once, in the round that decoded it, pruned children and
finished beams cut from the pool included; prefixes shared by several beams are context, not
decoded again. `PromptResult.extra["decoded_tokens"]` holds the counts (thinking, answer, forced,
total) and the run metrics use them as the query's tokens. Only the kept final beams are stored
as traces (one trace joining its steps); the pruned ones are counted, not stored.

Step scores: the default is the step's self-certainty (no process reward model needed); pass a
`StepScorer` for a PRM. Aggregates over a beam's step scores (AGGREGATES): last, min, mean and
geomean (exp of the mean log) suit any non-negative score; prod is search-and-learn's choice for
PRM probabilities in [0, 1] and is refused for unbounded scorers such as self-certainty (nats,
mostly > 1), where a product grows with the number of steps and favours longer beams.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.reasoning import token_phases
from analysis.records import ANSWER, THINKING, TokenStep, TraceRecord
from analysis.run_metrics import TokenCount
from analysis.voting import best_of_n
from generation.batch import BatchRow, BatchSettings, generate_batch
from generation.decoding import DecodeOutcome
from generation.strategies.base import Context, PromptResult, StrategySettings, answers, self_certainty
from generation.streaming import GenerationRequest, build_record

STEP_DELIMITER = "\n\n"


@dataclass(frozen=True)
class StepScorer:
    """Scores a beam's newest step. bounded: scores are probabilities in [0, 1] (a PRM), the only
    kind for which the `prod` aggregate ranks beams of different lengths sensibly."""

    name: str
    score: Callable[[str, list[TraceRecord]], float]  # (prompt, the beam's steps, newest last) -> score
    bounded: bool = False


SELF_CERTAINTY_STEP = StepScorer("self_certainty", lambda prompt, steps: self_certainty(steps[-1]), bounded=False)


def step_text(record: TraceRecord) -> str:
    return "".join(record.tokens.text).strip()


def prm_step_scorer(prm) -> StepScorer:
    """A process reward model's probability for the newest step, given the question and the steps before it."""
    return StepScorer(prm.name, lambda prompt, steps: prm.score_steps(prompt, [step_text(r) for r in steps])[-1],
                      bounded=True)


def _geomean(xs: list[float]) -> float:
    arr = np.asarray(xs, dtype=np.float64)
    if (arr < 0).any():
        return math.nan  # no geometric mean of negative scores: such a beam cannot win
    with np.errstate(divide="ignore"):
        return float(np.exp(np.mean(np.log(arr))))  # a zero step gives 0, an infinite one inf


AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "last": lambda xs: xs[-1],
    "min": min,
    "mean": lambda xs: float(np.mean(xs)),
    "geomean": _geomean,
    "prod": lambda xs: float(np.prod(xs)),
}
BOUNDED_ONLY = frozenset({"prod"})  # aggregates that need scores in [0, 1]


def check_search(settings: StrategySettings, scorer: StepScorer = SELF_CERTAINTY_STEP) -> None:
    """Refuse settings the search cannot honour, before anything is generated."""
    n, m = settings.n, settings.beam_width
    if n < m:
        raise ValueError(f"step search needs n >= M: n = {n} samples cannot hold M = {m} children per beam; "
                         f"raise N or lower M")
    if n % m:
        raise ValueError(f"step search needs n to be a multiple of M (n = {n}, M = {m}): "
                         f"it keeps n/M beams and gives each M children")
    agg = settings.step_aggregate
    if agg not in AGGREGATES:
        raise ValueError(f"step aggregate must be one of {', '.join(AGGREGATES)}, not {agg!r}")
    if agg in BOUNDED_ONLY and not (scorer.bounded or settings.step_scorer.startswith("prm:")):
        raise ValueError(f"the {agg!r} step aggregate multiplies step scores, which suits probabilities in [0, 1] "
                         f"(a PRM); {scorer.name} is unbounded, so a product favours longer beams. Use 'geomean' "
                         "(the product normalised by the number of steps), 'mean', 'min' or 'last'.")


@dataclass
class _Beam:
    group: int
    steps: list[TraceRecord] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def prefix_ids(self) -> tuple[int, ...]:
        return tuple(t for r in self.steps for t in r.tokens.token_id.tolist())

    @property
    def done(self) -> bool:
        return bool(self.steps) and not self.steps[-1].meta.get("step_end")


def _step_tokens(ctx: Context, parent: _Beam, record: TraceRecord) -> TokenCount:
    """Tokens one child decoded, by kind; phases read on the beam's whole text so a step after the
    end of thinking counts as answer."""
    pieces = [t for r in parent.steps for t in r.tokens.text] + list(record.tokens.text)
    phases = token_phases(pieces, ctx.fmt)[len(pieces) - len(record.tokens):]
    forced = set(record.meta.get("forced_positions", []))
    kinds = [None if k in forced else int(p) for k, p in enumerate(phases)]
    return TokenCount(sum(k == THINKING for k in kinds), sum(k == ANSWER for k in kinds), len(forced))


def _add(a: TokenCount, b: TokenCount) -> TokenCount:
    return TokenCount(a.thinking + b.thinking, a.answer + b.answer, a.forced + b.forced)


def _search(ctx: Context, scorer: StepScorer, dvts_mode: bool) -> PromptResult:
    if ctx.prm is not None and scorer is SELF_CERTAINTY_STEP:  # a PRM chosen for the run (--scorer prm:…)
        scorer = prm_step_scorer(ctx.prm)
    s = ctx.settings
    check_search(s, scorer)
    agg = AGGREGATES[s.step_aggregate]
    n, m = s.n, s.beam_width
    n_groups = n // m if dvts_mode else 1
    beams = [_Beam(g) for g in range(n_groups)] if dvts_mode else [_Beam(0)]
    finished: list[_Beam] = []
    decoded = pruned_tokens = TokenCount()
    rows_per_round: list[int] = []
    pruned = 0
    for step in range(s.max_steps):
        if not beams or ctx.stop_event.is_set():
            break
        last = step == s.max_steps - 1
        if dvts_mode:
            parents = [b for b in beams for _ in range(m)]
        else:  # n rows: the live beams in turn (search-and-learn's refill)
            parents = [beams[k % len(beams)] for k in range(n)]
        rows = [BatchRow(ctx.prompt, ctx.reference, ctx.prompt_source, prefix_ids=b.prefix_ids) for b in parents]
        sampling = replace(s.sampling, seed=None if s.sampling.seed is None else s.sampling.seed + 7919 * step)
        settings = BatchSettings(sampling, step_delimiter=None if last else STEP_DELIMITER)
        records = generate_batch(ctx.loaded, rows, ctx.fmt, settings, ctx.stop_event, ctx.progress)
        rows_per_round.append(len(rows))
        children = []
        for parent, record in zip(parents, records):
            cost = _step_tokens(ctx, parent, record)
            decoded = _add(decoded, cost)
            steps = parent.steps + [record]
            child = _Beam(parent.group, steps, parent.scores + [scorer.score(ctx.prompt, steps)])
            children.append((child, cost))
        beams = []
        if dvts_mode:
            for g in range(n_groups):
                members = sorted((c for c in children if c[0].group == g), key=lambda c: -_finite(agg(c[0].scores)))
                if not members:
                    continue
                for _, cost in members[1:]:
                    pruned_tokens = _add(pruned_tokens, cost)
                pruned += len(members) - 1
                (finished if members[0][0].done else beams).append(members[0][0])
        else:
            finished += [c for c, _ in children if c.done]
            live = sorted((c for c in children if not c[0].done), key=lambda c: -_finite(agg(c[0].scores)))
            for _, cost in live[n // m:]:
                pruned_tokens = _add(pruned_tokens, cost)
            pruned += max(0, len(live) - n // m)
            beams = [c for c, _ in live[: n // m]]
    finished += beams  # stopped mid-search, or out of rounds: keep what there is
    n_cut = 0
    if not dvts_mode and len(finished) > n:
        # search-and-learn keeps the n best completed beams (sorted by aggregated score)
        order = sorted(range(len(finished)), key=lambda i: (-_finite(agg(finished[i].scores)), i))
        n_cut = len(finished) - n
        finished = [finished[i] for i in sorted(order[:n])]
    records = [_join(ctx, b) for b in finished]
    scores = [agg(b.scores) if b.scores else math.nan for b in finished]
    vote = best_of_n(answers(records), scores)
    variant = ("dvts: n/M subtrees, best of M children per round, one trace per subtree" if dvts_mode else
               "beam search: n rows per round (live beams refilled to n), top n/M kept, finished pool cut to n")
    return PromptResult(records, vote, scores, f"step_{s.step_aggregate}({scorer.name})", {
        "variant": variant, "rows_per_round": rows_per_round, "pruned_partial_beams": pruned,
        "finished_cut_to_n": n_cut, "steps_per_trace": [len(b.steps) for b in finished],
        "decoded_tokens": decoded.to_dict(), "pruned_tokens": pruned_tokens.to_dict(),
    })


def _finite(x: float) -> float:
    return x if not math.isnan(x) else -math.inf


def _join(ctx: Context, beam: _Beam) -> TraceRecord:
    """One trace from a beam's steps: tokens concatenated, split and answer recomputed on the whole."""
    steps: list[TokenStep] = []
    forced: list[int] = []
    meta_lists: dict[str, list] = {"token_confidence": [], "token_self_certainty": []}
    boundaries = []
    for r in beam.steps:
        offset = len(steps)
        c = r.tokens
        for k in range(len(c)):
            steps.append(TokenStep(offset + k, int(c.token_id[k]), c.text[k], float(c.logprob[k]), float(c.entropy[k]),
                                   tuple(c.top_ids[k].tolist()), tuple(c.top_texts[k]),
                                   tuple(c.top_logprobs[k].tolist()), int(c.phase[k])))
        forced += [offset + p for p in r.meta.get("forced_positions", [])]
        for key in meta_lists:
            meta_lists[key] += r.meta.get(key, [])
        boundaries.append(len(steps))
    last = beam.steps[-1]
    request = GenerationRequest(ctx.prompt, ctx.settings.sampling, ctx.fmt, ctx.reference, ctx.prompt_source)
    outcome = DecodeOutcome(stop_reason=last.stop_reason, forced_positions=forced)
    record = build_record(request, ctx.loaded.name, steps, outcome, sum(r.latency_s for r in beam.steps))
    record.meta.update(meta_lists, step_ends=boundaries, step_scores=beam.scores)
    return record


def beam_search(ctx: Context, scorer: StepScorer = SELF_CERTAINTY_STEP) -> PromptResult:
    return _search(ctx, scorer, dvts_mode=False)


def dvts(ctx: Context, scorer: StepScorer = SELF_CERTAINTY_STEP) -> PromptResult:
    return _search(ctx, scorer, dvts_mode=True)
