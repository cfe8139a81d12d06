"""L2 budget policies (docs/METHODS.md §9): the system picks each prompt's thinking budget.

- adaptive_probe: a short first pass; its self-certainty picks the final budget through a mapping
  fitted on calibration prompts of a set sweep (`calibrate_probe`).
- self_budget: the model first states how many thinking tokens it needs (SelfBudgeter-style), then
  is held to that budget by budget forcing.
- tiered: the small model answers; below a self-certainty threshold fitted on calibration prompts,
  the prompt goes to a larger model or a server, whose answer is taken.
Both count every token they spend (the probe or the estimate too) and store every pass.
`run_policy_on_sweep` fits on one split of a set sweep's prompts and runs on the other, so the
Budgets page can put the policy beside the fixed budgets and the oracle on the same prompts.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, replace

from analysis.budget_oracle import budget_for, fit_escalation_threshold, fit_probe_mapping
from analysis.reasoning import ReasoningFormat
from analysis.voting import majority_vote
from generation.backends import Backend
from generation.batch import BatchRow, BatchSettings, generate_batch
from generation.models import LoadedModel
from generation.strategies.base import Context, PromptResult, StrategySettings, answers, self_certainty, with_budget
from storage.config import StorageConfig
from storage.traces import create_run, save_traces

POLICIES = ("adaptive_probe", "self_budget", "tiered")
SELF_BUDGET_QUESTION = (
    "Before solving it, estimate how many tokens of step-by-step reasoning this question needs. "
    "Reply with one whole number only.\n\nQuestion: {prompt}"
)
_NUMBER = re.compile(r"\d[\d,]*")


def adaptive_probe(ctx: Context) -> PromptResult:
    s = ctx.settings
    probe = ctx.sample(1, with_budget(s.sampling, s.probe_tokens))
    confidence = self_certainty(probe[0])
    budget = budget_for(s.budget_map, confidence if math.isfinite(confidence) else -math.inf)
    final = ctx.sample(1, with_budget(s.sampling, budget))
    records = probe + final
    vote = majority_vote(answers(records)[1:])  # the probe explores; the final pass answers
    vote = replace(vote, chosen_index=None if vote.chosen_index is None else vote.chosen_index + 1,
                   used_indices=tuple(i + 1 for i in vote.used_indices))
    return PromptResult(records, vote,
                        extra={"probe_confidence": confidence if math.isfinite(confidence) else None,
                               "chosen_budget": budget, "probe_tokens": s.probe_tokens})


def check_probe(settings: StrategySettings) -> None:
    if not settings.budget_map:
        raise ValueError("adaptive_probe needs a confidence-to-budget mapping fitted on calibration prompts: run it "
                         "from the Budgets page (Run an L2 policy) or `python cli.py budget policy --sweep ID --policy "
                         "adaptive_probe` (it fits on one half of the set sweep's prompts and runs on the other)")


def stated_budget(text: str, cap: int) -> int | None:
    """The first whole number in the model's estimate, clamped to [1, cap]; None when it gave none."""
    match = _NUMBER.search(text or "")
    if match is None:
        return None
    return max(1, min(cap, int(match.group().replace(",", ""))))


def self_budget(ctx: Context) -> PromptResult:
    s = ctx.settings
    cap = s.sampling.max_thinking_tokens
    ask = BatchRow(SELF_BUDGET_QUESTION.format(prompt=ctx.prompt), None, ctx.prompt_source,
                   max_thinking_tokens=min(cap, s.probe_tokens))
    estimate = generate_batch(ctx.loaded, [ask], ctx.fmt, BatchSettings(replace(s.sampling, temperature=0.0)),
                              ctx.stop_event, ctx.progress)
    stated = stated_budget(estimate[0].answer_text or estimate[0].thinking_text, cap)
    budget = stated if stated is not None else cap
    final = ctx.sample(1, with_budget(s.sampling, budget))
    records = estimate + final
    vote = majority_vote(answers(records)[1:])
    vote = replace(vote, chosen_index=None if vote.chosen_index is None else vote.chosen_index + 1,
                   used_indices=tuple(i + 1 for i in vote.used_indices))
    return PromptResult(records, vote, extra={"stated_budget": stated, "chosen_budget": budget,
                                              "note": None if stated is not None else "no number stated: the cap"})


def tiered(ctx: Context) -> PromptResult:
    s = ctx.settings
    first = ctx.sample(1)
    confidence = self_certainty(first[0])
    escalated = not math.isfinite(confidence) or confidence < s.escalate_below
    records = list(first)
    if escalated:
        records += replace(ctx, loaded=ctx.escalate).sample(1)
    vote = majority_vote(answers(records)[-1:])  # the last tier's answer is the one taken
    offset = len(records) - 1
    vote = replace(vote, chosen_index=None if vote.chosen_index is None else vote.chosen_index + offset,
                   used_indices=tuple(i + offset for i in vote.used_indices))
    return PromptResult(records, vote, extra={"small_confidence": confidence if math.isfinite(confidence) else None,
                                              "escalated": escalated, "escalate_below": s.escalate_below})


def check_tiered(settings: StrategySettings) -> None:
    if settings.escalate_below is None:
        raise ValueError("tiered needs an escalation threshold fitted on calibration prompts and a second model: run "
                         "`python cli.py budget policy --sweep ID --policy tiered --escalate-model M`")


