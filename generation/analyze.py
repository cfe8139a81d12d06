"""Analyse one trace with a local model: teacher-forced hidden states -> MI, logit lens, confidence.

Works for any stored trace, generated here or imported: when the trace's token ids are unknown
(-1) or belong to another model's tokenizer, the trace text is re-encoded with the analysing
model's tokenizer and the result says so (`retokenized`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from analysis.confidence import TokenStats, token_stats
from analysis.logit_lens import jsd_rows, jsd_to_final
from analysis.mutual_information import mi_curve
from analysis.reasoning import ReasoningFormat, token_phases
from analysis.records import THINKING, TraceRecord
from analysis.trace_signals import (
    LENS_EXACT_BAND_NATS,
    AnalysisSettings,
    TraceAnalysis,
    resolve_reference,
    summarise_signals,
)
from generation.decoding import IncrementalDetokenizer
from generation.hidden_states import LogitLens, reference_state, teacher_forced_states
from generation.models import EMBEDDED_MODEL, LoadedModel, ModelLoadError, ModelSpec, load_model
from generation.prompting import detect_format, encode_prompt

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is running)
# Tokens per lens call: M = 128 rows keep the [M, d] x [d, V] product efficient; the JSD itself runs in
# small cache-sized blocks inside jsd_to_final. Peak memory: a few [128, V] float32 arrays (~25 MB each).
_CHUNK_TOKENS = 128
# Entries per chunk recomputed in float32 at random to check the bfloat16 lens against its margin.
_SPOT_CHECKS = 16


class EmptyTraceError(ValueError):
    """The trace has no generated tokens, so there is nothing to analyse."""


class TraceDataError(ValueError):
    """The stored trace holds data analysis cannot use (e.g. from an older database or a crafted file)."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model would analyse a trace, and whether a person must say yes before it is loaded."""

    name: str  # the model to load; "" when there is none to propose
    needs_confirmation: bool
    message: str = ""  # for people: why it asks, or what to do


def choose_analysis_model(trace_model: str | None, chosen: str | None = None,
                          use_trace_model: bool = False) -> ModelChoice:
    """The one rule for which model analyses a trace (CLI and app).

    A trace's model name is data, and the data may come from an imported file: naming
    deepseek-ai/DeepSeek-V3 must not start a download of hundreds of GB, nor load whatever a
    crafted path points to. So a model named only by the trace is loaded only when it is the
    embedded model (shipped with ThinkScope) or when a person confirmed it (`use_trace_model`: the
    CLI's --use-trace-model, the app's confirmation box). A model the person chose (`chosen`: the
    CLI's --model, a name typed in the app) is theirs to load.
    """
    if chosen is not None and chosen.strip():
        return ModelChoice(chosen.strip(), False)
    name = (trace_model or "").strip()
    if not name:
        return ModelChoice("", True, "This trace names no model: choose an analysing model.")
    if name == EMBEDDED_MODEL or use_trace_model:
        return ModelChoice(name, False)
    return ModelChoice(name, True, f"This trace names the model {name!r}. A model named only by a trace's data "
                                   f"(which may come from an imported file) is not loaded without your say-so: "
                                   f"{_where_it_comes_from(name)}")


def _where_it_comes_from(name: str) -> str:
    from pathlib import Path

    if name.startswith(("/", ".", "~")) or Path(name).expanduser().exists():
        return "it would be loaded from that path on this machine."
    try:
        from huggingface_hub import try_to_load_from_cache  # looks at the local cache only, no network

        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # not a valid hub id: loading it fails with its own message
        cached = False
    return ("it is in the local Hugging Face cache." if cached else
            "it is not on this machine, so loading it would download it from the Hugging Face hub.")


def load_analysis_model(name: str, trust_remote_code: bool = False, device: str = "auto",
                        dtype: str = "auto") -> LoadedModel:
    """load_model with a message that says what to do when the trace's model is not available."""
    try:
        return load_model(ModelSpec(name=name, trust_remote_code=trust_remote_code, device=device, dtype=dtype))
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"Cannot load {name!r} to analyse this trace: {exc} Choose another analysing model "
            "(any local causal LM works; the trace text is re-tokenized for it)."
        ) from exc


@dataclass(frozen=True)
class ForcedInput:
    prompt_ids: list[int]
    token_ids: list[int]
    text: list[str]
    phase: np.ndarray  # int8 [T]
    retokenized: bool


def trace_format(record: TraceRecord, tokenizer) -> ReasoningFormat:
    fmt = record.settings.get("format") if isinstance(record.settings, dict) else None
    if not isinstance(fmt, dict):
        return detect_format(tokenizer)
    try:
        return ReasoningFormat(**fmt)
    except (TypeError, ValueError) as exc:  # an unknown key is a TypeError
        raise TraceDataError(f"settings.format of this trace is not a usable reasoning format "
                             f"({str(exc)[:200]}); its keys are {', '.join(map(repr, list(fmt)[:8]))}.") from exc


