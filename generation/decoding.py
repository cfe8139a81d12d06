"""The decode loop: one token at a time with a KV cache, capturing what the app shows per token.

We run our own loop instead of `model.generate` because we need, at every step, the chosen token's
log-probability, the entropy and top alternatives, a stop event checked between steps, and the
ability to inject text (budget forcing) mid-generation. Benchmarked against `generate` in
bench/bench_streaming.py.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from analysis.records import ANSWER, FORCED, TOP_K_ALTERNATIVES, TokenStep
from analysis.reasoning import PhaseTracker, ReasoningFormat


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.95
    max_thinking_tokens: int = 256  # then the end of thinking is forced (s1 maximum budget)
    max_answer_tokens: int = 96
    seed: int | None = 0

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= 5:
            raise ValueError(f"temperature must be in [0, 5], not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.max_thinking_tokens < 1 or self.max_answer_tokens < 1:
            raise ValueError("token limits must be at least 1")

    def to_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_thinking_tokens": self.max_thinking_tokens,
            "max_answer_tokens": self.max_answer_tokens,
            "seed": self.seed,
        }


@dataclass
class DecodeOutcome:
    """Filled in by `decode` as it runs, so a caller sees how it ended even after a stop."""

    stop_reason: str = "error"
    forced_positions: list[int] = field(default_factory=list)  # tokens injected, not sampled
    meta: dict = field(default_factory=dict)  # what a backend wants kept in record.meta (e.g. why a stream broke)


_NUCLEUS_CANDIDATES = 1024


def sample_next(logits_bv: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Token ids [B] from raw logits [B, V]: greedy at temperature 0, else temperature + nucleus sampling."""
    if cfg.temperature == 0:
        return logits_bv.argmax(dim=-1)
    probs = torch.softmax(logits_bv / cfg.temperature, dim=-1)
    if cfg.top_p < 1:
        # The nucleus almost always lies among the most likely few hundred tokens: take those
        # (a partial sort) and fall back to sorting the whole vocabulary only when their mass falls
        # short of top_p. Same distribution; sorting [16, 49k] was a third of a batched step.
        sorted_probs, order = probs.topk(min(_NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
        if bool((sorted_probs.sum(dim=-1) < cfg.top_p).any()):
            sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= cfg.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        picked = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, picked).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def step_statistics(logits_bv: torch.Tensor, chosen_b: torch.Tensor, k: int = TOP_K_ALTERNATIVES):
    """Per row: log p(chosen), entropy (nats) and top-k (ids, log-probs) of the untempered distribution."""
    logprobs = torch.log_softmax(logits_bv.float(), dim=-1)
    chosen_lp = logprobs.gather(-1, chosen_b[:, None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
    top_lp, top_ids = logprobs.topk(k, dim=-1)
    return chosen_lp, entropy, top_ids, top_lp


class IncrementalDetokenizer:
    """Text pieces whose concatenation equals decoding the whole sequence.

    Decoding token by token breaks multi-byte characters split across tokens (each half decodes to
    U+FFFD); holding a piece back until it decodes cleanly is the approach of TGI and vLLM.
    """

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def decode(
    model,
    tokenizer,
    prompt_ids: list[int],
    cfg: SamplingConfig,
    fmt: ReasoningFormat,
    stop_event: threading.Event,
    outcome: DecodeOutcome,
    ignore_eos: bool = False,
) -> Iterator[TokenStep]:
    """Yield generated tokens one by one until EOS, the answer limit, or `stop_event`.

    When thinking reaches `cfg.max_thinking_tokens`, `fmt.forced_end_text` is injected token by
    token (each still yields its model log-probability) and the answer follows.
    `ignore_eos` keeps going to the limits; benchmarks use it to compare equal lengths.
    """
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(cfg.seed)
    eos = set() if ignore_eos else _eos_ids(model, tokenizer)
    tracker = PhaseTracker(fmt)
    detokenizer = IncrementalDetokenizer(tokenizer)
    forced_queue: list[int] = []
    n_thinking = n_answer = 0
    past = None
    inputs = torch.tensor([prompt_ids], dtype=torch.long, device=model.device)
    position = 0
    outcome.stop_reason = "error"
    with torch.inference_mode():
        while True:
            if stop_event.is_set():
                outcome.stop_reason = "stopped"
                return
            out = model(input_ids=inputs, cache=past, use_cache=True, logits_to_keep=1)
            past = out.cache
            logits = out.logits[:, -1, :]
            forced = bool(forced_queue)
            if forced:
                chosen = torch.tensor([forced_queue.pop(0)], device=logits.device)
                outcome.forced_positions.append(position)
            else:
                chosen = sample_next(logits, cfg, generator)
            token_id = int(chosen[0])
            if token_id in eos:
                outcome.stop_reason = "eos"
                return
            chosen_lp, entropy, top_ids, top_lp = step_statistics(logits, chosen)
            text = detokenizer.add(token_id)
            # The tracker still reads forced text (it is what ends thinking); forced tokens are
            # counted apart, so sampled thinking never exceeds max_thinking_tokens.
            tracked = tracker.feed(text)
            phase = FORCED if forced else tracked
            ids = top_ids[0].tolist()
            yield TokenStep(
                position=position,
                token_id=token_id,
                text=text,
                logprob=float(chosen_lp[0]),
                entropy=float(entropy[0]),
                top_ids=tuple(ids),
                top_texts=tuple(tokenizer.batch_decode([[i] for i in ids])),
                top_logprobs=tuple(top_lp[0].tolist()),
                phase=phase,
            )
            position += 1
            if phase == ANSWER:
                n_answer += 1
            elif phase != FORCED:
                n_thinking += 1
            if n_answer >= cfg.max_answer_tokens:
                outcome.stop_reason = "max_tokens"
                return
            if n_thinking >= cfg.max_thinking_tokens and not tracker.in_answer and not forced_queue:
                if outcome.forced_positions:
                    # The forced text did not end thinking (a marker the format does not recognise).
                    outcome.stop_reason = "max_tokens"
                    return
                forced_queue = tokenizer(fmt.forced_end_text, add_special_tokens=False)["input_ids"]
            inputs = chosen.view(1, 1)
