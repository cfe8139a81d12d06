"""Thought Anchors live: resample a stored trace from every sentence cut, and branch it (docs/METHODS.md §8).

Rollouts continue the trace's own thinking text, re-tokenized as a token prefix (BatchRow.prefix_ids),
so the model sees the prompt and the thinking up to the cut as if it had written them. All N samples
of one cut are one generate_batch call (the prefix is prefilled once and expanded to N rows); each
finished batch is stored at once (storage/anchors.py), so Stop loses only the batch in progress and a
later run resumes from there. Forced-answer rollouts append the format's forced end of thinking to
the prefix and read a short answer.

Servers: the OpenAI-compatible backend continues its own text internally but its public `sample`
takes no prefix yet, so resampling and branching need the local backend (a clear refusal otherwise).
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from analysis.anchors import AnchorMath, Rollout, SentenceImportance, sentence_importance
from analysis.answers import answer_key, extract_answer, grade_trace
from analysis.reasoning import ReasoningFormat, find_boundary, split_reasoning
from analysis.records import TOP_K_ALTERNATIVES, TokenStep, TraceRecord
from analysis.steps import Step, split_steps
from generation.analyze import trace_format
from generation.backends import Backend, require
from generation.batch import BatchRow, BatchSettings, generate_batch
from generation.decoding import DecodeOutcome, IncrementalDetokenizer, SamplingConfig
from generation.embeddings import Embedder, embedder_name
from generation.models import LoadedModel
from generation.streaming import GenerationRequest, build_record
from storage.anchors import Branch, StoredRollout, get_rollouts, save_branch, save_rollouts
from storage.config import StorageConfig
from storage.traces import get_trace, save_traces

Progress = Callable[[int, int, int], None]  # (batches done, batches total, tokens generated in this batch)


@dataclass(frozen=True)
class AnchorSettings:
    """What the rollouts of one anchors run depend on (all of it goes into the stored settings key).

    samples: N continuations per cut and kind (paper: 100; 8 shows the strongest anchors on short traces).
    max_new_tokens: new thinking tokens per continuation, then the end of thinking is forced.
    answer_tokens: answer tokens after thinking ends (free rollouts); forced_answer_tokens: for the
    forced-answer rollouts, which only need the answer itself.
    forced: also run the forced-answer rollouts (cheap: forced_answer_tokens each).
    seed: batch c of kind k is seeded with seed + 2c (+1 for forced): reruns reproduce it.
    """

    samples: int = 8
    max_new_tokens: int = 256
    answer_tokens: int = 48
    forced_answer_tokens: int = 16
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    forced: bool = True
    embedder_path: str | None = None

    def __post_init__(self) -> None:
        for name, lo, hi in (("samples", 1, 1024), ("max_new_tokens", 1, 32768), ("answer_tokens", 1, 4096),
                             ("forced_answer_tokens", 1, 4096), ("seed", 0, 2**31 - 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"AnchorSettings.{name} must be an integer in [{lo}, {hi}], got {v!r}")
        if not isinstance(self.forced, bool):
            raise TypeError("AnchorSettings.forced must be a bool")
        SamplingConfig(self.temperature, self.top_p)  # validates temperature and top_p

    def key(self, model: str) -> str:
        """The settings key rollouts are stored under; `samples` is left out, so more samples extend a run."""
        fields = {**asdict(self), "model": model, "embedder": embedder_name(self.embedder_path)}
        fields.pop("samples")
        fields.pop("embedder_path")
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def stored(self, model: str) -> dict:
        return {**asdict(self), "model": model, "embedder": embedder_name(self.embedder_path)}


@dataclass(frozen=True)
class Cut:
    """The point before sentence `index` (index == n_sentences: after the last one)."""

    index: int
    char: int  # characters of the thinking text kept
    original: str | None  # the sentence that follows the cut in the trace (None after the last one)


def cuts(thinking: str) -> tuple[list[Step], list[Cut]]:
    """The sentences of the thinking and the M + 1 cuts between them. A cut keeps the thinking up to the
    end of the previous sentence (no trailing space), so the model writes the next word's space itself."""
    steps = split_steps(thinking, "sentence")
    out = [Cut(c, 0 if c == 0 else steps[c - 1].end, steps[c].text if c < len(steps) else None)
           for c in range(len(steps) + 1)]
    return steps, out


