"""Batched decoding: N rows (samples of one prompt, or several prompts) advance one token per step.

Why not N calls of `decode`: at batch 1 a 135M model on CPU is bound by per-call overhead, so one
forward pass over N rows costs little more than one over a single row (bench/bench_batch.py).

How rows stay aligned: every active row feeds exactly one token per step (sampled or forced), so
all rows share the cache column index. Distinct prompts are left-padded; padding is masked and
position ids count only unmasked tokens. Identical prompts are prefilled once and the cache is
expanded to their rows. Finished rows are dropped from the cache so they cost nothing.

s1 budget forcing per row:
- maximum: when a row's thinking reaches its budget, its `fmt.forced_end_text` is injected.
- minimum: when a row ends thinking (delimiter or EOS) before `min_thinking_tokens`, the delimiter
  tokens are removed (masked out of the cache, and their positions reused, so the model sees the
  text without them), "Wait" is injected instead, up to `max_waits` times. Injected "Wait" tokens
  count as thinking tokens against the budget. A token that only partly overlaps the delimiter is
  removed whole.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from analysis.records import ANSWER, TOP_K_ALTERNATIVES, TokenStep, TraceRecord
from analysis.reasoning import PhaseTracker, ReasoningFormat, find_boundary
from generation.backends import Backend
from generation.decoding import DecodeOutcome, IncrementalDetokenizer, SamplingConfig, _eos_ids, sample_next
from generation.models import LoadedModel
from generation.prompting import encode_prompt
from generation.streaming import GenerationRequest, build_record

# DeepConf token confidence uses the top-20 log-probs (docs/METHODS.md §4).
CONFIDENCE_K = 20

Progress = Callable[[int, int, int], None]  # (rows finished, rows total, tokens generated so far)


@dataclass(frozen=True)
class BudgetForcing:
    """The s1 minimum budget: replace an early end of thinking with `wait_text`, up to `max_waits` times."""

    min_thinking_tokens: int = 0
    max_waits: int = 0
    wait_text: str = "Wait"

    def __post_init__(self) -> None:
        if self.min_thinking_tokens < 0 or self.max_waits < 0:
            raise ValueError("min_thinking_tokens and max_waits must be >= 0")
        if not self.wait_text.strip():
            raise ValueError("wait_text must not be empty")

    def may_wait(self, n_thinking: int, n_waits: int) -> bool:
        """May an end of thinking reached after n_thinking tokens and n_waits insertions become "Wait"?"""
        return n_thinking < self.min_thinking_tokens and n_waits < self.max_waits

    def wait_piece(self, text_so_far: str) -> str:
        """The text to inject after text_so_far: wait_text, with a space unless one is there already."""
        return ("" if not text_so_far or text_so_far[-1].isspace() else " ") + self.wait_text


@dataclass(frozen=True)
class EarlyStop:
    """DeepConf online: stop a row once the mean confidence of its last `window` tokens < `threshold`."""

    threshold: float
    window: int = 2048

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold):
            raise ValueError("EarlyStop.threshold must be finite")
        if self.window < 1:
            raise ValueError("EarlyStop.window must be >= 1")


@dataclass(frozen=True)
class BatchSettings:
    sampling: SamplingConfig
    forcing: BudgetForcing = BudgetForcing()
    early_stop: EarlyStop | None = None
    ignore_eos: bool = False  # benchmarks: run every row to its limits
    # Step-level search: a row also ends (meta["step_end"]) once its thinking holds this text after
    # some content; steps are separated by a blank line (search-and-learn).
    step_delimiter: str | None = None

    def __post_init__(self) -> None:
        if self.forcing.min_thinking_tokens >= self.sampling.max_thinking_tokens:
            raise ValueError(
                f"the minimum thinking budget ({self.forcing.min_thinking_tokens}) must be below the maximum "
                f"({self.sampling.max_thinking_tokens})"
            )

    def to_dict(self) -> dict:
        out = {**self.sampling.to_dict(), "min_thinking_tokens": self.forcing.min_thinking_tokens,
               "max_waits": self.forcing.max_waits, "wait_text": self.forcing.wait_text}
        if self.early_stop is not None:
            out["early_stop"] = {"threshold": self.early_stop.threshold, "window": self.early_stop.window}
        return out


@dataclass(frozen=True)
class BatchRow:
    """One sample to generate. `max_thinking_tokens` overrides the settings' budget for this row."""

    prompt: str
    reference_answer: str | None = None
    prompt_source: str = "user"
    max_thinking_tokens: int | None = None
    prefix_ids: tuple[int, ...] = ()  # tokens already generated (earlier search steps): context, not output

    def __post_init__(self) -> None:
        if not self.prompt or not self.prompt.strip():
            raise ValueError("The prompt is empty: type a question first.")
        if self.max_thinking_tokens is not None and self.max_thinking_tokens < 1:
            raise ValueError("a row's thinking budget must be at least 1 token")


