"""Generation backends: the local transformers model, or an OpenAI-compatible server
(generation/backends/openai_compat.py, imported where it is used).

Public functions that take a model (LiveGeneration, generate_batch, run_strategy, run_sweep) accept
either a LoadedModel or a Backend; `as_backend` makes the first into the second.
"""
from __future__ import annotations

from generation.backends.base import (
    CAPABILITY_TEXT,
    Backend,
    BackendUnavailable,
    Capabilities,
    StreamOutcome,
    require,
)
from generation.backends.local import LocalBackend
from generation.models import LoadedModel


def as_backend(model: LoadedModel | Backend) -> Backend:
    return LocalBackend(model) if isinstance(model, LoadedModel) else model


__all__ = ["CAPABILITY_TEXT", "Backend", "BackendUnavailable", "Capabilities", "LocalBackend", "StreamOutcome",
           "as_backend", "require"]