def forced_input(loaded: LoadedModel, record: TraceRecord) -> ForcedInput:
    """Prompt and trace token ids in the analysing model's tokenizer, with per-token text and phase."""
    tokenizer = loaded.tokenizer
    fmt = trace_format(record, tokenizer)
    prompt_ids = encode_prompt(tokenizer, record.prompt, fmt)
    cols = record.tokens
    # Ids outside the embedding table (a crafted file, another tokenizer) are not this model's ids:
    # re-encode the text rather than index out of range.
    n_vocab = loaded.model.get_input_embeddings().num_embeddings
    if (len(cols) and record.model == loaded.name and bool((cols.token_id >= 0).all())
            and bool((cols.token_id < n_vocab).all())):
        return ForcedInput(prompt_ids, cols.token_id.tolist(), list(cols.text), cols.phase.copy(), False)
    text = "".join(cols.text) if len(cols) else record.meta.get("raw_text") or _joined(record)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(i) for i in ids]
    return ForcedInput(prompt_ids, ids, pieces, token_phases(pieces, fmt), True)


def _joined(record: TraceRecord) -> str:
    if record.thinking_text and record.answer_text:
        return f"{record.thinking_text}\n{record.answer_text}"
    return record.thinking_text or record.answer_text


def lens_dtype(name: str, model) -> torch.dtype:
    """The unembedding dtype for AnalysisSettings.lens_dtype; "auto" picks bfloat16 where it is fast."""
    if name != "auto":
        return getattr(torch, name)
    return torch.bfloat16 if _fast_bfloat16(model.device) else torch.float32


def _fast_bfloat16(device: torch.device) -> bool:
    # Only a bf16 GEMM with float32 output is both fast and accurate enough (docs/METHODS.md §2): CUDA
    # has one; torch's CPU bf16 GEMMs (AMX, AVX512-BF16) round their output to bf16, so CPUs use float32.
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def reference_input(prompt_ids: list[int], reference_ids: list[int]) -> list[int]:
    """The input whose last position gives h_y: the reference text after the first prompt token.

    docs/METHODS.md §1: position 0 is an attention sink whose state barely depends on its token, so a
    one-token reference encoded alone gave the same MI curve for "7" and "8". The trace's own forward
    pass starts with prompt_ids[0] (BOS, or the chat template's first token such as <|im_start|>), so
    the reference gets the same start, as the authors' tokenizer.encode gives it BOS.
    """
    if not reference_ids:
        raise ValueError("the reference text encodes to no tokens")
    return [prompt_ids[0], *reference_ids]


