"""Teacher-forced hidden states on a tiny random Llama: alignment, hooks, the logit lens, context limits."""
import generation  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

import pytest
import torch

from generation.hidden_states import (
    ContextTooLongError, LogitLens, capture_layers, decoder_layers, reference_state, teacher_forced_states,
)


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48)
    return LlamaForCausalLM(config).eval()


PROMPT = [3, 9, 27, 17, 51]
TOKENS = [5, 60, 2, 2, 33, 7, 41]


def _states_that_produced(model, prefix):
    """Every block's output at the last position of a plain forward over `prefix`: the state that samples next."""
    n_layers = len(decoder_layers(model))
    with torch.inference_mode(), capture_layers(model, range(n_layers)) as got:
        logits = model(input_ids=torch.tensor([prefix])).logits[0, -1]
        return torch.stack([got[i][0, -1] for i in range(n_layers)]), torch.log_softmax(logits.float(), -1)


def test_state_for_token_t_is_the_one_that_produced_it(tiny):
    forced = teacher_forced_states(tiny, PROMPT, TOKENS)
    assert forced.layers_ltd.shape == (3, len(TOKENS), 32)
    lens = LogitLens(tiny)
    for t in range(len(TOKENS)):
        expected_ld, model_lp = _states_that_produced(tiny, PROMPT + TOKENS[:t])
        torch.testing.assert_close(forced.layers_ltd[:, t], expected_ld, rtol=1e-4, atol=1e-5)
        # Layer L through the lens is the real sampling distribution of token t.
        torch.testing.assert_close(lens(forced.layers_ltd[-1, t : t + 1])[0], model_lp, rtol=1e-4, atol=1e-4)
    # An off-by-one would match the neighbour instead: make sure the test can tell them apart.
    neighbour, _ = _states_that_produced(tiny, PROMPT + TOKENS[:2])
    assert not torch.allclose(forced.layers_ltd[:, 1], neighbour, atol=1e-3)


def test_block_output_is_before_the_final_norm(tiny):
    forced = teacher_forced_states(tiny, PROMPT, TOKENS)
    with torch.inference_mode():
        out = tiny(input_ids=torch.tensor([PROMPT + TOKENS[:-1]]), output_hidden_states=True)
    normed_last = out.hidden_states[-1][0, len(PROMPT) - 1 :]
    assert not torch.allclose(forced.block_output(-1), normed_last, atol=1e-3)
    torch.testing.assert_close(tiny.model.norm(forced.block_output(-1)), normed_last, rtol=1e-4, atol=1e-5)


def test_hooks_are_removed_even_when_the_forward_fails(tiny):
    layers = decoder_layers(tiny)
    before = [len(layer._forward_hooks) for layer in layers]  # transformers may keep hooks of its own
    with pytest.raises(RuntimeError):
        with capture_layers(tiny, range(3)):
            assert [len(layer._forward_hooks) for layer in layers] == [n + 1 for n in before]
            raise RuntimeError("boom")
    assert [len(layer._forward_hooks) for layer in layers] == before


def test_reference_state_is_the_last_position_of_the_same_block(tiny):
    expected_ld, _ = _states_that_produced(tiny, [8, 9, 10])
    torch.testing.assert_close(reference_state(tiny, [8, 9, 10]), expected_ld[-1])
    torch.testing.assert_close(reference_state(tiny, [8, 9, 10], layer=2), expected_ld[1])


def test_too_long_and_empty_inputs_are_refused_clearly(tiny):
    with pytest.raises(ContextTooLongError, match="need 50 positions but the analysing model's context is 48"):
        teacher_forced_states(tiny, PROMPT, list(range(46)))
    with pytest.raises(ValueError, match="no tokens"):
        teacher_forced_states(tiny, PROMPT, [])
    with pytest.raises(ValueError, match="no tokens"):
        reference_state(tiny, [])
