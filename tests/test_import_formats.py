"""Import round trips for every format: each test writes a realistic file, imports it into a real
DuckDB file and reads the traces back with storage.get_trace."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.records import ANSWER, THINKING
from storage import get_trace, save_traces
from storage.errors import TraceImportError
from storage.importers import detect_format, import_file
from storage.importers.common import UNKNOWN_PROMPT
from storage.jsonl import export_jsonl
from storage.testing import make_record
from storage.traces import count_traces


def _traces(cfg, result):
    return [get_trace(cfg, i).record for i in result.trace_ids]


def _jsonl(path: Path, objs) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    return path


# --- ThinkScope's own JSONL ------------------------------------------------------------------

def test_thinkscope_round_trip_through_import_file(db_config, tmp_path):
    records = [make_record(prompt=f"What is {i} + 1?", seed=i, n_tokens=6 + i) for i in range(3)]
    save_traces(db_config, records)
    first = tmp_path / "first.jsonl"
    export_jsonl(db_config, first)
    other = type(db_config)(db_path=tmp_path / "other.duckdb")
    result = import_file(other, first)
    assert result.format == "thinkscope" and result.count == 3
    second = tmp_path / "second.jsonl"
    export_jsonl(other, second)
    assert second.read_bytes() == first.read_bytes()
    back = _traces(other, result)
    assert [r.stop_reason for r in back] == ["eos"] * 3  # own format keeps its stop reason
    np.testing.assert_array_equal(back[2].tokens.token_id, records[2].tokens.token_id)


def test_older_thinkscope_versions_are_upgraded_on_read(db_config, tmp_path, monkeypatch):
    """A version-1 file read by a ThinkScope whose format is at version 2 goes through _UPGRADES."""
    import storage.jsonl_decode as decode

    save_traces(db_config, [make_record()])
    v1 = tmp_path / "v1.jsonl"
    export_jsonl(db_config, v1)
    assert json.loads(v1.read_text())["version"] == 1

    def v1_to_v2(obj: dict) -> dict:  # a stand-in version 2: same shape, marks the upgrade in meta
        trace = {**obj["trace"], "meta": {**obj["trace"]["meta"], "upgraded_from": 1}}
        return {**obj, "version": 2, "trace": trace}

    monkeypatch.setattr(decode, "VERSION", 2)
    monkeypatch.setattr(decode, "_UPGRADES", {1: v1_to_v2})
    other = type(db_config)(db_path=tmp_path / "other.duckdb")
    record = _traces(other, import_file(other, v1))[0]
    assert record.meta["upgraded_from"] == 1 and record.answer_text == "5"

    v3 = tmp_path / "v3.jsonl"
    v3.write_text(v1.read_text().replace('"version":1', '"version":3'))
    with pytest.raises(TraceImportError, match="line 1.*newer ThinkScope"):
        import_file(other, v3)


# --- OpenAI-style chat completions -------------------------------------------------------------

def _logprob(token, lp, alts):
    return {"token": token, "logprob": lp, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alts]}


OPENAI_RESPONSE = {
    "id": "chatcmpl-9x", "object": "chat.completion", "created": 1732780800, "model": "deepseek-reasoner",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "17 + 26 = 43",
                    "reasoning_content": "I add the tens: 10 + 20 = 30.\nThen the ones: 7 + 6 = 13. Total 43."},
        "logprobs": {"content": [
            _logprob("17", -0.01, [("17", -0.01), ("The", -4.6)]),
            _logprob(" + 26", -0.2, [(" + 26", -0.2), (" plus", -1.9)]),
            _logprob(" = 43", -0.05, [(" = 43", -0.05), (" is", -3.1)]),
        ]},
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
}


def test_openai_response_with_reasoning_content_and_logprobs(db_config, tmp_path):
    path = tmp_path / "response.json"
    path.write_text(json.dumps(OPENAI_RESPONSE, indent=2))  # pretty-printed: a JSON document
    assert detect_format(path) == "openai"
    result = import_file(db_config, path)
    (record,) = _traces(db_config, result)
    assert record.stop_reason == "imported" and record.meta["source_format"] == "openai"
    assert record.model == "deepseek-reasoner" and record.prompt == UNKNOWN_PROMPT
    assert record.thinking_text.startswith("I add the tens") and record.answer_text == "17 + 26 = 43"
    answer = record.tokens.phase == ANSWER
    assert [t for t, a in zip(record.tokens.text, answer) if a] == ["17", " + 26", " = 43"]
    np.testing.assert_allclose(record.tokens.logprob[answer], [-0.01, -0.2, -0.05], rtol=1e-6)
    assert (record.tokens.token_id == -1).all()
    assert record.tokens.top_texts[-1] == [" = 43", " is"]
    np.testing.assert_allclose(record.tokens.top_logprobs[-1], [-0.05, -3.1], rtol=1e-6)
    # The reasoning had no log-probabilities: kept as word pieces without log p, phase thinking.
    thinking = record.tokens.phase == THINKING
    assert "".join(np.array(record.tokens.text)[thinking]).strip() == record.thinking_text
    assert np.isnan(record.tokens.logprob[thinking]).all()
    assert record.meta["usage"]["total_tokens"] == 52


def test_openai_jsonl_request_response_pairs_with_reasoning_field(db_config, tmp_path):
    pairs = [
        {"request": {"model": "qwen/qwq-32b", "temperature": 0.6,
                     "messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": f"What is {i} * 3?"}]},
         "response": {"id": f"r{i}", "model": "qwen/qwq-32b", "created": 1732780800 + i,
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": str(3 * i),
                                               "reasoning": f"{i} times 3 is {3 * i}."}}]}}
        for i in range(1, 4)
    ]
    path = _jsonl(tmp_path / "pairs.jsonl", pairs)
    result = import_file(db_config, path, "openai")
    records = _traces(db_config, result)
    assert [r.prompt for r in records] == ["What is 1 * 3?", "What is 2 * 3?", "What is 3 * 3?"]
    assert [r.answer_text for r in records] == ["3", "6", "9"]
    assert records[1].thinking_text == "2 times 3 is 6."
    assert records[0].settings["temperature"] == 0.6 and records[0].meta["reasoning_field"] == "reasoning"
    assert len(records[0].tokens) == 0  # no logprobs: no token rows
    assert get_trace(db_config, result.trace_ids[0]).created_at.year == 2024


def test_openai_messages_with_think_tags_and_batch_output(db_config, tmp_path):
    chat = {"model": "deepseek-r1-distill-qwen-7b", "messages": [
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": "<think>\n91 = 7 * 13.\n</think>\n\nNo, 91 = 7 × 13."},
        {"role": "user", "content": [{"type": "text", "text": "And 97?"}]},
        {"role": "assistant", "content": "No divisor up to 9 works.</think>\n\nYes, 97 is prime."},
    ]}
    batch = {"id": "batch_req_1", "custom_id": "q-7", "response": {"status_code": 200, "body": {
        "model": "o4-mini", "choices": [{"message": {"role": "assistant", "content": "8"}}]}}}
    path = _jsonl(tmp_path / "chat.jsonl", [chat, batch])
    assert detect_format(path) == "openai"
    records = _traces(db_config, import_file(db_config, path))
    assert [(r.prompt, r.thinking_text, r.answer_text) for r in records] == [
        ("Is 91 prime?", "91 = 7 * 13.", "No, 91 = 7 × 13."),
        ("And 97?", "No divisor up to 9 works.", "Yes, 97 is prime."),  # started inside thinking
        (UNKNOWN_PROMPT, "", "8"),
    ]
    assert records[1].settings["format"]["starts_in_thinking"] is True


def test_openai_logprobs_covering_think_tags_get_phases(db_config, tmp_path):
    pieces = ["<think>", "Add", " them", "</think>", "\n\n", "5"]
    response = {"model": "local", "choices": [{"message": {"role": "assistant", "content": "".join(pieces)},
                "logprobs": {"content": [_logprob(p, -0.5, [(p, -0.5)]) for p in pieces]}}]}
    path = _jsonl(tmp_path / "tagged.jsonl", [response])
    (record,) = _traces(db_config, import_file(db_config, path))
    assert record.thinking_text == "Add them" and record.answer_text == "5"
    assert record.tokens.text == pieces
    assert record.tokens.phase.tolist() == [THINKING] * 4 + [ANSWER] * 2


# --- raw text ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "thinking", "answer"),
    [
        ("<think>\nWe need 6 * 7. That is 42.\n</think>\n\nThe answer is 42.", "We need 6 * 7. That is 42.", "The answer is 42."),
        ("We need 6 * 7. That is 42.\n</think>\n\nThe answer is 42.", "We need 6 * 7. That is 42.", "The answer is 42."),
        ("<thinking>Check units first.</thinking>\nIt weighs 3 kg.", "Check units first.", "It weighs 3 kg."),
        ("Check units first.\n</thinking>\nIt weighs 3 kg.", "Check units first.", "It weighs 3 kg."),
        ("<think>\nStill thinking when it was cut off", "Still thinking when it was cut off", ""),
        ("Just an answer, no tags.", "", "Just an answer, no tags."),
    ],
    ids=["think", "no-opening-tag", "thinking", "thinking-no-opening", "unfinished", "untagged"],
)
def test_raw_text(db_config, tmp_path, text, thinking, answer):
    path = tmp_path / "output.txt"
    path.write_text(text, encoding="utf-8")
    assert detect_format(path) == "raw"
    (record,) = _traces(db_config, import_file(db_config, path))
    assert (record.thinking_text, record.answer_text) == (thinking, answer)
    assert record.meta["raw_text"] == text and record.stop_reason == "imported"
    assert record.prompt == UNKNOWN_PROMPT and len(record.tokens) == 0


# --- Anthropic messages -----------------------------------------------------------------------

def test_anthropic_thinking_and_redacted_thinking(db_config, tmp_path):
    pair = {
        "request": {"model": "claude-sonnet-4-5", "max_tokens": 16000,
                    "thinking": {"type": "enabled", "budget_tokens": 10000},
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Is 2^31 - 1 prime?"}]}]},
        "response": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "2^31 - 1 = 2147483647, a Mersenne number.", "signature": "EqQB..."},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a..."},
                {"type": "thinking", "thinking": "Euler proved it prime in 1772.", "signature": "EqQC..."},
                {"type": "text", "text": "Yes, 2^31 - 1 is prime."},
            ],
            "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": 90},
        },
    }
    batch = {"custom_id": "q2", "result": {"type": "succeeded", "message": {
        "type": "message", "role": "assistant", "model": "claude-opus-4",
        "content": [{"type": "thinking", "thinking": "Trivial.", "signature": "x"}, {"type": "text", "text": "4"}]}}}
    path = _jsonl(tmp_path / "claude.jsonl", [pair, batch])
    assert detect_format(path) == "anthropic"
    first, second = _traces(db_config, import_file(db_config, path))
    assert first.prompt == "Is 2^31 - 1 prime?" and first.model == "claude-sonnet-4-5"
    assert first.thinking_text == ("2^31 - 1 = 2147483647, a Mersenne number.\n\n[redacted thinking]\n\n"
                                   "Euler proved it prime in 1772.")
    assert first.answer_text == "Yes, 2^31 - 1 is prime."
    assert first.meta["redacted_thinking_blocks"] == 1 and first.meta["source_format"] == "anthropic"
    assert first.settings["thinking"]["budget_tokens"] == 10000
    assert (second.thinking_text, second.answer_text, second.model) == ("Trivial.", "4", "claude-opus-4")


def test_anthropic_conversation_document(db_config, tmp_path):
    convo = {"model": "claude-3-7-sonnet", "messages": [
        {"role": "user", "content": "Name a prime above 100."},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "101 has no divisor up to 10."},
                                          {"type": "text", "text": "101"}]},
    ]}
    path = tmp_path / "convo.json"
    path.write_text(json.dumps([convo], indent=1))
    (record,) = _traces(db_config, import_file(db_config, path))
    assert (record.prompt, record.thinking_text, record.answer_text) == ("Name a prime above 100.", "101 has no divisor up to 10.", "101")
    assert record.model == "claude-3-7-sonnet" and record.meta["source_record"] == 1


# --- Open WebUI --------------------------------------------------------------------------------

def _details(body_lines, duration, escaped):
    quoted = "\n".join(f"> {line}" for line in body_lines)
    if escaped:
        quoted = quoted.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f'<details type="reasoning" done="true" duration="{duration}">\n'
            f"<summary>Thought for {duration} seconds</summary>\n{quoted}\n</details>\n")


def test_openwebui_export(db_config, tmp_path):
    export = [
        {"id": "chat-1", "title": "Primes", "created_at": 1732780000, "chat": {
            "models": ["qwen3:8b"],
            "messages": [
                {"id": "m1", "role": "user", "content": "Is 57 prime?", "timestamp": 1732780000},
                {"id": "m2", "role": "assistant", "model": "qwen3:8b", "timestamp": 1732780012,
                 "content": _details(["57 = 3 * 19, and 3 < 19.", "So not prime."], 12, escaped=True)
                 + "No: 57 = 3 × 19."},
            ]}},
        {"id": "chat-2", "title": "Old export", "chat": {
            "models": ["deepseek-r1:7b"],
            "history": {"currentId": "b", "messages": {
                "a": {"id": "a", "parentId": None, "role": "user", "content": "2 + 2?"},
                "b": {"id": "b", "parentId": "a", "role": "assistant",
                      "content": _details(["Add: 4"], 2, escaped=False) + "4"},
            }}}},
    ]
    path = tmp_path / "chat-export.json"
    path.write_text(json.dumps(export, indent=2))
    assert detect_format(path) == "openwebui"
    first, second = _traces(db_config, import_file(db_config, path))
    assert first.prompt == "Is 57 prime?" and first.model == "qwen3:8b"
    assert first.thinking_text == "57 = 3 * 19, and 3 < 19.\nSo not prime."
    assert first.answer_text == "No: 57 = 3 × 19."
    assert first.meta["thinking_duration_s"] == 12 and first.meta["chat_title"] == "Primes"
    assert (second.prompt, second.thinking_text, second.answer_text, second.model) == ("2 + 2?", "Add: 4", "4", "deepseek-r1:7b")


# --- common behaviour --------------------------------------------------------------------------

def test_explicit_format_overrides_detection(db_config, tmp_path):
    path = _jsonl(tmp_path / "looks-like-json.jsonl", [OPENAI_RESPONSE])
    result = import_file(db_config, path, "raw")  # the user says: store this text as is
    (record,) = _traces(db_config, result)
    assert result.format == "raw" and record.answer_text.startswith('{"id"')
    with pytest.raises(TraceImportError, match="unknown format 'yaml'"):
        import_file(db_config, path, "yaml")


def test_imported_traces_are_grouped_into_one_run_per_model(db_config, tmp_path):
    path = _jsonl(tmp_path / "many.jsonl", [OPENAI_RESPONSE] * 3)
    ids = import_file(db_config, path).trace_ids
    runs = {get_trace(db_config, i).run_id for i in ids}
    assert len(runs) == 1 and count_traces(db_config) == 3


def test_imported_text_is_retokenized_for_analysis(db_config, tmp_path, embedded):
    """Traces without token ids analyse: forced_input re-encodes the stored text and keeps the split."""
    from generation.analyze import forced_input

    path = tmp_path / "answer.txt"
    path.write_text("<think>\n3 + 4 is 7.\n</think>\n\nThe answer is 7.")
    (record,) = _traces(db_config, import_file(db_config, path))
    record.prompt = "What is 3 + 4?"
    inputs = forced_input(embedded, record)
    assert inputs.retokenized
    phases = np.asarray(inputs.phase)
    assert (phases == THINKING).any() and (phases == ANSWER).any()
    assert "The answer is 7." in "".join(np.array(inputs.text)[phases == ANSWER])


def test_imported_traces_display_on_the_trace_page(tmp_path, monkeypatch):
    """Token rows without alternatives (K = 0), unknown ids and entropy, and no token rows at all."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from storage.config import StorageConfig

    cfg = StorageConfig(tmp_path / "page.duckdb")
    response = {"model": "local", "choices": [{"message": {"role": "assistant", "content": "<think>hm</think>42"},
                "logprobs": {"content": [{"token": t, "logprob": -0.7} for t in ["<think>", "hm", "</think>", "42"]]}}]}
    (with_tokens,) = import_file(cfg, _jsonl(tmp_path / "k0.jsonl", [response])).trace_ids
    text_only = tmp_path / "t.txt"
    text_only.write_text("pondering</think>42")
    (without,) = import_file(cfg, text_only).trace_ids
    assert get_trace(cfg, with_tokens).record.tokens.top_ids.shape == (4, 0)
    monkeypatch.setenv("THINKSCOPE_DB", str(cfg.db_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    page = str(Path(__file__).resolve().parent.parent / "pages" / "trace.py")
    for trace_id, shown in ((with_tokens, "42"), (without, "pondering")):
        at = AppTest.from_file(page, default_timeout=120)
        at.query_params["id"] = str(trace_id)
        at.run()
        assert not at.exception, at.exception
        html = " ".join(str(h.proto) for h in at.get("html")) + " ".join(m.value for m in at.markdown)
        assert shown in html
        assert [m.value for m in at.metric if m.label == "Ended"] == ["imported"]
    st.cache_resource.clear()


def test_imported_answers_are_extracted_like_generated_ones(db_config, tmp_path):
    pair = {"request": {"messages": [{"role": "user", "content": "What is 6 * 7?"}]},
            "response": {"choices": [{"message": {"role": "assistant", "reasoning_content": "6 sevens.",
                                                  "content": "The answer is 42."}}]}}
    raw = tmp_path / "out.txt"
    raw.write_text("<think>2 and 2</think>So: 4")
    for path in (_jsonl(tmp_path / "chat.jsonl", [pair]), raw):
        (record,) = _traces(db_config, import_file(db_config, path))
        assert record.extracted_answer in ("42", "4") and record.correct is None  # no reference: not graded
