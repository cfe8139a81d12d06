"""Test-time compute strategies: one registry (`STRATEGIES`), one interface (`Strategy.generate`).

`run_strategy` (runner.py) runs one over prompts and stores every sample, the selections and the
run metrics in one run.
"""
from generation.strategies.base import EFFORT_BUDGETS, Context, PromptResult, Strategy, StrategySettings
from generation.strategies.builtin import STRATEGIES

__all__ = ["EFFORT_BUDGETS", "STRATEGIES", "Context", "PromptResult", "Strategy", "StrategySettings", "get_strategy"]


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None
