"""A low-precision logit lens refined in float32 near g gives the float32 settling depths."""
from __future__ import annotations

import numpy as np
import torch

from analysis.logit_lens import jsd_to_final, settling_depth
from analysis.trace_signals import LENS_EXACT_BAND_NATS
from generation.analyze import lens_dtype, refine_near_threshold
from generation.hidden_states import LogitLens


def _lens(weight_dv: torch.Tensor):
    return lambda h: torch.log_softmax(h.double() @ weight_dv, dim=-1)


def test_noisy_divergences_near_g_are_replaced_by_exact_ones():
    g = 0.3
    rng = np.random.default_rng(0)
    n_layers, n_t, d, n_vocab = 8, 40, 6, 30
    base = rng.normal(size=(n_t, d))
    hidden = torch.tensor(np.stack([base + rng.normal(scale=1.5 * (n_layers - l) / n_layers, size=(n_t, d))
                                    for l in range(n_layers)]))
    exact_lens = _lens(torch.tensor(rng.normal(size=(d, n_vocab))))
    exact = jsd_to_final(hidden, exact_lens)
    # What a bf16 product does to the divergences: small errors of either sign, below the band.
    noisy = exact + rng.uniform(-0.8, 0.8, size=exact.shape) * LENS_EXACT_BAND_NATS
    noisy[-1] = 0.0
    assert not np.array_equal(settling_depth(noisy, g), settling_depth(exact, g))  # the noise matters
    final = exact_lens(hidden[-1])
    error_before = np.abs(noisy - exact).max()
    n, spot_error = refine_near_threshold(noisy, hidden, exact_lens, final, g)
    near = np.abs(exact[:-1] - g) <= LENS_EXACT_BAND_NATS / 5
    assert n > 0 and np.allclose(noisy[:-1][near], exact[:-1][near], atol=1e-12)
    np.testing.assert_array_equal(settling_depth(noisy, g), settling_depth(exact, g))
    # The spot check measures the error it was given, on entries it did not have to refine.
    assert 0 < spot_error <= error_before + 1e-12


def test_the_spot_check_sees_an_error_larger_than_the_band():
    rng = np.random.default_rng(1)
    hidden = torch.tensor(rng.normal(size=(5, 30, 4)))
    exact_lens = _lens(torch.tensor(rng.normal(size=(4, 12))))
    exact = jsd_to_final(hidden, exact_lens)
    broken = exact.copy()
    broken[:-1] = np.clip(exact[:-1] + 0.2, 0, np.log(2))  # a "fast" lens far off everywhere
    _, spot_error = refine_near_threshold(broken, hidden, exact_lens, exact_lens(hidden[-1]), 0.5, n_spot=16)
    assert spot_error > LENS_EXACT_BAND_NATS


def test_auto_lens_dtype_follows_the_hardware():
    class Cpu:
        device = torch.device("cpu")

    assert lens_dtype("float32", Cpu()) == torch.float32 and lens_dtype("bfloat16", Cpu()) == torch.bfloat16
    # CPU bf16 GEMMs round their output to bf16 (too coarse, docs/METHODS.md §2): auto keeps float32.
    assert lens_dtype("auto", Cpu()) == torch.float32


class _TinyLM(torch.nn.Module):
    """Just what LogitLens reads: model.norm and lm_head."""

    def __init__(self, d: int, n_vocab: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.model = torch.nn.Module()
        self.model.norm = torch.nn.RMSNorm(d)
        self.lm_head = torch.nn.Linear(d, n_vocab, bias=False)
        with torch.no_grad():
            self.lm_head.weight.mul_(8.0)  # logits of a few tens, like a real model's


def test_bfloat16_lens_has_bfloat16_inputs_and_float32_output():
    model = _TinyLM(64, 3000)
    hidden = torch.randn(16, 64) * 3
    exact, low = LogitLens(model, torch.float32), LogitLens(model, torch.bfloat16)
    got = low.logits(hidden)
    assert got.dtype == torch.float32
    normed = model.model.norm(hidden).detach()
    w = model.lm_head.weight.detach()
    # The rounding is on the operands only: the product of the rounded operands, in float32.
    expected = normed.bfloat16().float() @ w.bfloat16().float().T
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    # So each logit errs by at most the operands' rounding, (2u + u^2) sum |x| |w| with u = 2^-9
    # (round to nearest, 8 significant bits), plus float32 accumulation.
    bound = (2 * 2**-9 + 2**-18) * (normed.abs() @ w.abs().T) + 1e-4
    assert bool(((got - exact.logits(hidden)).abs() <= bound).all())
    lp = low(hidden)
    assert lp.dtype == torch.float32 and torch.allclose(lp.exp().sum(-1), torch.ones(16))
