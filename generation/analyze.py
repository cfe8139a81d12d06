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
from generation.models import LoadedModel, ModelLoadError, ModelSpec, load_model
from generation.prompting import detect_format, encode_prompt

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is running)
# Tokens per lens call: M = 128 rows keep the [M, d] x [d, V] product efficient; the JSD itself runs in
# small cache-sized blocks inside jsd_to_final. Peak memory: a few [128, V] float32 arrays (~25 MB each).
_CHUNK_TOKENS = 128
# Entries per chunk recomputed in float32 at random to check the bfloat16 lens against its margin.
_SPOT_CHECKS = 16


class EmptyTraceError(ValueError):
    """The trace has no generated tokens, so there is nothing to analyse."""


def load_analysis_model(name: str, trust_remote_code: bool = False) -> LoadedModel:
    """load_model with a message that says what to do when the trace's model is not available."""
    try:
        return load_model(ModelSpec(name=name, trust_remote_code=trust_remote_code))
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
    return ReasoningFormat(**fmt) if isinstance(fmt, dict) else detect_format(tokenizer)


def forced_input(loaded: LoadedModel, record: TraceRecord) -> ForcedInput:
    """Prompt and trace token ids in the analysing model's tokenizer, with per-token text and phase."""
    tokenizer = loaded.tokenizer
    fmt = trace_format(record, tokenizer)
    prompt_ids = encode_prompt(tokenizer, record.prompt, fmt)
    cols = record.tokens
    if len(cols) and record.model == loaded.name and bool((cols.token_id >= 0).all()):
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
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # Without AMX or AVX512-BF16, CPU bfloat16 matmuls are emulated and slower than float32.
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def refine_near_threshold(jsd_lt: np.ndarray, hidden_ltd: torch.Tensor, exact_lens: LogitLens,
                          final_logprobs_tv: torch.Tensor, g: float, n_spot: int = _SPOT_CHECKS) -> tuple[int, float]:
    """Recompute in float32, in place, every entry of a low-precision jsd_lt [L, T] within
    LENS_EXACT_BAND_NATS of g. Entries farther away cannot change side of g unless the low-precision
    error exceeds the band, so the settling depth becomes the float32 one. That premise is checked:
    `n_spot` other entries, drawn at random, are recomputed too and their largest error returned.

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
    h_y = reference_state(model, ref_ids, settings.layer)

    report(0.15, "Mutual information")
    mi = mi_curve(states.block_output(settings.layer), h_y, settings.mi_settings(),
                  progress=lambda done, total: report(0.15 + 0.15 * done / total, "Mutual information"))

    dtype = lens_dtype(settings.lens_dtype, model)
    exact_lens = LogitLens(model, torch.float32)
    lens = exact_lens if dtype == torch.float32 else LogitLens(model, dtype)
    n_refined = n_redone = 0
    jsd_lt = np.zeros((states.n_layers, n_t))
    ids_t = torch.tensor(inputs.token_ids)
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
        logprob[t0:t1] = final_lp.gather(-1, ids_t[t0:t1, None])[:, 0].double().numpy()
    if lens is not exact_lens:
        notes.append(f"Logit lens in bfloat16; the {n_refined} divergences within {LENS_EXACT_BAND_NATS} nats of "
                     f"g = {settings.g} were recomputed in float32, so settling depths and DTR are exact.")
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