def thinking_head(fmt: ReasoningFormat) -> str:
    """What the model's output holds before its thinking: the opening tag, unless the template opened it."""
    if fmt.kind == "think_tags" and not fmt.starts_in_thinking and not fmt.thinking_off:
        return fmt.open_tag + "\n"
    return ""


@dataclass(frozen=True)
class Estimate:
    n_sentences: int
    n_rollouts: int  # still to generate (stored ones are not counted)
    expected_tokens: int
    tokens_per_s: float  # the speed the time is computed at (0: unknown)
    seconds: float  # NaN when the speed is unknown
    basis: str  # where the speed came from

    def describe(self) -> str:
        time_text = f"about {self.seconds:.0f} s" if math.isfinite(self.seconds) else "time unknown"
        return (f"{self.n_sentences} sentences × N → {self.n_rollouts} rollouts to generate, about "
                f"{self.expected_tokens:,} tokens, {time_text} ({self.basis})")


def estimate(record: TraceRecord, settings: AnchorSettings, stored: int = 0, tokens_per_s: float | None = None) -> Estimate:
    """Sentences × N × expected tokens: a continuation from a cut is expected to run as long as the
    original did from there (capped by max_new_tokens), plus the answer; time at `tokens_per_s`, else
    at the speed the trace itself was generated (one row at a time: batches run faster, so an upper bound)."""
    steps, all_cuts = cuts(record.thinking_text)
    n_think = max(record.n_thinking_tokens, 1)
    chars = max(len(record.thinking_text), 1)
    per_cut = [min(settings.max_new_tokens, round(n_think * (chars - c.char) / chars)) + settings.answer_tokens
               for c in all_cuts]
    tokens = settings.samples * sum(per_cut)
    n = settings.samples * len(all_cuts)
    if settings.forced:
        tokens += settings.samples * len(all_cuts) * settings.forced_answer_tokens
        n *= 2
    done_share = min(stored / n, 1.0) if n else 1.0
    tokens = round(tokens * (1 - done_share))
    if tokens_per_s and tokens_per_s > 0:
        speed, basis = tokens_per_s, "at the speed measured in this session"
    elif record.tokens_per_s > 0:
        speed, basis = record.tokens_per_s, "at the speed this trace was generated, one row at a time"
    else:
        speed, basis = 0.0, "no measured speed yet"
    return Estimate(len(steps), max(n - stored, 0), tokens, speed, tokens / speed if speed else math.nan, basis)


@dataclass(frozen=True)
class AnchorRun:
    key: str
    n_sentences: int
    generated: int  # rollouts generated and stored by this call
    stored: int  # rollouts stored under the key now
    total: int  # rollouts the settings ask for
    stopped: bool
    tokens_per_s: float  # batched speed measured by this call (0 when nothing ran)


def _local(loaded: LoadedModel | Backend, what: str) -> LoadedModel:
    if not isinstance(loaded, LoadedModel):
        require(loaded, ["token_ids"], what)  # raises BackendUnavailable with the reason
        raise ValueError(f"{what} needs the local backend: this backend's batch sampler takes no text prefix")
    return loaded


