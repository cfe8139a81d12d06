"""The built-in strategies (docs/METHODS.md §3 and §4). Each returns its samples and the vote that chose."""
from __future__ import annotations

import math
from dataclasses import replace

from analysis.voting import (
    best_of_majority,
    best_of_n,
    borda_vote,
    confidence_weighted_vote,
    deepconf_online_threshold,
    majority_vote,
)
from generation.batch import BudgetForcing, EarlyStop
from generation.strategies.adaptive import adaptive_probe, check_probe, check_tiered, self_budget, tiered
from generation.prm import record_steps
from generation.strategies.search import AGGREGATES, beam_search, check_search, dvts
from generation.strategies.base import (
    EFFORT_BUDGETS,
    Context,
    PromptResult,
    Strategy,
    answers,
    lowest_group_confidence,
    self_certainty,
    with_budget,
)


def greedy(ctx: Context) -> PromptResult:
    records = ctx.sample(1, replace(ctx.settings.sampling, temperature=0.0))
    return PromptResult(records, majority_vote(answers(records)))


def sampling(ctx: Context) -> PromptResult:
    records = ctx.sample(1)
    return PromptResult(records, majority_vote(answers(records)))


def self_consistency(ctx: Context) -> PromptResult:
    records = ctx.sample(ctx.settings.n)
    return PromptResult(records, majority_vote(answers(records)))


def _scored(ctx: Context, rule) -> PromptResult:
    records = ctx.sample(ctx.settings.n)
    scores = [self_certainty(r) for r in records]
    return PromptResult(records, rule(answers(records), scores), scores, "self_certainty")


def best_of_n_sc(ctx: Context) -> PromptResult:
    if ctx.prm is None:
        return _scored(ctx, best_of_n)
    # A PRM scores each sample's steps; the settings' step aggregate (last, min, prod) combines them.
    records = ctx.sample(ctx.settings.n)
    combine = AGGREGATES[ctx.settings.step_aggregate]
    per_step = [ctx.prm.score_steps(ctx.prompt, record_steps(r)) for r in records]
    scores = [combine(s) if s else math.nan for s in per_step]
    return PromptResult(records, best_of_n(answers(records), scores), scores,
                        f"{ctx.settings.step_aggregate}({ctx.prm.name})", extra={"step_scores": per_step})


def borda(ctx: Context) -> PromptResult:
    return _scored(ctx, lambda a, s: borda_vote(a, s, ctx.settings.borda_p))


def best_of_majority_sc(ctx: Context) -> PromptResult:
    return _scored(ctx, lambda a, s: best_of_majority(a, s, ctx.settings.alpha))


def deepconf_offline(ctx: Context) -> PromptResult:
    records = ctx.sample(ctx.settings.n)
    scores = [lowest_group_confidence(r, ctx.settings.window) for r in records]
    vote = confidence_weighted_vote(answers(records), scores, ctx.settings.eta)
    return PromptResult(records, vote, scores, "lowest_group_confidence")


def deepconf_online(ctx: Context) -> PromptResult:
    """Warm-up traces set the threshold; later traces stop when a window's mean confidence drops
    below it. Voters: every trace not stopped early whose lowest group reaches the threshold,
    weighted by that confidence (stopped traces are kept as traces but carry no vote)."""
    s = ctx.settings
    n_warm = min(s.warmup, s.n)
    warm = ctx.sample(n_warm)
    warm_scores = [lowest_group_confidence(r, s.window) for r in warm]
    finite = [x for x in warm_scores if math.isfinite(x)]
    threshold = deepconf_online_threshold(finite, s.eta) if finite else math.inf
    later = []
    if s.n > n_warm and math.isfinite(threshold) and not ctx.stop_event.is_set():
        later = ctx.sample(s.n - n_warm, early_stop=EarlyStop(threshold, s.window))
    records = warm + later
    scores = [lowest_group_confidence(r, s.window) for r in records]
    voting = [
        sc if not r.meta.get("deepconf_early_stop") and not math.isnan(sc) and sc >= threshold else math.nan
        for r, sc in zip(records, scores)
    ]
    vote = confidence_weighted_vote(answers(records), voting, 100.0) if any(map(math.isfinite, voting)) else \
        majority_vote([None] * len(records))
    extra = {"threshold": threshold if math.isfinite(threshold) else None, "warmup": n_warm,
             "early_stopped": [i for i, r in enumerate(records) if r.meta.get("deepconf_early_stop")]}
    return PromptResult(records, vote, scores, "lowest_group_confidence", extra)


