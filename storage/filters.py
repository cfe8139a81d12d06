"""TraceFilter: what the trace list shows, and its translation into a parameterised WHERE."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.records import GRADED_STOP_REASONS
from storage.errors import ConfigError

# "unknown": not graded (correct IS NULL: no reference, or not finished); "not_finished": stopped or
# failed traces, which are never graded (docs/METHODS.md §7). Neither counts as incorrect.
CORRECT_CHOICES = ("any", "correct", "incorrect", "unknown", "not_finished")


@dataclass(frozen=True)
class TraceFilter:
    """All conditions must hold; the defaults select every trace.

    models: keep traces of these models (empty: all). prompt_contains: case-insensitive substring
    of the prompt. correct: "any", "correct", "incorrect", "unknown" (not graded) or "not_finished"
    (stopped or failed, hence not graded). min_tokens /
    max_tokens: inclusive bounds on the total token count. run_id: only this run.
    """

    models: tuple[str, ...] = ()
    prompt_contains: str = ""
    correct: str = "any"
    min_tokens: int | None = None
    max_tokens: int | None = None
    run_id: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            # A bare string would otherwise be taken as a tuple of characters.
            object.__setattr__(self, "models", (self.models,))
        else:
            object.__setattr__(self, "models", tuple(self.models))
        if not all(isinstance(m, str) for m in self.models):
            raise ConfigError("TraceFilter.models must contain model names (strings)")
        if not isinstance(self.prompt_contains, str):
            raise ConfigError("TraceFilter.prompt_contains must be a string")
        if self.correct not in CORRECT_CHOICES:
            raise ConfigError(f"TraceFilter.correct must be one of {CORRECT_CHOICES}, got {self.correct!r}")
        for name in ("min_tokens", "max_tokens", "run_id"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"TraceFilter.{name} must be a non-negative integer or None, got {value!r}")
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ConfigError(f"TraceFilter.min_tokens ({self.min_tokens}) is above max_tokens ({self.max_tokens})")


def where_clause(filt: TraceFilter, alias: str = "t") -> tuple[str, list[Any]]:
    """SQL condition over the traces table (aliased `alias`) and its parameters.

    User text only ever travels as a parameter; the prompt match uses strpos rather than LIKE so
    that % and _ in the search text need no escaping.
    """
    conditions: list[str] = []
    params: list[Any] = []
    if filt.models:
        conditions.append(f"list_contains(?::VARCHAR[], {alias}.model)")
        params.append(list(filt.models))
    if filt.prompt_contains:
        conditions.append(
            f"{alias}.prompt_id IN (SELECT prompt_id FROM prompts WHERE strpos(lower(text), lower(?)) > 0)"
        )
        params.append(filt.prompt_contains)
    if filt.correct == "correct":
        conditions.append(f"{alias}.correct")
    elif filt.correct == "incorrect":
        conditions.append(f"NOT {alias}.correct")
    elif filt.correct == "unknown":
        conditions.append(f"{alias}.correct IS NULL")
    elif filt.correct == "not_finished":
        conditions.append(f"NOT list_contains(?::VARCHAR[], {alias}.stop_reason)")
        params.append(list(GRADED_STOP_REASONS))
    if filt.min_tokens is not None:
        conditions.append(f"{alias}.n_tokens >= ?")
        params.append(filt.min_tokens)
    if filt.max_tokens is not None:
        conditions.append(f"{alias}.n_tokens <= ?")
        params.append(filt.max_tokens)
    if filt.run_id is not None:
        conditions.append(f"{alias}.run_id = ?")
        params.append(filt.run_id)
    return (" AND ".join(conditions) or "TRUE"), params
