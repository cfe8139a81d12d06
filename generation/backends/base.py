"""The interface every generation backend implements, and what each one can do.

A backend turns a GenerationRequest into streamed TokenSteps (the Generate page, the CLI) and a
list of BatchRows into TraceRecords (strategies, sweeps). The local transformers backend can do
everything; a remote server may lack some of it, and `require` turns a missing capability into a
clear message instead of a silently different experiment.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from analysis.reasoning import ReasoningFormat
from analysis.records import TokenStep, TraceRecord
from generation.decoding import DecodeOutcome

if TYPE_CHECKING:  # batch imports streaming, which imports this package: types only
    from generation.batch import BatchRow, BatchSettings
    from generation.streaming import GenerationRequest

Progress = Callable[[int, int, int], None]  # (rows finished, rows total, tokens generated so far)

# What a capability means, in the words an "unavailable" message uses.
CAPABILITY_TEXT = {
    "logprobs": "per-token log-probabilities",
    "full_distribution": "the full next-token distribution (self-certainty, DeepConf confidence)",
    "token_ids": "continuing a trace from its token ids (step-level search)",
    "budget_forcing": "prefix continuation (s1 budget forcing: forcing the end of thinking or inserting 'Wait')",
    "hidden_states": "hidden states (MI, logit lens)",
}


@dataclass(frozen=True)
class Capabilities:
    logprobs: bool
    full_distribution: bool
    token_ids: bool
    budget_forcing: bool
    hidden_states: bool

    def missing(self, needs: Iterable[str]) -> list[str]:
        return [n for n in needs if not getattr(self, n)]


class BackendUnavailable(ValueError):
    """What was asked needs something this backend cannot do; the message says what and why."""


# What a backend's stream fills in as it runs (stop reason, forced positions, meta).
StreamOutcome = DecodeOutcome


@runtime_checkable
class Backend(Protocol):
    name: str  # the model name stored with every trace
    capabilities: Capabilities

    def default_format(self) -> ReasoningFormat: ...

    def stream(self, request: "GenerationRequest", stop_event: threading.Event, outcome: StreamOutcome,
               ignore_eos: bool = False) -> Iterator[TokenStep]: ...

    def sample(self, rows: Sequence["BatchRow"], fmt: ReasoningFormat, settings: "BatchSettings",
               stop_event: threading.Event | None = None, progress: Progress | None = None) -> list[TraceRecord]: ...


def require(backend: Backend, needs: Iterable[str], what: str) -> None:
    """Raise BackendUnavailable naming every capability `what` needs and `backend` lacks."""
    missing = backend.capabilities.missing(needs)
    if missing:
        wants = "; ".join(CAPABILITY_TEXT.get(m, m) for m in missing)
        how = ("Give the server backend a template tokenizer (--template, or 'Template tokenizer' in the app) "
               "so it continues prefixes through /v1/completions, or use the local backend."
               if missing == ["budget_forcing"] else "Use the local backend for it.")
        raise BackendUnavailable(f"{what} is unavailable with the backend {backend.name!r}: it needs {wants}, "
                                 f"which this backend does not offer. {how}")
