"""Generation on the real embedded model: loading, streaming capture, stopping, budget forcing."""
import threading

import numpy as np
import pytest
import torch

from analysis.records import ANSWER, FORCED, THINKING
from analysis.reasoning import ReasoningFormat
from generation.decoding import DecodeOutcome, IncrementalDetokenizer, SamplingConfig, decode
from generation.models import EMBEDDED_MODEL, ModelLoadError, ModelSpec, embedded_cache_path, load_model
from generation.prompting import detect_format, encode_prompt
from generation.streaming import GenerationRequest, LiveGeneration, generate

MARKER = ReasoningFormat(kind="answer_marker")


def test_embedded_model_is_converted_once_then_read_from_cache(embedded):
    assert embedded.source == "converted from GGUF (first load)"
    assert (embedded_cache_path() / "model.safetensors").is_file()
    again = load_model(ModelSpec())
    assert again.source == "safetensors cache"
    ids = torch.tensor([encode_prompt(embedded.tokenizer, "What is 2 + 3?", MARKER)])
    with torch.inference_mode():
        assert torch.allclose(embedded.model(ids).logits, again.model(ids).logits)


def test_embedded_model_speaks_the_answer_marker_format(embedded):
    assert detect_format(embedded.tokenizer).kind == "answer_marker"


def _decode(embedded, prompt="What is 7 + 5?", **overrides):
    settings = dict(temperature=0.7, max_thinking_tokens=24, max_answer_tokens=12, seed=3)
    cfg = SamplingConfig(**{**settings, **overrides})
    outcome = DecodeOutcome()
    ids = encode_prompt(embedded.tokenizer, prompt, MARKER)
    steps = list(decode(embedded.model, embedded.tokenizer, ids, cfg, MARKER, threading.Event(), outcome))
    return ids, steps, outcome


def test_captured_logprobs_match_a_teacher_forced_pass(embedded):
    prompt_ids, steps, _ = _decode(embedded)
    assert len(steps) > 5
    generated = [s.token_id for s in steps]
    with torch.inference_mode():
        logits = embedded.model(torch.tensor([prompt_ids + generated])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)  # row t predicts token t
    expected = logprobs.gather(-1, torch.tensor(generated)[:, None]).squeeze(-1).numpy()
    captured = np.array([s.logprob for s in steps])
    np.testing.assert_allclose(captured, expected, atol=2e-3)
    entropy = -(logprobs.exp() * logprobs).sum(-1).numpy()
    np.testing.assert_allclose([s.entropy for s in steps], entropy, atol=2e-3)
    for step, row in zip(steps, logprobs):
        assert list(step.top_ids) == row.topk(5).indices.tolist()
        assert step.top_logprobs[0] >= step.logprob - 1e-4


def test_same_seed_same_tokens_and_greedy_is_argmax(embedded):
    _, a, _ = _decode(embedded, seed=11)
    _, b, _ = _decode(embedded, seed=11)
    assert [s.token_id for s in a] == [s.token_id for s in b]
    _, greedy, outcome = _decode(embedded, temperature=0.0)
    sampled = [s for s in greedy if s.position not in outcome.forced_positions]
    assert sampled and all(s.token_id == s.top_ids[0] for s in sampled)


def test_thinking_budget_forces_the_answer(embedded):
    _, steps, outcome = _decode(embedded, prompt="Explain in detail how to add 123 and 456.", max_thinking_tokens=10,
                                temperature=0.0)
    forced = outcome.forced_positions
    assert forced and forced[0] == 10  # injected right after 10 thinking tokens
    text = "".join(s.text for s in steps)
    assert "\nFinal Answer:" in text
    phases = [s.phase for s in steps]
    # Sampled thinking, then the injected tokens marked forced (not counted as thinking), then the answer.
    assert phases[: forced[0]] == [THINKING] * forced[0]
    assert [phases[k] for k in forced] == [FORCED] * len(forced)
    assert set(phases[forced[-1] + 1 :]) <= {ANSWER}
    assert phases.count(ANSWER) <= 12


def test_detokenizer_pieces_reassemble_multibyte_text(embedded):
    tok = embedded.tokenizer
    text = "Ünïcödé → 你好 🙂 and plain ASCII"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.add(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids)
    assert "\ufffd" not in "".join(pieces)


def test_stop_event_ends_generation_and_the_partial_trace_is_kept(embedded):
    stored = []
    request = GenerationRequest("Count from one to one hundred.", SamplingConfig(max_thinking_tokens=400, seed=1), MARKER)
    with LiveGeneration(embedded, request, on_finish=lambda r: stored.append(r) or 7) as live:
        seen = 0
        for event in live.events():
            seen += 1
            if seen == 5:
                live.stop()
    assert live.finished is not None and live.finished.stored == 7
    record = stored[0]
    assert record.stop_reason == "stopped"
    assert 5 <= len(record.tokens) <= 7
    assert not live.running


def test_leaving_the_block_stops_the_worker(embedded):
    request = GenerationRequest("Write a long story.", SamplingConfig(max_thinking_tokens=400), MARKER)
    with LiveGeneration(embedded, request) as live:
        next(iter(live.events()))
    assert not live.running
    assert live.finished.record.stop_reason == "stopped"


def test_generate_builds_a_graded_record(embedded):
    request = GenerationRequest("What is 2 + 2?", SamplingConfig(temperature=0.0, max_thinking_tokens=48), MARKER,
                                reference_answer="4")
    record = generate(embedded, request).record
    assert record.model == EMBEDDED_MODEL
    assert record.stop_reason in ("eos", "max_tokens")
    assert record.n_thinking_tokens + record.n_forced_tokens + record.n_answer_tokens == len(record.tokens)
    assert record.n_thinking_tokens <= 48  # the forced end of thinking is counted apart
    assert record.correct == (record.extracted_answer == "4")
    assert record.settings["temperature"] == 0.0 and record.settings["format"]["kind"] == "answer_marker"
    assert record.meta["raw_text"] == "".join(record.tokens.text)


def test_storage_failure_is_reported_not_raised(embedded):
    def broken_store(record):
        raise OSError("disk full")

    request = GenerationRequest("Hi", SamplingConfig(max_thinking_tokens=3, max_answer_tokens=2), MARKER)
    finished = generate(embedded, request, on_finish=broken_store)
    assert "could not be stored" in finished.error and "disk full" in finished.error
    assert len(finished.record.tokens) > 0


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="empty"):
        GenerationRequest("   ", SamplingConfig(), MARKER)


@pytest.mark.timeout(30)
def test_unknown_hub_model_fails_fast_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        load_model(ModelSpec("some-org/no-such-model-xyz"))


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="No model directory"):
        load_model(ModelSpec(str(tmp_path / "nowhere" / "model")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(ModelSpec(str(tmp_path / "empty")))


def test_invalid_sampling_settings_are_rejected():
    for bad in (dict(temperature=-1), dict(top_p=0), dict(max_thinking_tokens=0)):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)
