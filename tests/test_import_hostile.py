"""Malformed and hostile import files: each gives a clear error naming where, and stores nothing,
or is stored as is and shown escaped."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from storage import count_traces, get_trace
from storage.errors import TraceImportError
from storage.importers import MAX_FIELD_CHARS, import_file

REPO = Path(__file__).resolve().parent.parent
GOOD = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"}}]}


def _lines(path: Path, objs) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def _refused(cfg, path, *phrases, fmt="auto"):
    with pytest.raises(TraceImportError) as info:
        import_file(cfg, path, fmt)
    message = str(info.value)
    for phrase in phrases:
        assert phrase in message, message
    assert "Nothing from this file was stored" in message
    assert count_traces(cfg) == 0
    return info.value


@pytest.mark.parametrize(
    ("bad", "field", "phrase"),
    [
        ({"model": "m", "choices": "all of them"}, "choices", "must be a list"),
        ({"model": 7, "choices": []}, "model", "must be a string, got the number 7"),
        ({"model": "m", "choices": [{"message": {"content": 4}}]}, "choices[0].message.content", "got the number 4"),
        ({"model": "m", "choices": [{"message": {"content": "x", "reasoning_content": ["a"]}}]},
         "choices[0].message.reasoning_content", "must be a string"),
        ({"model": "m", "choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"token": "x", "logprob": "low"}]}}]},
         "choices[0].logprobs.content[0].logprob", "must be a number"),
        ({"model": "m", "choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"token": True, "logprob": 0}]}}]},
         "choices[0].logprobs.content[0].token", "wrong type"),
    ],
    ids=["choices-not-list", "model-number", "content-number", "reasoning-list", "logprob-string", "token-bool"],
)
def test_wrong_types_name_line_and_field(db_config, tmp_path, bad, field, phrase):
    # 1,200 good lines first: more than one insert batch is already in the transaction.
    path = _lines(tmp_path / "mixed.jsonl", [GOOD] * 1200 + [bad])
    error = _refused(db_config, path, "line 1201", f"field '{field}'", phrase)
    assert error.line == 1201 and error.field == field


def test_wrong_type_in_a_json_array_names_the_record(db_config, tmp_path):
    path = tmp_path / "array.json"
    good = {"type": "message", "model": "c", "content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "a"}]}
    bad = {"type": "message", "content": [{"type": "thinking", "thinking": 3}]}
    path.write_text(json.dumps([good, good, bad], indent=2))
    _refused(db_config, path, "record 3", "field 'content[0].thinking'", "must be a string")


def test_thinkscope_line_with_wrong_type(db_config, tmp_path):
    line = {"format": "thinkscope.trace", "version": 1, "prompt": {"text": "q"},
            "trace": {"model": "m", "thinking_text": "", "answer_text": 5, "stop_reason": "eos"},
            "tokens": {"token_id": [], "text": [], "logprob": [], "entropy": [], "top_ids": [], "top_texts": [],
                       "top_logprobs": [], "phase": []}}
    _refused(db_config, _lines(tmp_path / "ts.jsonl", [line]), "line 1", "field 'trace.answer_text'", "must be a string")


def test_a_50_mb_field_is_refused_with_the_limit(db_config, tmp_path):
    huge = {"model": "m", "choices": [{"message": {"content": "x" * 50_000_000}}]}
    path = _lines(tmp_path / "huge.jsonl", [GOOD, huge])
    _refused(db_config, path, "line 2", "field 'choices[0].message.content'", "50,000,000 characters",
             f"limit is {MAX_FIELD_CHARS:,}")


def test_a_large_field_under_the_limit_is_stored_whole(db_config, tmp_path):
    text = "step " * 400_000  # 2 M characters
    path = _lines(tmp_path / "large.jsonl", [{"model": "m", "choices": [{"message": {"content": "ok", "reasoning": text}}]}])
    (trace_id,) = import_file(db_config, path).trace_ids
    assert get_trace(db_config, trace_id).record.thinking_text == text.strip()


def test_invalid_utf8_names_line_and_byte_offset(db_config, tmp_path):
    good = (json.dumps(GOOD) + "\n").encode()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good * 2 + b'{"model": "caf\xe9"}\n')
    _refused(db_config, path, "line 3", "not valid UTF-8", "byte 15 of the line", f"byte offset {2 * len(good) + 14}", "0xe9")


def test_invalid_utf8_in_raw_text_names_the_line(db_config, tmp_path):
    path = tmp_path / "out.txt"
    path.write_bytes("<think>ok</think>\nfine\n".encode() + b"bad \xff byte\n")
    _refused(db_config, path, "line 3", "byte 5 of the line", "not valid UTF-8")


@pytest.mark.parametrize("content", [b"", b"\n\n   \n"], ids=["empty", "blank-lines"])
def test_empty_file(db_config, tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    _refused(db_config, path, "the file is empty")


def test_binary_garbage(db_config, tmp_path):
    path = tmp_path / "garbage.bin"
    path.write_bytes(os.urandom(4096).replace(b"\x00", b"\x01") + bytes(range(128, 256)))
    _refused(db_config, path, "not valid UTF-8")


def test_garbage_that_starts_like_json(db_config, tmp_path):
    path = tmp_path / "broken.json"
    path.write_bytes(b"{\x01\x02 this is not json }}}\n" * 3)
    _refused(db_config, path, "invalid JSON", "choose the raw text format")


@pytest.mark.parametrize(
    ("payload", "phrase"),
    [
        ([1, 2, 3], "expected a JSON object"),
        ({"hello": "world", "n": 1}, "cannot tell which format this is (top-level keys: hello, n)"),
        ([], "empty JSON array"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "holds no assistant message"),
        ([[[[]]]], "expected a JSON object"),
    ],
    ids=["numbers", "unknown-object", "empty-array", "no-assistant", "nested-lists"],
)
def test_valid_json_of_the_wrong_shape(db_config, tmp_path, payload, phrase):
    path = tmp_path / "shape.json"
    path.write_text(json.dumps(payload))
    _refused(db_config, path, phrase)


def test_explicit_format_on_the_wrong_content(db_config, tmp_path):
    path = _lines(tmp_path / "openai.jsonl", [GOOD])
    _refused(db_config, path, "line 1", "field 'format'", "is this a ThinkScope trace file", fmt="thinkscope")
    _refused(db_config, path, "line 1", "is not an Anthropic message", fmt="anthropic")


def test_deeply_nested_json(db_config, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    _refused(db_config, path, "line 1")


SCRIPT = "<script>alert('owned')</script>"


def test_html_and_script_are_stored_as_is_and_shown_escaped(db_config, tmp_path, monkeypatch):
    tokens = [SCRIPT, ' <img src=x onerror="boom()">']
    response = {"model": "m<b>", "choices": [{
        "message": {"role": "assistant", "content": "".join(tokens), "reasoning_content": f"think {SCRIPT}"},
        "logprobs": {"content": [{"token": t, "logprob": -1.0, "top_logprobs": [{"token": "<i>alt</i>", "logprob": -2.0}]}
                                 for t in tokens]}}]}
    pair = {"request": {"messages": [{"role": "user", "content": "<h1>prompt</h1>"}]}, "response": response}
    raw = tmp_path / "raw.txt"
    raw.write_text(f"<think>{SCRIPT}</think>{SCRIPT}")
    (trace_id,) = import_file(db_config, _lines(tmp_path / "xss.jsonl", [pair])).trace_ids
    (raw_id,) = import_file(db_config, raw).trace_ids
    record = get_trace(db_config, trace_id).record
    assert record.answer_text == "".join(tokens) and record.prompt == "<h1>prompt</h1>"  # stored as is
    assert get_trace(db_config, raw_id).record.answer_text == SCRIPT

    monkeypatch.setenv("THINKSCOPE_DB", str(db_config.db_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    for shown in (trace_id, raw_id):  # with token rows, and text only
        at = AppTest.from_file(str(REPO / "pages" / "trace.py"), default_timeout=120)
        at.query_params["id"] = str(shown)
        at.run()
        assert not at.exception, at.exception
        html = " ".join(str(h.proto) for h in at.get("html")) + " ".join(m.value for m in at.markdown)
        assert "&lt;script&gt;alert(" in html
        assert "<script>" not in html and "<img src=x" not in html and "<h1>" not in html
    st.cache_resource.clear()


def test_thinkscope_record_of_a_json_array_is_named(db_config, tmp_path):
    path = tmp_path / "array.json"
    path.write_text(json.dumps([{"format": "thinkscope.trace", "version": 1, "prompt": {"text": "q"}}], indent=1))
    error = _refused(db_config, path, "array.json, record 1:", "field 'trace': is missing")
    assert error.record == 1 and error.field == "trace"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"model": "m", "created": 1e400, "choices": []}', "created"),
        ('{"model": "m", "created": ' + "9" * 500 + ', "choices": []}', "created"),
        ('{"model": "m", "choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"token": "x", "logprob": -'
         + "9" * 500 + '}]}}]}', "choices[0].logprobs.content[0].logprob"),
    ],
    ids=["infinite-time", "huge-int-time", "huge-int-logprob"],
)
def test_absurd_numbers(db_config, tmp_path, line, field):
    path = tmp_path / "numbers.jsonl"
    path.write_text(line + "\n")
    _refused(db_config, path, "line 1", f"field '{field}'")


def test_integer_with_too_many_digits(db_config, tmp_path):
    path = tmp_path / "digits.jsonl"
    path.write_text('{"model": "m", "choices": []}\n{"model": "m", "created": ' + "9" * 5000 + ', "choices": []}\n')
    _refused(db_config, path, "line 2", "invalid JSON")
