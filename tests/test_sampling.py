"""Nucleus sampling: draws stay inside the top-p set and follow its renormalised probabilities,
whether the nucleus lies among the top candidates or needs the whole vocabulary."""
import torch

from generation.decoding import SamplingConfig, sample_next


def test_draws_come_from_the_nucleus_in_proportion():
    n_vocab = 49_152
    probs = torch.full((n_vocab,), 0.05 / (n_vocab - 3))
    probs[[7, 11, 13]] = torch.tensor([0.5, 0.3, 0.15])
    logits = probs.log().expand(4000, n_vocab)  # 4,000 rows = 4,000 independent draws
    drawn = sample_next(logits, SamplingConfig(1.0, 0.9, 8, 8, 0), torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {7, 11, 13}  # the nucleus: 0.5 + 0.3 < 0.9 <= 0.95
    share = torch.bincount(drawn, minlength=n_vocab)[[7, 11, 13]].double() / len(drawn)
    torch.testing.assert_close(share, torch.tensor([0.5, 0.3, 0.15], dtype=torch.float64) / 0.95, atol=0.03, rtol=0)


def test_a_flat_distribution_samples_beyond_the_first_candidates():
    n_vocab = 5_000
    logits = torch.zeros(3000, n_vocab)
    drawn = sample_next(logits, SamplingConfig(1.0, 0.8, 8, 8, 0), torch.Generator().manual_seed(1))
    # 80% of a uniform vocabulary is 4,000 tokens: far more than the 1,024 fast-path candidates.
    assert len(set(drawn.tolist())) > 1500
