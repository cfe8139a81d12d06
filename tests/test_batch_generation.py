"""Batched decoding on the real embedded model: equals sequential greedy, budget forcing, capture, stop."""
import threading

import numpy as np
import pytest
import torch

from analysis.records import ANSWER, FORCED, THINKING
from analysis.reasoning import ReasoningFormat
from generation.batch import BatchRow, BatchSettings, BudgetForcing, EarlyStop, generate_batch
from generation.decoding import DecodeOutcome, SamplingConfig, decode
from generation.prompting import encode_prompt

MARKER = ReasoningFormat(kind="answer_marker")


def _sequential_greedy(embedded, prompt, cfg):
    outcome = DecodeOutcome()
    ids = encode_prompt(embedded.tokenizer, prompt, MARKER)
    steps = list(decode(embedded.model, embedded.tokenizer, ids, cfg, MARKER, threading.Event(), outcome))
    return steps, outcome


def test_batched_greedy_equals_sequential_greedy_with_left_padding(embedded):
    cfg = SamplingConfig(temperature=0.0, max_thinking_tokens=16, max_answer_tokens=6, seed=0)
    # Prompts of different lengths: the shorter one is left-padded in the batch.
    prompts = ["What is 7 + 5?", "A farmer has 12 cows and buys 30 more. How many cows does the farmer have now?"]
    rows = [BatchRow(prompts[0]), BatchRow(prompts[1]), BatchRow(prompts[0])]
    lengths = {len(encode_prompt(embedded.tokenizer, p, MARKER)) for p in prompts}
    assert len(lengths) == 2
    records = generate_batch(embedded, rows, MARKER, BatchSettings(cfg))
    for row, record in zip(rows, records):
        steps, outcome = _sequential_greedy(embedded, row.prompt, cfg)
        assert record.tokens.token_id.tolist() == [s.token_id for s in steps]
        assert record.stop_reason == outcome.stop_reason
        np.testing.assert_allclose(record.tokens.logprob, [s.logprob for s in steps], atol=1e-3)
        assert record.tokens.top_ids.tolist() == [list(s.top_ids) for s in steps]
        assert record.meta["forced_positions"] == outcome.forced_positions


def test_max_budget_is_forced_per_row_and_confidence_is_captured(embedded):
    cfg = SamplingConfig(temperature=0.8, max_thinking_tokens=12, max_answer_tokens=6, seed=5)
    rows = [BatchRow("Explain in detail how to add 123 and 456.", max_thinking_tokens=b) for b in (8, 12, 12)]
    records = generate_batch(embedded, rows, MARKER, BatchSettings(cfg))
    assert len({tuple(r.tokens.token_id.tolist()) for r in records}) > 1, "samples should differ"
    for row, r in zip(rows, records):
        at = r.meta["forced_end_position"]
        if at is None:  # the model ended thinking by itself before its budget
            assert r.n_thinking_tokens <= row.max_thinking_tokens
            continue
        assert at == row.max_thinking_tokens
        assert "".join(r.tokens.text[at:]).startswith("\nFinal Answer:")
        assert r.settings["max_thinking_tokens"] == row.max_thinking_tokens
        assert r.tokens.phase[at - 1] == THINKING and set(r.tokens.phase[r.meta["forced_positions"][-1] + 1:]) <= {ANSWER}
    for r in records:
        assert len(r.meta["token_confidence"]) == len(r.tokens) == len(r.meta["token_self_certainty"])
        assert all(c > 0 for c in r.meta["token_confidence"])


def test_confidence_matches_top20_of_a_teacher_forced_pass(embedded):
    cfg = SamplingConfig(temperature=0.0, max_thinking_tokens=8, max_answer_tokens=4)
    record = generate_batch(embedded, [BatchRow("What is 2 + 3?")], MARKER, BatchSettings(cfg))[0]
    prompt_ids = encode_prompt(embedded.tokenizer, "What is 2 + 3?", MARKER)
    ids = record.tokens.token_id.tolist()
    with torch.inference_mode():
        lp = torch.log_softmax(embedded.model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1].float(), -1)
    expected = (-lp.topk(20, -1).values.mean(-1)).numpy()
    np.testing.assert_allclose(record.meta["token_confidence"], expected, atol=2e-3)
    sc = (-lp.mean(-1) - np.log(lp.shape[-1])).numpy()
    np.testing.assert_allclose(record.meta["token_self_certainty"], sc, atol=2e-3)


SHORT = "What is 2 + 2? Reply with just 'Answer: <number>'."  # greedy: "2 + 2 = 4", then EOS
EQUALS = ReasoningFormat(kind="answer_marker", answer_marker="=")  # so the model writes the delimiter early


