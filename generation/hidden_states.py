"""Hidden states for analysis: one teacher-forced forward pass over prompt + trace, captured by hooks.

Why hooks: in transformers 5 `output_hidden_states=True` returns the *normed* final state as its
last entry, while MI (docs/METHODS.md §1) needs the raw output of the last decoder block, and the logit
lens (item 2) needs every block's raw output so that it can apply the final norm itself.

Alignment: generated token t (0-based) is produced by input position P + t - 1 (P = prompt length),
so the states of tokens 0..T-1 are positions P-1 .. P+T-2 and the last token is never fed in.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch


class ContextTooLongError(ValueError):
    """Prompt + trace do not fit in the analysing model's context window."""


def decoder_layers(model) -> Sequence[torch.nn.Module]:
    """The decoder blocks of a Llama/Qwen-style HF causal LM (model.model.layers)."""
    try:
        return model.model.layers
    except AttributeError as exc:
        raise TypeError(f"{type(model).__name__} has no model.layers: not a supported decoder-only architecture") from exc


def context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


@contextmanager
def capture_layers(model, layer_indices: Sequence[int], keep: slice = slice(None)) -> Iterator[dict[int, torch.Tensor]]:
    """Record the raw output [B, keep, d] of each listed decoder block (0-based) while the block runs.

    `keep` slices the sequence axis inside the hook so prompt positions never pile up in memory.
    The hooks are removed on exit, also when the forward pass raises.
    """
    layers = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def hook_for(index: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[index] = hidden[:, keep].detach()

        return hook

    try:
        for index in layer_indices:
            handles.append(layers[index].register_forward_hook(hook_for(index)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class ForcedStates:
    """Per generated token: every block's raw output, float32 [L, T, d] (layer l+1 at index l)."""

    layers_ltd: torch.Tensor

    @property
    def n_layers(self) -> int:
        return self.layers_ltd.shape[0]

    def block_output(self, layer: int) -> torch.Tensor:
        """[T, d] output of block `layer` (1-based; -1 = last)."""
        return self.layers_ltd[self.n_layers - 1 if layer == -1 else layer - 1]


def check_fits(model, n_positions: int) -> None:
    limit = context_length(model)
    if limit is not None and n_positions > limit:
        raise ContextTooLongError(
            f"Prompt + trace need {n_positions} positions but the analysing model's context is {limit} tokens. "
            "Analyse this trace with a model that has a longer context, or shorten it."
        )


def teacher_forced_states(model, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> ForcedStates:
    """One batched forward over prompt + trace[:-1]; the states that produced each trace token."""
    n_prompt, n_tokens = len(prompt_ids), len(token_ids)
    if n_prompt < 1:
        raise ValueError("the prompt must have at least one token (its last position produces token 0)")
    if n_tokens < 1:
        raise ValueError("the trace has no tokens to analyse")
    check_fits(model, n_prompt + n_tokens - 1)
    input_ids = torch.tensor([list(prompt_ids) + list(token_ids[:-1])], dtype=torch.long, device=model.device)
    n_layers = len(decoder_layers(model))
    keep = slice(n_prompt - 1, n_prompt - 1 + n_tokens)
    with torch.inference_mode(), capture_layers(model, range(n_layers), keep) as captured:
        # The logits are not needed (the lens recomputes them per layer): keep one to save a [P+T, V] matmul.
        model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
        layers_ltd = torch.stack([captured[i][0].float() for i in range(n_layers)])
    return ForcedStates(layers_ltd)


def reference_state(model, input_ids: Sequence[int], layer: int = -1) -> torch.Tensor:
    """h_y [d]: last-position output of block `layer` (1-based, -1 = last) over input_ids.

    input_ids is the reference as the caller wants the model to read it; analysis puts the reference
    text after the token the model's own input starts with (generation/analyze.py reference_input,
    docs/METHODS.md §1), so that h_y never sits at position 0, the attention sink.
    """
    if not input_ids:
        raise ValueError("the reference text encodes to no tokens")
    check_fits(model, len(input_ids))
    n_layers = len(decoder_layers(model))
    index = n_layers - 1 if layer == -1 else layer - 1
    ids = torch.tensor([list(input_ids)], dtype=torch.long, device=model.device)
    with torch.inference_mode(), capture_layers(model, [index], slice(-1, None)) as captured:
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
        return captured[index][0, 0].float()


class LogitLens:
    """Final norm + unembedding + log-softmax, applied to any block's raw output (docs/METHODS.md §2).

    matmul_dtype bfloat16 rounds the normed state and W_U to bfloat16 and multiplies them with float32
    accumulation *and float32 output*: rounding the output logits to bfloat16 was most of the error
    (worst JSD error 0.0325 -> 0.0096 nats on a 1,004-token embedded-model trace, BENCHMARKS.md). On CUDA that is one bf16
    GEMM with out_dtype=float32, the fast path. torch has no such CPU kernel, so elsewhere the rounded
    operands are multiplied in float32: the same numbers at float32 speed (lens_dtype "auto" then picks
    float32). The norm and the log-softmax always run in float32.
    """

    def __init__(self, model, matmul_dtype: torch.dtype = torch.float32):
        self._norm = model.model.norm
        weight_vd = model.lm_head.weight.detach()
        self._dtype = matmul_dtype
        self._fused = False
        if matmul_dtype == torch.float32:
            # A converted copy is [d, V] contiguous (1.2x faster products than the transposed view);
            # float32 weights keep a view, no second copy.
            self._weight_dv = weight_vd.T if weight_vd.dtype == torch.float32 else weight_vd.float().T.contiguous()
        else:
            low_dv = weight_vd.to(matmul_dtype).T.contiguous()
            self._fused = _has_float32_output_gemm(low_dv)
            self._weight_dv = low_dv if self._fused else low_dv.float()
        self._bias = getattr(model.lm_head, "bias", None)
        self._norm_dtype = next(self._norm.parameters()).dtype

    def logits(self, hidden_nd: torch.Tensor) -> torch.Tensor:
        """Raw logits [n, V], float32 (jsd_to_final(..., normalized=False) takes these)."""
        with torch.inference_mode():
            normed = self._norm(hidden_nd.to(self._weight_dv.device, self._norm_dtype))
            if self._dtype == torch.float32:
                logits = normed.float() @ self._weight_dv
            elif self._fused:
                logits = torch.mm(normed.to(self._dtype), self._weight_dv, out_dtype=torch.float32)
            else:  # bf16 x bf16 products are exact in float32, so only the accumulation order differs
                logits = normed.to(self._dtype).float() @ self._weight_dv
            if self._bias is not None:
                logits = logits + self._bias.float()
            return logits

    def __call__(self, hidden_nd: torch.Tensor) -> torch.Tensor:
        """Natural log-probabilities [n, V], float32."""
        with torch.inference_mode():
            return torch.log_softmax(self.logits(hidden_nd), dim=-1)


def _has_float32_output_gemm(low_dv: torch.Tensor) -> bool:
    """Whether torch.mm(low, low, out_dtype=float32) runs here (CUDA in torch >= 2.8; never on CPU)."""
    if low_dv.device.type != "cuda":
        return False
    try:
        probe = low_dv[:, :8]
        torch.mm(probe.T.contiguous()[:2], probe, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True