@dataclass(frozen=True)
class PolicySplit:
    """Which of a set sweep's prompts fit the policy and which it is reported on: even positions
    calibrate, odd positions are the test split (deterministic, stated with the run)."""

    calibration: tuple[int, ...]
    test: tuple[int, ...]

    @staticmethod
    def of(n_prompts: int) -> "PolicySplit":
        if n_prompts < 2:
            raise ValueError("a policy needs at least 2 prompts in the set sweep: one to fit on, one to report on")
        return PolicySplit(tuple(range(0, n_prompts, 2)), tuple(range(1, n_prompts, 2)))


def calibrate_probe(config: StorageConfig, loaded: LoadedModel | Backend, fmt: ReasoningFormat, table,
                    split: PolicySplit, settings: StrategySettings, n_bins: int = 2,
                    stop_event: threading.Event | None = None) -> tuple[tuple[float, int], ...]:
    """Probe the calibration prompts (one batch, stored as a "probe_calibration" run) and fit the mapping
    from probe self-certainty to the budget that did best on them in the sweep."""
    graded = table.graded()
    wanted = {table.prompts[i] for i in split.calibration}
    rows = [i for i, p in enumerate(graded.prompts) if p in wanted]
    if not rows:
        raise ValueError("no calibration prompt has a grade at every budget of the sweep: nothing to fit on")
    batch = [BatchRow(graded.prompts[i][0], graded.prompts[i][1], "calibration",
                      max_thinking_tokens=settings.probe_tokens) for i in rows]
    records = generate_batch(loaded, batch, fmt, BatchSettings(with_budget(settings.sampling, settings.probe_tokens)),
                             stop_event or threading.Event())
    run_id = create_run(config, getattr(loaded, "name", table.model), "probe_calibration",
                        {"set_sweep": table.run_id, "probe_tokens": settings.probe_tokens})
    for r in records:
        r.strategy = "probe_calibration"
    save_traces(config, records, run_id)
    confidence = [self_certainty(r) for r in records]
    confidence = [c if math.isfinite(c) else -1e9 for c in confidence]
    return fit_probe_mapping(confidence, graded.accuracy[rows], graded.mean_thinking_tokens[rows],
                             graded.budgets, n_bins)


def calibrate_tiered(config: StorageConfig, small: LoadedModel | Backend, large: LoadedModel | Backend,
                     fmt: ReasoningFormat, table, split: PolicySplit, settings: StrategySettings,
                     stop_event: threading.Event | None = None) -> float:
    """Both models answer the calibration prompts (one batch each, stored as a "tiered_calibration" run);
    the threshold maximises their joint accuracy there (analysis/budget_oracle.py)."""
    items = [table.prompts[i] for i in split.calibration if table.prompts[i][1]]
    if not items:
        raise ValueError("no calibration prompt has a reference answer: nothing to fit the threshold on")
    rows = [BatchRow(p, r, "calibration") for p, r in items]
    stop_event = stop_event or threading.Event()
    graded = []
    for loaded in (small, large):
        records = generate_batch(loaded, rows, fmt, BatchSettings(settings.sampling), stop_event)
        run_id = create_run(config, getattr(loaded, "name", "model"), "tiered_calibration",
                            {"set_sweep": table.run_id})
        for r in records:
            r.strategy = "tiered_calibration"
        save_traces(config, records, run_id)
        graded.append(records)
    confidence = [self_certainty(r) for r in graded[0]]
    confidence = [c if math.isfinite(c) else -1e9 for c in confidence]
    return fit_escalation_threshold(confidence, [bool(r.correct) for r in graded[0]],
                                    [bool(r.correct) for r in graded[1]])


def run_policy_on_sweep(config: StorageConfig, loaded: LoadedModel | Backend, fmt: ReasoningFormat, sweep_id: int,
                        policy: str, settings: StrategySettings, progress=None, stop_event=None,
                        escalate: LoadedModel | Backend | None = None):
    """Fit (adaptive_probe, tiered) on the sweep's calibration split, then run the policy on its test
    split. Returns (StrategyRun, PolicySplit, what was fitted: the mapping or the threshold)."""
    from generation.strategies.runner import PromptItem, run_strategy
    from generation.sweep import set_sweep_table

    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
    if policy == "tiered" and escalate is None:
        raise ValueError("tiered needs a second, larger model or a server to escalate to (--escalate-model)")
    table = set_sweep_table(config, sweep_id)
    split = PolicySplit.of(len(table.prompts))
    mapping: tuple[tuple[float, int], ...] = ()
    cap = max(table.budgets)
    settings = replace(settings, sampling=with_budget(settings.sampling, cap))
    note = (f"set sweep #{sweep_id}: prompts {','.join(map(str, split.calibration))} (even positions) fit, "
            f"prompts {','.join(map(str, split.test))} (odd positions) report")
    fitted: object = None
    if policy == "adaptive_probe":
        mapping = calibrate_probe(config, loaded, fmt, table, split, settings, stop_event=stop_event)
        fitted = mapping
    if policy == "tiered":
        fitted = calibrate_tiered(config, loaded, escalate, fmt, table, split, settings, stop_event)
        settings = replace(settings, escalate_below=fitted, escalate_model=getattr(escalate, "name", "model"))
    settings = replace(settings, budget_map=mapping, calibration=note)
    items = [PromptItem(table.prompts[i][0], table.prompts[i][1] or "") for i in split.test]
    run = run_strategy(config, loaded, policy, items, fmt, settings, progress=progress, stop_event=stop_event,
                       escalate=escalate)
    return run, split, fitted