def test_min_budget_replaces_the_delimiter_with_wait(embedded):
    cfg = SamplingConfig(temperature=0.0, max_thinking_tokens=40, max_answer_tokens=4)
    plain = generate_batch(embedded, [BatchRow(SHORT)], EQUALS, BatchSettings(cfg))[0]
    assert "=" in plain.meta["raw_text"] and plain.n_thinking_tokens < 12
    settings = BatchSettings(cfg, BudgetForcing(min_thinking_tokens=12, max_waits=2))
    record = generate_batch(embedded, [BatchRow(SHORT)], EQUALS, settings)[0]
    waits = record.meta["wait_positions"]
    assert 1 <= len(waits) <= 2
    texts = record.tokens.text
    # The first Wait replaces the delimiter token exactly where the unforced run wrote it.
    first_delim = next(k for k, t in enumerate(plain.tokens.text) if "=" in t)
    assert waits[0] == first_delim
    assert texts[:first_delim] == plain.tokens.text[:first_delim]
    assert record.meta["removed_delimiters"][0].strip() == "="
    for w in waits:
        assert w < 12, "a Wait is only inserted before the minimum"
        assert texts[w].strip() == "Wait" and w in record.meta["forced_positions"]
        assert record.tokens.phase[w] == FORCED  # injected, not sampled: counted apart from thinking
        assert "=" not in "".join(texts[:w])
    # The model keeps thinking after each Wait: more thinking tokens than without forcing.
    assert record.n_thinking_tokens > plain.n_thinking_tokens


def test_early_eos_is_replaced_by_wait(embedded):
    cfg = SamplingConfig(temperature=0.0, max_thinking_tokens=30, max_answer_tokens=4)
    fmt = ReasoningFormat(kind="answer_marker", answer_marker="NEVER-MARKER:")  # the model never writes it
    plain = generate_batch(embedded, [BatchRow(SHORT)], fmt, BatchSettings(cfg))[0]
    assert plain.stop_reason == "eos" and plain.n_thinking_tokens < 20
    forced = generate_batch(embedded, [BatchRow(SHORT)], fmt,
                            BatchSettings(cfg, BudgetForcing(min_thinking_tokens=20, max_waits=1)))[0]
    assert forced.meta["wait_positions"] == [plain.n_thinking_tokens]
    assert forced.tokens.text[: plain.n_thinking_tokens] == plain.tokens.text
    assert forced.tokens.text[plain.n_thinking_tokens].strip() == "Wait"
    assert forced.meta["removed_delimiters"] == []
    assert len(forced.tokens) > len(plain.tokens)


def test_a_model_that_never_writes_the_marker_still_gets_a_forced_answer(embedded):
    fmt = ReasoningFormat(kind="answer_marker", answer_marker="NEVER-MARKER:")
    cfg = SamplingConfig(temperature=0.0, max_thinking_tokens=10, max_answer_tokens=8)
    record = generate_batch(embedded, [BatchRow("What is 9 + 8?", reference_answer="17")], fmt,
                            BatchSettings(cfg, ignore_eos=True))[0]
    assert record.meta["forced_end_position"] == 10
    assert "Final NEVER-MARKER:" in record.meta["raw_text"]
    assert record.n_answer_tokens > 0 and record.extracted_answer is not None


def test_stop_event_and_progress(embedded):
    stop = threading.Event()
    seen = []

    def progress(done, total, tokens):
        seen.append(tokens)
        if tokens >= 6:
            stop.set()

    cfg = SamplingConfig(temperature=0.7, max_thinking_tokens=200, max_answer_tokens=20, seed=1)
    records = generate_batch(embedded, [BatchRow("Count to fifty.")] * 3, MARKER, BatchSettings(cfg, ignore_eos=True),
                             stop_event=stop, progress=progress)
    assert all(r.stop_reason == "stopped" for r in records)
    assert all(len(r.tokens) <= 3 for r in records)
    assert seen and seen[-1] >= 6


def test_deepconf_early_stop_ends_rows_below_the_threshold(embedded):
    cfg = SamplingConfig(temperature=0.7, max_thinking_tokens=16, max_answer_tokens=4, seed=2)
    # A threshold no window can reach stops every row as soon as its window is full.
    settings = BatchSettings(cfg, early_stop=EarlyStop(threshold=1e9, window=4), ignore_eos=True)
    records = generate_batch(embedded, [BatchRow("What is 3 + 4?")] * 2, MARKER, settings)
    for r in records:
        assert r.stop_reason == "stopped" and r.meta["deepconf_early_stop"] and len(r.tokens) == 4


def test_bad_input_is_refused(embedded):
    cfg = SamplingConfig(max_thinking_tokens=8)
    with pytest.raises(ValueError, match="N must be at least 1"):
        generate_batch(embedded, [], MARKER, BatchSettings(cfg))
    with pytest.raises(ValueError, match="minimum thinking budget"):
        BatchSettings(cfg, BudgetForcing(min_thinking_tokens=8, max_waits=1))
    with pytest.raises(ValueError, match="empty"):
        BatchRow("  ")