def refine_near_threshold(jsd_lt: np.ndarray, hidden_ltd: torch.Tensor, exact_lens: LogitLens,
                          final_logprobs_tv: torch.Tensor, g: float, n_spot: int = _SPOT_CHECKS) -> tuple[int, float]:
    """Recompute in float32, in place, every entry of a low-precision jsd_lt [L, T] within
    LENS_EXACT_BAND_NATS of g. Entries farther away cannot change side of g unless the low-precision
    error exceeds the band, so the settling depth becomes the float32 one. That premise is sampled, not
    certified (docs/METHODS.md §2): `n_spot` other entries, drawn at random, are recomputed too and
    their largest error returned.

    Returns (entries recomputed near g, largest spot-check error in nats)."""
    near_lt = np.abs(jsd_lt[:-1] - g) <= LENS_EXACT_BAND_NATS
    far = np.flatnonzero(~near_lt)
    spot = np.random.default_rng(len(far)).choice(far, size=min(n_spot, len(far)), replace=False)
    near_layers, near_tokens = np.nonzero(near_lt)
    layers = np.concatenate([near_layers, spot // near_lt.shape[1]])
    tokens = np.concatenate([near_tokens, spot % near_lt.shape[1]])
    exact = np.empty(len(layers))
    # One product over many entries at once: per-layer calls of a few rows each cost ~4x more.
    for a in range(0, len(layers), _CHUNK_TOKENS):
        l_idx, t_idx = torch.from_numpy(layers[a:a + _CHUNK_TOKENS]), torch.from_numpy(tokens[a:a + _CHUNK_TOKENS])
        exact[a:a + _CHUNK_TOKENS] = jsd_rows(final_logprobs_tv[t_idx], exact_lens(hidden_ltd[l_idx, t_idx]))
    n_near = len(near_layers)
    spot_error = float(np.abs(jsd_lt[layers[n_near:], tokens[n_near:]] - exact[n_near:]).max(initial=0.0))
    jsd_lt[layers, tokens] = exact
    return n_near, spot_error


def analyze_trace(
    loaded: LoadedModel,
    record: TraceRecord,
    settings: AnalysisSettings = AnalysisSettings(),
    progress: ProgressFn | None = None,
) -> TraceAnalysis:
    """MI + peaks, JSD + settling + DTR, entropy/log-prob/self-certainty/confidence for one trace.

    Raises MissingReferenceError, EmptyTraceError, ContextTooLongError (all ValueError) with a
    message meant for people.
    """
    start = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    reference = resolve_reference(settings.reference, record.reference_answer,
                                  record.extracted_answer or record.answer_text, settings.typed_reference)
    inputs = forced_input(loaded, record)
    n_t = len(inputs.token_ids)
    if n_t == 0:
        raise EmptyTraceError("This trace has no generated tokens (no thinking and no answer): nothing to analyse.")
    notes = []
    if not np.any(inputs.phase == THINKING):
        notes.append("This trace has no thinking part: every signal covers the answer tokens only.")
    if inputs.retokenized:
        notes.append(f"Token ids were re-encoded from the text with {loaded.name}'s tokenizer ({n_t} tokens).")

    model, tokenizer = loaded.model, loaded.tokenizer
    report(0.0, f"Forward pass over {len(inputs.prompt_ids)} prompt + {n_t} trace tokens")
    states = teacher_forced_states(model, inputs.prompt_ids, inputs.token_ids)
    ref_ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    h_y = reference_state(model, reference_input(inputs.prompt_ids, ref_ids), settings.layer)

    report(0.15, "Mutual information")
    mi = mi_curve(states.block_output(settings.layer), h_y, settings.mi_settings(),
                  progress=lambda done, total: report(0.15 + 0.15 * done / total, "Mutual information"))

    dtype = lens_dtype(settings.lens_dtype, model)
    exact_lens = LogitLens(model, torch.float32)
    lens = exact_lens if dtype == torch.float32 else LogitLens(model, dtype)
    n_refined = n_redone = 0
    jsd_lt = np.zeros((states.n_layers, n_t))
    ids_t = torch.tensor(inputs.token_ids, device=model.lm_head.weight.device)  # where the lens output lies
    entropy, self_cert, conf, logprob = (np.empty(n_t) for _ in range(4))
    for t0 in range(0, n_t, _CHUNK_TOKENS):
        t1 = min(t0 + _CHUNK_TOKENS, n_t)
        report(0.3 + 0.7 * t0 / n_t, f"Logit lens over {states.n_layers} layers, tokens {t0}-{t1} of {n_t}")
        # Confidence signals from the exact float32 sampling distribution, not the stored top-5.
        final_lp = exact_lens(states.layers_ltd[-1, t0:t1])
        hidden_ltd = states.layers_ltd[:, t0:t1]
        jsd_chunk = jsd_to_final(hidden_ltd, lens.logits, chunk_tokens=_CHUNK_TOKENS,
                                 final_logprobs_tv=final_lp if lens is exact_lens else None, normalized=False)
        if lens is not exact_lens:
            n_near, spot_error = refine_near_threshold(jsd_chunk, hidden_ltd, exact_lens, final_lp, settings.g)
            n_refined += n_near
            if spot_error > LENS_EXACT_BAND_NATS / 2:  # too close to the band for comfort: redo exactly
                jsd_chunk = jsd_to_final(hidden_ltd, exact_lens.logits, chunk_tokens=_CHUNK_TOKENS,
                                         final_logprobs_tv=final_lp, normalized=False)
                n_redone += t1 - t0
        jsd_lt[:, t0:t1] = jsd_chunk
        stats = token_stats(final_lp, k=settings.k)
        entropy[t0:t1], self_cert[t0:t1], conf[t0:t1] = stats.entropy, stats.self_certainty, stats.confidence
        logprob[t0:t1] = final_lp.gather(-1, ids_t[t0:t1, None])[:, 0].double().cpu().numpy()
    if lens is not exact_lens:
        notes.append(f"Logit lens in bfloat16 (float32 output); the {n_refined} divergences within "
                     f"{LENS_EXACT_BAND_NATS} nats of g = {settings.g} were recomputed in float32, and random "
                     "others were checked, so settling depths and DTR are the float32 ones unless an unchecked "
                     f"entry erred by more than {LENS_EXACT_BAND_NATS} nats (worst seen on real traces: 0.01).")
        if n_redone:
            notes.append(f"bfloat16 rounding came close to that margin for {n_redone} tokens: their logit lens "
                         "was recomputed entirely in float32.")
    tokens, summary = summarise_signals(
        mi, jsd_lt, TokenStats(entropy, self_cert, conf), logprob, inputs.text, inputs.token_ids, inputs.phase, settings
    )
    report(1.0, "Done")
    return TraceAnalysis(
        analysis_model=loaded.name, settings=settings, reference_kind=settings.reference, reference_text=reference,
        tokens=tokens, summary=summary, retokenized=inputs.retokenized, notes=notes,
        elapsed_s=time.perf_counter() - start,
    )
