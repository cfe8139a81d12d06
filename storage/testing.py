"""Synthetic traces for tests and benchmarks (here so every layer's tests can share them).

Deterministic for a given seed; no model involved.
"""
from __future__ import annotations

import numpy as np

from analysis.records import ANSWER, THINKING, TokenColumns, TraceRecord

_VOCAB = [f"tok{i}" for i in range(997)] + [" the", "\u00e9t\u00e9", "\U0001f914"]


def make_tokens(n: int, k: int = 3, seed: int = 0, n_thinking: int | None = None) -> TokenColumns:
    """n tokens with k alternatives each; the first n_thinking (default: 3/4) are thinking."""
    rng = np.random.default_rng(seed)
    n_thinking = (3 * n) // 4 if n_thinking is None else n_thinking
    ids = rng.integers(0, len(_VOCAB), n)
    top = rng.integers(0, len(_VOCAB), (n, k))
    logprob = -rng.exponential(1.0, n).astype(np.float32)
    if n > 2:
        logprob[1] = np.nan  # unknown values must survive storage too
    return TokenColumns(
        token_id=ids.astype(np.int64),
        text=[_VOCAB[i] for i in ids.tolist()],
        logprob=logprob,
        entropy=rng.random(n, dtype=np.float32) * 3,
        top_ids=top.astype(np.int64),
        top_texts=[[_VOCAB[i] for i in row] for row in top.tolist()],
        top_logprobs=-np.sort(rng.exponential(1.0, (n, k)).astype(np.float32), axis=1),
        phase=np.where(np.arange(n) < n_thinking, THINKING, ANSWER).astype(np.int8),
    )


def make_record(
    prompt: str = "What is 2 + 3?",
    model: str = "test-model",
    n_tokens: int = 8,
    k: int = 3,
    seed: int = 0,
    **fields,
) -> TraceRecord:
    """A TraceRecord with synthetic tokens; any TraceRecord field can be overridden."""
    values = dict(
        prompt=prompt,
        model=model,
        thinking_text="Let me add the numbers.",
        answer_text="5",
        tokens=make_tokens(n_tokens, k, seed),
        stop_reason="eos",
        latency_s=0.25,
        reference_answer="5",
        extracted_answer="5",
        correct=True,
        settings={"temperature": 0.7, "max_new_tokens": 256},
        meta={"seed": seed},
    )
    values.update(fields)
    return TraceRecord(**values)
