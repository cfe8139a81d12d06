"""Step-level search (search-and-learn, METHODS item 5): beam search and DVTS with a pluggable step scorer.

Steps end at a blank line. Each round extends every live beam by one step in one batch (the beam's
tokens so far are the rows' prefix), scores the new step, and keeps the best: beam search keeps
the top n/M of all beams and gives each M children; DVTS runs n/M independent subtrees that each
keep their best of M children. A beam is finished when its step ended otherwise (the answer, EOS
or a budget); the last round runs to the end. Unlike search-and-learn, finished beams are not
refilled, so later rounds can be narrower than n.

The default step score is the step's self-certainty (no process reward model needed); pass any
`StepScorer` for a PRM. Only the finished beams are stored, each as one trace joining its steps;
pruned partial beams are counted in the selection detail, not stored.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.records import TokenStep, TraceRecord
from analysis.voting import best_of_n
from generation.batch import BatchRow, BatchSettings, generate_batch
from generation.decoding import DecodeOutcome
from generation.strategies.base import Context, PromptResult, answers, self_certainty
from generation.streaming import GenerationRequest, build_record

STEP_DELIMITER = "\n\n"
StepScorer = Callable[[str, list[TraceRecord]], float]  # (prompt, the beam's steps, newest last) -> score


def self_certainty_step(prompt: str, steps: list[TraceRecord]) -> float:
    return self_certainty(steps[-1])


AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "last": lambda xs: xs[-1],
    "min": min,
    "prod": lambda xs: float(np.prod(xs)),
}


@dataclass
class _Beam:
    group: int
    steps: list[TraceRecord] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def prefix_ids(self) -> tuple[int, ...]:
        return tuple(t for r in self.steps for t in r.tokens.token_id.tolist())


def _search(ctx: Context, n_groups: int, first_fan: int, keep: int, fan: int,
            scorer: StepScorer, aggregate: str, per_group_best: bool) -> PromptResult:
    s = ctx.settings
    agg = AGGREGATES[aggregate]
    beams = [_Beam(g) for g in range(n_groups)]
    finished: list[_Beam] = []
    pruned = 0
    for step in range(s.max_steps):
        if not beams or ctx.stop_event.is_set():
            break
        last = step == s.max_steps - 1
        parents = [b for b in beams for _ in range(first_fan if step == 0 else fan)]
        rows = [BatchRow(ctx.prompt, ctx.reference, ctx.prompt_source, prefix_ids=b.prefix_ids) for b in parents]
        sampling = replace(s.sampling, seed=None if s.sampling.seed is None else s.sampling.seed + 7919 * step)
        settings = BatchSettings(sampling, step_delimiter=None if last else STEP_DELIMITER)
        records = generate_batch(ctx.loaded, rows, ctx.fmt, settings, ctx.stop_event, ctx.progress)
        children = []
        for parent, record in zip(parents, records):
            steps = parent.steps + [record]
            children.append(_Beam(parent.group, steps, parent.scores + [scorer(ctx.prompt, steps)]))
        if not per_group_best:
            # Beam search: every completed beam is collected; the live ones compete for `keep` places.
            finished += [c for c in children if not c.steps[-1].meta.get("step_end")]
            children = [c for c in children if c.steps[-1].meta.get("step_end")]
        beams = []
        for g in range(n_groups):
            members = sorted((b for b in children if b.group == g), key=lambda b: -_finite(agg(b.scores)))
            pruned += len(members[keep:])
            for b in members[:keep]:
                # DVTS: a subtree whose best child completed is done.
                (beams if b.steps[-1].meta.get("step_end") else finished).append(b)
    finished += beams  # stopped mid-search: keep what there is
    records = [_join(ctx, b) for b in finished]
    scores = [agg(b.scores) if b.scores else math.nan for b in finished]
    vote = best_of_n(answers(records), scores)
    return PromptResult(records, vote, scores, f"step_{aggregate}",
                        {"pruned_partial_beams": pruned, "steps_per_trace": [len(b.steps) for b in finished]})


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


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


def beam_search(ctx: Context, scorer: StepScorer = self_certainty_step) -> PromptResult:
    s = ctx.settings
    keep = max(1, s.n // s.beam_width)
    return _search(ctx, 1, s.n, keep, s.beam_width, scorer, s.step_aggregate, per_group_best=False)


def dvts(ctx: Context, scorer: StepScorer = self_certainty_step) -> PromptResult:
    s = ctx.settings
    return _search(ctx, max(1, s.n // s.beam_width), s.beam_width, 1, s.beam_width, scorer, s.step_aggregate,
                   per_group_best=True)