@dataclass
class _Entry:
    token_id: int
    piece: str
    logprob: float
    entropy: float
    top_ids: tuple[int, ...]
    top_logprobs: tuple[float, ...]
    confidence: float  # DeepConf C_t
    self_certainty: float  # KL(U || p_t), nats
    col: int  # cache column where this token is (or will be) fed
    forced: bool


@dataclass
class _Row:
    spec: BatchRow
    budget: int
    next_pos: int
    entries: list[_Entry] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)
    n_thinking: int = 0
    n_answer: int = 0
    waits: list[int] = field(default_factory=list)  # entry index of each injected "Wait"
    forced_end_at: int | None = None  # entry index where the forced end of thinking starts
    removed: list[str] = field(default_factory=list)  # delimiter texts taken out
    stop_reason: str | None = None
    early_stopped: bool = False
    step_end: bool = False
    finished_s: float = 0.0

    detok: IncrementalDetokenizer | None = None
    tracker: PhaseTracker | None = None


def _stats(logits_rv: torch.Tensor, chosen_r: torch.Tensor):
    """One log-softmax pass: log p(chosen), entropy, top-5, DeepConf confidence, self-certainty per row."""
    lp = torch.log_softmax(logits_rv.float(), dim=-1)
    chosen_lp = lp.gather(-1, chosen_r[:, None]).squeeze(-1)
    entropy = -(lp.exp() * lp).sum(dim=-1)
    top_lp, top_ids = lp.topk(CONFIDENCE_K, dim=-1)
    confidence = -top_lp.mean(dim=-1)
    self_certainty = -lp.mean(dim=-1) - math.log(lp.shape[-1])
    k = TOP_K_ALTERNATIVES
    return chosen_lp, entropy, top_ids[:, :k], top_lp[:, :k], confidence, self_certainty


