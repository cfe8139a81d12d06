"""Tiny models and tokenizers built in memory (random weights, byte-level vocabulary): nothing downloaded."""
from __future__ import annotations

import torch


def byte_tokenizer(extra_special: tuple[str, ...] = ()):
    """A byte-level BPE tokenizer without merges (256 byte tokens + specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                            "additional_special_tokens": list(extra_special)})
    return tok


def tiny_llama(tie: bool = True, vocab_size: int = 260):
    """(config, model): a 2-layer Llama with random weights (seeded), in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         tie_word_embeddings=tie, bos_token_id=256, eos_token_id=257, pad_token_id=258)
    torch.manual_seed(0)
    return config, LlamaForCausalLM(config).eval()
