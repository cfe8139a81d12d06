"""The local transformers backend: today's decode loop and batched sampler behind the Backend interface."""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from analysis.reasoning import ReasoningFormat
from analysis.records import TokenStep, TraceRecord
from generation.backends.base import Capabilities, Progress, StreamOutcome
from generation.decoding import decode
from generation.models import LoadedModel
from generation.prompting import detect_format, encode_prompt

LOCAL_CAPABILITIES = Capabilities(logprobs=True, full_distribution=True, token_ids=True, budget_forcing=True,
                                  hidden_states=True)


class LocalBackend:
    capabilities = LOCAL_CAPABILITIES

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.name = loaded.name

    def default_format(self) -> ReasoningFormat:
        return detect_format(self.loaded.tokenizer)

    def stream(self, request, stop_event: threading.Event, outcome: StreamOutcome,
               ignore_eos: bool = False) -> Iterator[TokenStep]:
        prompt_ids = encode_prompt(self.loaded.tokenizer, request.prompt, request.fmt)
        yield from decode(self.loaded.model, self.loaded.tokenizer, prompt_ids, request.sampling, request.fmt,
                          stop_event, outcome, ignore_eos=ignore_eos)

    def sample(self, rows: Sequence, fmt: ReasoningFormat, settings, stop_event: threading.Event | None = None,
               progress: Progress | None = None) -> list[TraceRecord]:
        from generation.batch import generate_batch  # batch imports streaming, which imports this package

        return generate_batch(self.loaded, rows, fmt, settings, stop_event, progress)