class _TextCache:
    """Token id -> text, so the top alternatives are not decoded again at every step."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self._texts: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> tuple[str, ...]:
        missing = [i for i in ids if i not in self._texts]
        if missing:
            for i, text in zip(missing, self._tok.batch_decode([[i] for i in missing])):
                self._texts[i] = text
        return tuple(self._texts[i] for i in ids)


def _replay(row: _Row, tokenizer, fmt: ReasoningFormat) -> None:
    """Rebuild the detokenizer and phase tracker from the kept tokens (after a removal)."""
    row.detok = IncrementalDetokenizer(tokenizer)
    row.tracker = PhaseTracker(fmt)
    for token_id in row.spec.prefix_ids:
        row.tracker.feed(row.detok.add(token_id))
    for e in row.entries:
        e.piece = row.detok.add(e.token_id)
        row.tracker.feed(e.piece)


def generate_batch(
    loaded: LoadedModel | Backend,
    rows: Sequence[BatchRow],
    fmt: ReasoningFormat,
    settings: BatchSettings,
    stop_event: threading.Event | None = None,
    progress: Progress | None = None,
) -> list[TraceRecord]:
    """Generate every row; one TraceRecord per row, in row order (also for rows stopped early).

    Rows still running when `stop_event` is set end with stop_reason "stopped".
    record.meta gains: wait_positions / forced_end_position (token indices in the stored trace),
    removed_delimiters, token_confidence and token_self_certainty (one float per token), batch_size.
    """
    if len(rows) == 0:
        raise ValueError("N must be at least 1: nothing to generate")
    if not isinstance(loaded, LoadedModel):  # another backend (a remote server) samples its own way
        return loaded.sample(rows, fmt, settings, stop_event, progress)
    model, tok = loaded.model, loaded.tokenizer
    cfg = settings.sampling
    stop_event = stop_event or threading.Event()
    generator = torch.Generator(device=model.device).manual_seed(cfg.seed) if cfg.seed is not None else None
    eos = set() if settings.ignore_eos else _eos_ids(model, tok)
    texts = _TextCache(tok)
    forced_end_ids = tok(fmt.forced_end_text, add_special_tokens=False)["input_ids"]
    start = time.perf_counter()

    # Prefill each distinct prompt once (left-padded), then expand the cache to the rows.
    distinct: dict[tuple[str, tuple[int, ...]], int] = {}
    prompt_ids: list[list[int]] = []
    encoded: dict[str, list[int]] = {}
    for r in rows:
        if (r.prompt, r.prefix_ids) not in distinct:
            distinct[(r.prompt, r.prefix_ids)] = len(prompt_ids)
            if r.prompt not in encoded:
                encoded[r.prompt] = encode_prompt(tok, r.prompt, fmt)
            prompt_ids.append(encoded[r.prompt] + list(r.prefix_ids))
    width = max(len(p) for p in prompt_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids_up = torch.full((len(prompt_ids), width), pad, dtype=torch.long, device=model.device)
    mask_up = torch.zeros((len(prompt_ids), width), dtype=torch.long, device=model.device)
    for u, p in enumerate(prompt_ids):
        ids_up[u, width - len(p):] = torch.tensor(p, device=model.device)
        mask_up[u, width - len(p):] = 1
    pos_up = (mask_up.cumsum(-1) - 1).clamp(min=0)

    state = [
        _Row(spec=r, budget=r.max_thinking_tokens or cfg.max_thinking_tokens,
             next_pos=len(prompt_ids[distinct[(r.prompt, r.prefix_ids)]]))
        for r in rows
    ]
    for row in state:
        row.detok, row.tracker = IncrementalDetokenizer(tok), PhaseTracker(fmt)
        for token_id in row.spec.prefix_ids:  # the prefix counts against the budgets, as text it is context
            if row.tracker.feed(row.detok.add(token_id)) == ANSWER:
                row.n_answer += 1
            else:
                row.n_thinking += 1
    active = list(range(len(state)))  # state index of each cache row
    n_tokens = 0
    with torch.inference_mode():
        out = model(input_ids=ids_up, attention_mask=mask_up, position_ids=pos_up, use_cache=True, logits_to_keep=1)
        cache = out.cache
        which = torch.tensor([distinct[(r.prompt, r.prefix_ids)] for r in rows], device=model.device)
        cache.batch_select_indices(which)
        logits = out.logits[:, -1, :][which]
        mask = mask_up[which]
        col = width  # cache column the tokens chosen now will occupy
        while active:
            if stop_event.is_set():
                for i in active:
                    state[i].stop_reason = "stopped"
                    state[i].finished_s = time.perf_counter() - start
                break
            sampled = sample_next(logits, cfg, generator)
            chosen = sampled.clone()
            forced = [False] * len(active)
            for j, i in enumerate(active):
                if state[i].queue:
                    chosen[j], forced[j] = state[i].queue.pop(0), True
            stats = _stats(logits, chosen)
            keep: list[int] = []
            for j, i in enumerate(active):
                row = state[i]
                token_id = int(chosen[j])
                if token_id in eos and not forced[j]:
                    if not _may_wait(row, settings):
                        _finish(row, "eos", start)
                        continue
                    # An early EOS: "Wait" instead, scored under the same distribution.
                    chosen[j], forced[j] = _start_wait(row, tok, settings), True
                    stats = _restat(stats, logits, chosen, j)
                _append(row, int(chosen[j]), stats, j, col, forced[j])
                if row.tracker.in_answer and not forced[j] and row.forced_end_at is None and _may_wait(row, settings):
                    chosen[j] = _remove_delimiter_and_wait(row, tok, fmt, settings, mask, j)
                    stats = _restat(stats, logits, chosen, j)
                    _append(row, int(chosen[j]), stats, j, col, True)
                n_tokens += 1
                if _after_token(row, settings, forced_end_ids):
                    _finish(row, row.stop_reason, start)
                    continue
                keep.append(j)
            if progress is not None:
                progress(sum(s.stop_reason is not None for s in state), len(state), n_tokens)
            if not keep:
                break
            if len(keep) < len(active):
                idx = torch.tensor(keep, device=model.device)
                cache.batch_select_indices(idx)
                mask = mask[idx]
                chosen = chosen[idx]
                active = [active[j] for j in keep]
            positions = torch.tensor([[state[i].next_pos] for i in active], device=model.device)
            for i in active:
                state[i].next_pos += 1
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=mask.device)], dim=1)
            out = model(input_ids=chosen.view(-1, 1), attention_mask=mask, position_ids=positions, cache=cache,
                        use_cache=True, logits_to_keep=1)
            cache = out.cache
            logits = out.logits[:, -1, :]
            col += 1
    return [_record(loaded, row, fmt, settings, len(rows), texts) for row in state]


def _may_wait(row: _Row, settings: BatchSettings) -> bool:
    return settings.forcing.may_wait(row.n_thinking, len(row.waits))


def _wait_ids(row: _Row, tok, settings: BatchSettings) -> list[int]:
    text = settings.forcing.wait_piece("".join(e.piece for e in row.entries))
    return tok(text, add_special_tokens=False)["input_ids"]


def _start_wait(row: _Row, tok, settings: BatchSettings) -> int:
    ids = _wait_ids(row, tok, settings)
    row.waits.append(len(row.entries))
    row.queue = ids[1:] + row.queue
    return ids[0]


def _remove_delimiter_and_wait(
    row: _Row, tok, fmt: ReasoningFormat, settings: BatchSettings, mask: torch.Tensor, mask_row: int
) -> int:
    """Take the delimiter (and any token overlapping it) out of the row, then start a "Wait"."""
    text = "".join(e.piece for e in row.entries)
    boundary = find_boundary(text, fmt)
    cut_char = boundary.think_end if boundary is not None else len(text)
    ends = 0
    first_removed = len(row.entries)
    for k, e in enumerate(row.entries):
        if ends + len(e.piece) > cut_char:
            first_removed = k
            break
        ends += len(e.piece)
    removed = row.entries[first_removed:]
    row.entries = row.entries[:first_removed]
    row.removed.append("".join(e.piece for e in removed))
    # Removed tokens already fed to the model are masked out; their positions are reused.
    fed_cols = [e.col for e in removed[:-1]]
    if fed_cols:
        mask[mask_row, fed_cols] = 0
        row.next_pos -= len(fed_cols)
    _replay(row, tok, fmt)
    row.n_thinking = len(row.spec.prefix_ids) + len(row.entries)  # the prefix was all thinking: no delimiter yet
    row.n_answer = 0
    return _start_wait(row, tok, settings)


def _restat(stats, logits, chosen, j):
    """Recompute the statistics of row j after its chosen token was replaced."""
    new = _stats(logits[j : j + 1], chosen[j : j + 1])
    for old, fresh in zip(stats, new):
        old[j] = fresh[0]
    return stats


def _append(row: _Row, token_id: int, stats, j: int, col: int, forced: bool) -> None:
    chosen_lp, entropy, top_ids, top_lp, confidence, sc = stats
    piece = row.detok.add(token_id)
    phase = row.tracker.feed(piece)
    ids = top_ids[j].tolist()
    row.entries.append(_Entry(
        token_id=token_id, piece=piece, logprob=float(chosen_lp[j]), entropy=float(entropy[j]), top_ids=tuple(ids),
        top_logprobs=tuple(top_lp[j].tolist()), confidence=float(confidence[j]), self_certainty=float(sc[j]),
        col=col, forced=forced,
    ))
    if phase == ANSWER:
        row.n_answer += 1
    else:
        row.n_thinking += 1


def _after_token(row: _Row, settings: BatchSettings, forced_end_ids: list[int]) -> bool:
    """Budget checks after a token; True when the row is done (stop_reason set)."""
    cfg = settings.sampling
    if row.n_answer >= cfg.max_answer_tokens:
        row.stop_reason = "max_tokens"
        return True
    es = settings.early_stop
    if es is not None and len(row.entries) >= es.window:
        window = row.entries[-es.window:]
        if sum(e.confidence for e in window) / es.window < es.threshold:
            row.stop_reason, row.early_stopped = "stopped", True
            return True
    delim = settings.step_delimiter
    if delim and not row.tracker.in_answer and not row.queue and row.forced_end_at is None:
        text = "".join(e.piece for e in row.entries).lstrip()
        if delim in text:
            row.stop_reason, row.step_end = "max_tokens", True
            return True
    if row.n_thinking >= row.budget and not row.tracker.in_answer and not row.queue:
        if row.forced_end_at is not None:
            # The forced text did not end thinking (a marker the format does not recognise).
            row.stop_reason = "max_tokens"
            return True
        row.forced_end_at = len(row.entries)
        row.queue = list(forced_end_ids)
    return False


def _finish(row: _Row, reason: str, start: float) -> None:
    row.stop_reason = reason
    row.finished_s = time.perf_counter() - start


def _record(
    loaded: LoadedModel, row: _Row, fmt: ReasoningFormat, settings: BatchSettings, batch_size: int, texts: _TextCache
) -> TraceRecord:
    steps = [
        TokenStep(
            position=k, token_id=e.token_id, text=e.piece, logprob=e.logprob, entropy=e.entropy, top_ids=e.top_ids,
            top_texts=texts(list(e.top_ids)), top_logprobs=e.top_logprobs, phase=0,
        )
        for k, e in enumerate(row.entries)
    ]
    sampling = settings.sampling
    if row.budget != sampling.max_thinking_tokens:
        sampling = SamplingConfig(sampling.temperature, sampling.top_p, row.budget, sampling.max_answer_tokens,
                                  sampling.seed)
    request = GenerationRequest(row.spec.prompt, sampling, fmt, row.spec.reference_answer, row.spec.prompt_source)
    outcome = DecodeOutcome(stop_reason=row.stop_reason or "error",
                            forced_positions=[k for k, e in enumerate(row.entries) if e.forced])
    record = build_record(request, loaded.name, steps, outcome, row.finished_s)
    record.settings.update(
        min_thinking_tokens=settings.forcing.min_thinking_tokens, max_waits=settings.forcing.max_waits,
        wait_text=settings.forcing.wait_text,
    )
    record.meta.update(
        batch_size=batch_size,
        wait_positions=list(row.waits),
        removed_delimiters=list(row.removed),
        forced_end_position=row.forced_end_at,
        token_confidence=[round(e.confidence, 5) for e in row.entries],
        token_self_certainty=[round(e.self_certainty, 5) for e in row.entries],
    )
    if row.early_stopped:
        record.meta["deepconf_early_stop"] = True
    if row.step_end:
        record.meta["step_end"] = True
    return record