def _prefix_ids(loaded: LoadedModel, text: str) -> tuple[int, ...]:
    return tuple(loaded.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


def _read(record: TraceRecord, context: str, fmt: ReasoningFormat, reference: str | None):
    """(generated text, extracted answer, its key as JSON, grade, new thinking) of a rollout whose
    output follows `context` (the prefix it was given)."""
    generated = record.meta.get("raw_text", record.thinking_text + record.answer_text)
    full = context + generated
    thinking, answer = split_reasoning(full, fmt)
    extracted = extract_answer(answer, thinking, fmt=fmt)
    key = answer_key(extracted)
    boundary = find_boundary(full, fmt)
    end = boundary.think_end if boundary is not None else len(full)
    new_thinking = full[len(context):end] if end > len(context) else ""
    correct = grade_trace(record.stop_reason, extracted, reference, meta=record.meta)
    return generated, extracted, None if key is None else json.dumps(list(key)), correct, new_thinking


def run_anchors(
    config: StorageConfig,
    loaded: LoadedModel | Backend,
    trace_id: int,
    settings: AnchorSettings,
    embedder: Embedder,
    progress: Progress | None = None,
    stop_event: threading.Event | None = None,
) -> AnchorRun:
    """Generate and store every missing rollout of the trace (free, then forced, cut by cut)."""
    loaded = _local(loaded, "Thought Anchors resampling")
    stop_event = stop_event or threading.Event()
    stored_trace = get_trace(config, trace_id)
    if stored_trace is None:
        raise ValueError(f"No trace {trace_id}: pick a stored trace.")
    record = stored_trace.record
    if not record.thinking_text.strip():
        raise ValueError(f"Trace {trace_id} has no thinking text: there is no sentence to resample.")
    if embedder.name != embedder_name(settings.embedder_path):
        raise ValueError(f"the embedder {embedder.name!r} is not the one the settings name")
    fmt = trace_format(record, loaded.tokenizer)
    steps, all_cuts = cuts(record.thinking_text)
    head = thinking_head(fmt)
    key = settings.key(loaded.name)
    have: dict[tuple[str, int], set[int]] = {}
    for r in get_rollouts(config, trace_id, key):
        have.setdefault((r.kind, r.cut), set()).add(r.sample)
    kinds = ("free", "forced") if settings.forced else ("free",)
    jobs = [(kind, c) for kind in kinds for c in all_cuts
            if len(have.get((kind, c.index), set()) & set(range(settings.samples))) < settings.samples]
    total = len(kinds) * len(all_cuts) * settings.samples
    generated, tokens_made, seconds = 0, 0, 0.0
    for done, (kind, cut) in enumerate(jobs):
        if stop_event.is_set():
            break
        missing = sorted(set(range(settings.samples)) - have.get((kind, cut.index), set()))
        context = head + record.thinking_text[:cut.char]
        if kind == "forced":
            context += fmt.forced_end_text
        ids = _prefix_ids(loaded, context)
        answer_budget = settings.forced_answer_tokens if kind == "forced" else settings.answer_tokens
        # The prefix counts against the thinking budget (generate_batch), so the budget is prefix + new.
        sampling = SamplingConfig(settings.temperature, settings.top_p, len(ids) + settings.max_new_tokens,
                                  answer_budget, settings.seed + 2 * cut.index + (kind == "forced") + 7919 * missing[0])
        rows = [BatchRow(record.prompt, record.reference_answer, record.prompt_source, prefix_ids=ids)] * len(missing)
        start = time.perf_counter()
        records = generate_batch(loaded, rows, fmt, BatchSettings(sampling), stop_event,
                                 None if progress is None else lambda _f, _n, t, d=done: progress(d, len(jobs), t))
        seconds += time.perf_counter() - start
        if any(r.stop_reason == "stopped" for r in records):
            break  # a stopped batch is incomplete: drop it, the next run generates it again
        tokens_made += sum(len(r.tokens) for r in records)
        items = [_read(r, context, fmt, record.reference_answer) for r in records]
        news = [(split_steps(new)[:1] or [None])[0] if kind == "free" else None for *_, new in items]
        sims = _similarities(embedder, cut.original, [None if s is None else s.text for s in news])
        save_rollouts(config, trace_id, key, settings.stored(loaded.name), len(steps), [
            StoredRollout(cut.index, kind, sample, gen, ans, akey, correct, r.stop_reason, len(r.tokens),
                          None if s is None else s.text, sim)
            for sample, r, (gen, ans, akey, correct, _), s, sim in zip(missing, records, items, news, sims)
        ])
        generated += len(records)
        have.setdefault((kind, cut.index), set()).update(missing)
        if progress is not None:
            progress(done + 1, len(jobs), 0)
    stored = sum(len(v & set(range(settings.samples))) for v in have.values())
    return AnchorRun(key, len(steps), generated, stored, total, stored < total,
                     tokens_made / seconds if seconds > 0 else 0.0)


def _similarities(embedder: Embedder, original: str | None, news: list[str | None]) -> list[float | None]:
    """Cosine of each new first sentence with the original sentence; None where either is missing
    (the last cut has no original; a rollout that ended thinking at once has no new sentence)."""
    if original is None or all(t is None for t in news):
        return [None] * len(news)
    texts = [t for t in news if t is not None]
    vectors = embedder.encode([original, *texts])
    sims = iter((vectors[1:] @ vectors[0]).tolist())
    return [None if t is None else float(next(sims)) for t in news]


@dataclass(frozen=True)
class AnchorResult:
    steps: list[Step]
    free: list[list[Rollout]]  # per cut 0..M
    forced: list[list[Rollout]] | None
    scores: list[SentenceImportance]
    stored: list[StoredRollout]
    complete: bool


def load_importance(config: StorageConfig, trace_id: int, record: TraceRecord, key: str, samples: int | None = None,
                    math_settings: AnchorMath = AnchorMath()) -> AnchorResult | None:
    """Importance scores from the stored rollouts under `key` (the first `samples` per cut, all when
    None); None when nothing is stored. Incomplete cuts count what they have."""
    rows = [r for r in get_rollouts(config, trace_id, key) if samples is None or r.sample < samples]
    if not rows:
        return None
    steps, all_cuts = cuts(record.thinking_text)
    free: list[list[Rollout]] = [[] for _ in all_cuts]
    forced: list[list[Rollout]] = [[] for _ in all_cuts]
    for r in rows:
        if r.cut >= len(all_cuts):
            continue  # stored for another split of the text (the splitter changed)
        target = free if r.kind == "free" else forced
        akey = None if r.answer_key is None else tuple(json.loads(r.answer_key))
        sim = math.nan if r.similarity is None else float(r.similarity)
        target[r.cut].append(Rollout(akey, r.correct, sim))
    has_forced = any(forced)
    if len(all_cuts) < 2:
        return AnchorResult(steps, free, forced if has_forced else None, [], rows, False)
    scores = sentence_importance(free, forced if has_forced else None, math_settings)
    complete = all(free) and (not has_forced or all(forced))
    return AnchorResult(steps, free, forced if has_forced else None, scores, rows, complete)


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def anchors_summary(run: AnchorRun, result: AnchorResult | None) -> dict:
    """The run and each sentence's scores as plain JSON values (NaN becomes null)."""
    out: dict = {"settings_key": run.key, "n_sentences": run.n_sentences, "generated": run.generated,
                 "stored": run.stored, "total": run.total, "stopped": run.stopped,
                 "batched_tokens_per_s": _num(run.tokens_per_s), "sentences": []}
    if result is None:
        return out
    by = {(s.kind, s.index): s for s in result.scores}
    for step in result.steps:
        row: dict = {"index": step.index, "start": step.start, "end": step.end, "text": step.text}
        for kind in ("resampling", "counterfactual", "forced"):
            sc = by.get((kind, step.index))
            row[f"{kind}_kl"] = None if sc is None else _num(sc.kl)
            row[f"{kind}_accuracy_change"] = None if sc is None else _num(sc.accuracy_change)
            row[f"{kind}_n"] = None if sc is None else sc.n_before
        out["sentences"].append(row)
    return out


# --- branch from here --------------------------------------------------------------------------

@dataclass(frozen=True)
class BranchSettings:
    samples: int = 4
    max_new_tokens: int = 256
    answer_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        AnchorSettings(samples=self.samples, max_new_tokens=self.max_new_tokens, answer_tokens=self.answer_tokens,
                       temperature=self.temperature, top_p=self.top_p, seed=self.seed)


def edited_prefix(thinking: str, sentence: int, edit: str, replacement: str | None) -> tuple[int, str, str]:
    """(cut character, edited thinking prefix, original sentence) for an edit of sentence `sentence`."""
    steps = split_steps(thinking, "sentence")
    if not steps:
        raise ValueError("This trace has no thinking sentence to branch from.")
    if not 0 <= sentence < len(steps):
        raise ValueError(f"Sentence {sentence} does not exist: this trace's thinking has sentences 0 to {len(steps) - 1}.")
    step = steps[sentence]
    if edit == "replace":
        if not (replacement or "").strip():
            raise ValueError("The replacement is empty: type the new sentence, or delete the sentence instead.")
        return step.start, thinking[:step.start] + replacement.strip(), step.text
    if edit == "delete":
        keep = steps[sentence - 1].end if sentence else 0
        return step.start, thinking[:keep], step.text
    raise ValueError(f"edit must be 'replace' or 'delete', not {edit!r}")


def branch_trace(
    config: StorageConfig,
    loaded: LoadedModel | Backend,
    trace_id: int,
    sentence: int,
    edit: str,
    replacement: str | None,
    settings: BranchSettings = BranchSettings(),
    progress: Callable[[int, int, int], None] | None = None,
    stop_event: threading.Event | None = None,
) -> list[int]:
    """Cut the trace at a sentence, apply the edit, continue N samples in one batch; store each as a
    child trace (its tokens: the given prefix, marked forced, then the sampled continuation) and its
    branch row. Returns the child trace ids; [] when stopped before the batch ended."""
    loaded = _local(loaded, "Branching a trace")
    stored = get_trace(config, trace_id)
    if stored is None:
        raise ValueError(f"No trace {trace_id}: pick a stored trace.")
    parent = stored.record
    fmt = trace_format(parent, loaded.tokenizer)
    cut_char, prefix, original = edited_prefix(parent.thinking_text, sentence, edit, replacement)
    context = thinking_head(fmt) + prefix
    ids = _prefix_ids(loaded, context)
    sampling = SamplingConfig(settings.temperature, settings.top_p, len(ids) + settings.max_new_tokens,
                              settings.answer_tokens, settings.seed)
    rows = [BatchRow(parent.prompt, parent.reference_answer, parent.prompt_source, prefix_ids=ids)] * settings.samples
    records = generate_batch(loaded, rows, fmt, BatchSettings(sampling), stop_event, progress)
    if any(r.stop_reason == "stopped" for r in records):
        return []
    children = [_with_prefix(loaded, r, ids, fmt, parent, sampling) for r in records]
    for child in children:
        child.meta["branch"] = {"parent_trace_id": int(trace_id), "sentence_index": sentence, "cut_char": cut_char,
                                "edit": edit, "prefix_tokens": len(ids)}
    child_ids = save_traces(config, children)
    for cid in child_ids:
        save_branch(config, Branch(cid, int(trace_id), sentence, cut_char, edit,
                                   replacement.strip() if edit == "replace" else None, original))
    return child_ids


def _with_prefix(loaded: LoadedModel, cont: TraceRecord, ids: tuple[int, ...], fmt: ReasoningFormat,
                 parent: TraceRecord, sampling: SamplingConfig) -> TraceRecord:
    """A whole trace: the prefix tokens (given, not sampled: forced, no log-probabilities) then the continuation."""
    k = cont.tokens.top_ids.shape[1] if len(cont.tokens) else TOP_K_ALTERNATIVES
    detok = IncrementalDetokenizer(loaded.tokenizer)
    steps = [TokenStep(p, t, detok.add(t), math.nan, math.nan, (-1,) * k, ("",) * k, (math.nan,) * k, 0)
             for p, t in enumerate(ids)]
    n = len(steps)
    c = cont.tokens
    for j in range(len(c)):
        steps.append(TokenStep(n + j, int(c.token_id[j]), c.text[j], float(c.logprob[j]), float(c.entropy[j]),
                               tuple(int(x) for x in c.top_ids[j]), tuple(c.top_texts[j]),
                               tuple(float(x) for x in c.top_logprobs[j]), 0))
    forced = list(range(n)) + [n + p for p in cont.meta.get("forced_positions", [])]
    request = GenerationRequest(parent.prompt, sampling, fmt, parent.reference_answer, parent.prompt_source)
    record = build_record(request, loaded.name, steps, DecodeOutcome(cont.stop_reason, forced), cont.latency_s)
    # Per-token meta of the continuation (confidence lists, positions) would not line up with the
    # longer token list; keep only what describes the generation as a whole.
    record.meta.update({k2: cont.meta[k2] for k2 in ("batch_size", "removed_delimiters") if k2 in cont.meta})
    return record


def continuation_after(record: TraceRecord, cut_char: int) -> str:
    """The parent's own text after a cut: what the branches are shown against."""
    return record.thinking_text[cut_char:]


__all__ = ["AnchorResult", "AnchorRun", "AnchorSettings", "anchors_summary", "BranchSettings", "Cut", "Estimate", "branch_trace",
           "continuation_after", "cuts", "edited_prefix", "estimate", "load_importance", "run_anchors",
           "thinking_head"]