def budget_forcing(ctx: Context) -> PromptResult:
    s = ctx.settings
    records = ctx.sample(s.n, forcing=BudgetForcing(s.min_thinking_tokens, s.max_waits))
    return PromptResult(records, majority_vote(answers(records)),
                        extra={"max_thinking_tokens": s.sampling.max_thinking_tokens,
                               "min_thinking_tokens": s.min_thinking_tokens, "max_waits": s.max_waits})


def effort(ctx: Context) -> PromptResult:
    budget = EFFORT_BUDGETS[ctx.settings.effort]
    records = ctx.sample(ctx.settings.n, with_budget(ctx.settings.sampling, budget))
    return PromptResult(records, majority_vote(answers(records)),
                        extra={"effort": ctx.settings.effort, "max_thinking_tokens": budget})


# Self-certainty and DeepConf confidence need the whole next-token distribution at every step.
_LOGITS = ("full_distribution",)

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("greedy", "Greedy", "one sample at temperature 0", greedy),
        Strategy("sampling", "Temperature sampling", "one sample at the chosen temperature", sampling),
        Strategy("self_consistency", "Self-consistency", "N samples, majority vote over canonical answers",
                 self_consistency),
        Strategy("best_of_n", "Best-of-N (self-certainty)", "the answer of the most self-certain sample",
                 best_of_n_sc, _LOGITS),
        Strategy("borda", "Borda vote (self-certainty)", "rank by self-certainty; rank r adds (N-r+1)^p", borda,
                 _LOGITS),
        Strategy("best_of_majority", "Best-of-Majority", "answers with share >= alpha, then the best by self-certainty",
                 best_of_majority_sc, _LOGITS),
        Strategy("deepconf_offline", "DeepConf offline", "keep the top eta% by lowest-group confidence, weighted vote",
                 deepconf_offline, _LOGITS),
        Strategy("deepconf_online", "DeepConf online", "warm-up sets a threshold; low-confidence traces stop early",
                 deepconf_online, _LOGITS),
        Strategy("budget_forcing", "Budget forcing (s1)", "max budget forces the answer; min budget inserts 'Wait'",
                 budget_forcing, ("budget_forcing",)),
        Strategy("effort", "Effort level", "low / medium / high / max mapped to thinking budgets", effort,
                 ("budget_forcing",)),
        Strategy("beam_search", "Step beam search",
                 "n rows per step (live beams refilled to n), keep the top n/M by step score; n best finished kept",
                 beam_search, ("token_ids",) + _LOGITS, check_search),
        Strategy("dvts", "DVTS", "n/M independent subtrees, each keeps its best of M next steps", dvts,
                 ("token_ids",) + _LOGITS, check_search),
        Strategy("adaptive_probe", "Adaptive budget (probe)",
                 "a short probe; its self-certainty picks the budget (mapping fitted on calibration prompts)",
                 adaptive_probe, ("budget_forcing",) + _LOGITS, check_probe),
        Strategy("self_budget", "Self-stated budget", "the model states the thinking tokens it needs, then is held "
                 "to them by budget forcing", self_budget, ("budget_forcing",)),
        Strategy("tiered", "Tiered (small, then large)", "the small model answers; low self-certainty goes to a "
                 "larger model or a server", tiered, _LOGITS, check_tiered),
    )
}
