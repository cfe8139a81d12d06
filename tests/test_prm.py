"""generation/prm.py with tiny randomly initialised PRM-shaped models (nothing downloaded): per-step
scores against direct computations, the aggregates, and clear errors."""
import json
import math

import numpy as np
import pytest
import torch

import cli
from generation.prm import PRMConfig, PRMError, QWEN_SEPARATOR, load_prm

STEPS = ["First add 2 and 6.", "That gives 8.", "So the answer is 8."]


def _tiny(tokenizer, head: str, path):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    torch.manual_seed(0)
    tok = tokenizer
    if head == "qwen":
        tok.add_special_tokens({"additional_special_tokens": [QWEN_SEPARATOR]})
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, num_labels=2,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0)
    model = LlamaForTokenClassification(config) if head == "qwen" else LlamaForCausalLM(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def tokenizer(embedded):
    import copy

    return copy.deepcopy(embedded.tokenizer)


def test_qwen_style_scores_each_separator_like_a_prefix_by_prefix_pass(tokenizer, tmp_path):
    prm = load_prm(PRMConfig(str(_tiny(tokenizer, "qwen", tmp_path / "qwen"))))
    assert prm.style == "qwen"
    scores = prm.score_steps("What is 2 + 6?", STEPS)
    assert len(scores) == 3 and all(0 < s < 1 for s in scores)
    # Direct: a causal token classifier's logit at a separator sees only what came before it, so
    # scoring the first k steps alone gives step k the same probability.
    for k in range(1, 4):
        assert prm.score_steps("What is 2 + 6?", STEPS[:k])[-1] == pytest.approx(scores[k - 1], abs=1e-5)


def test_rlhflow_style_is_plus_against_minus_per_turn(tokenizer, tmp_path):
    prm = load_prm(PRMConfig(str(_tiny(tokenizer, "rlhflow", tmp_path / "rlh"))))
    assert prm.style == "rlhflow"
    scores = prm.score_steps("What is 2 + 6?", STEPS)
    # Direct: the conversation up to step k, the full next-token distribution, renormalised over + and -.
    messages = []
    for k, step in enumerate(STEPS):
        messages.append({"role": "user", "content": f"What is 2 + 6? {step}" if k == 0 else step})
        text = prm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = prm.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            p = torch.softmax(prm.model(input_ids=ids).logits[0, -1].double(), dim=-1)
        expected = p[prm.plus_id] / (p[prm.plus_id] + p[prm.minus_id])
        assert scores[k] == pytest.approx(float(expected), abs=1e-5)
        messages.append({"role": "assistant", "content": "+"})


def test_best_of_n_and_beam_search_score_with_the_prm(embedded, tokenizer, tmp_path):
    from analysis.reasoning import ReasoningFormat
    from generation.decoding import SamplingConfig
    from generation.prm import record_steps
    from generation.strategies import StrategySettings
    from generation.strategies.runner import PromptItem, run_strategy
    from storage.config import StorageConfig

    path = _tiny(tokenizer, "qwen", tmp_path / "qwen")
    prm = load_prm(PRMConfig(str(path)))
    config = StorageConfig(tmp_path / "prm.duckdb")
    items = [PromptItem("What is 2 + 6?", "8")]
    for aggregate, combine in (("last", lambda s: s[-1]), ("min", min), ("prod", lambda s: float(np.prod(s)))):
        settings = StrategySettings(n=2, sampling=SamplingConfig(0.8, 1.0, 12, 6, 1), step_aggregate=aggregate,
                                    step_scorer=f"prm:{path}")
        run = run_strategy(config, embedded, "best_of_n", items, ReasoningFormat(), settings, prm=prm)
        detail = run.selections[0].detail
        assert detail["score_name"] == f"{aggregate}(prm:{path})"
        assert detail["scores"] == pytest.approx([combine(s) if s else math.nan for s in detail["step_scores"]],
                                                 nan_ok=True)
    beam = run_strategy(config, embedded, "beam_search", items, ReasoningFormat(),
                        StrategySettings(n=2, beam_width=2, max_steps=2, sampling=SamplingConfig(0.8, 1.0, 12, 6, 1),
                                         step_aggregate="prod", step_scorer=f"prm:{path}"), prm=prm)
    assert beam.selections[0].detail["score_name"] == f"step_prod(prm:{path})"
    assert record_steps  # the split best-of-N scores with


def test_prm_errors_are_clear(tmp_path, capsys):
    with pytest.raises(PRMError, match="not 'prm'"):
        PRMConfig.from_spec("prm")
    with pytest.raises(PRMError, match="style"):
        PRMConfig("x", style="other")
    with pytest.raises(PRMError, match="cannot load the PRM"):
        load_prm(PRMConfig(str(tmp_path / "missing")))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2 + 6?", "answer": "8"}) + "\n")
    db = str(tmp_path / "x.duckdb")
    assert cli.main(["--db", db, "run", "--strategy", "greedy", "--prompts", str(prompts),
                     "--scorer", f"prm:{tmp_path}"]) == cli.EXIT_USAGE
    assert "--scorer applies to best_of_n" in capsys.readouterr().err
    assert cli.main(["--db", db, "run", "--strategy", "best_of_n", "--prompts", str(prompts),
                     "--scorer", f"prm:{tmp_path / 'missing'}"]) == cli.EXIT_USAGE
    assert "cannot load the PRM" in capsys.readouterr().err
