"""Issue 11 hardening of import and export: the number rule, one set of limits at every entry
point, the full round trip of stored values, linear Open WebUI parsing, bounded memory per line,
clear errors for surrogates / deep nesting / huge numbers / out-of-range times, validation of
settings.format and token ids, and the mended messages of item 14."""
from __future__ import annotations

import copy
import json
import random
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from analysis.records import TokenColumns
from storage import get_trace, save_traces
from storage.config import StorageConfig
from storage.connection import connect
from storage.content import (FLOAT32_MAX, MAX_FIELD_CHARS, MAX_JSON_DEPTH, MAX_LATENCY_S, MAX_LINE_VALUES,
                             MAX_TOKEN_ID, MAX_TOKEN_VALUES)
from storage.errors import TraceImportError
from storage.importers import import_file
from storage.importers.openwebui import split_details
from storage.jsonl import export_jsonl
from storage.testing import make_record
from storage.traces import count_traces

GOOD = {"model": "m", "choices": [{"message": {"content": "4", "reasoning_content": "2+2"}}]}


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _refused(cfg, path, *phrases, fmt="auto") -> TraceImportError:
    with pytest.raises(TraceImportError) as info:
        import_file(cfg, path, fmt)
    message = str(info.value)
    for phrase in phrases:
        assert phrase in message, message
    assert "Traceback" not in message and "Nothing from this file was stored" in message
    assert count_traces(cfg) == 0
    return info.value


def _thinkscope_line(cfg, tmp_path, **record_fields) -> dict:
    """One exported ThinkScope line (a real export of a real save), as a dict to corrupt."""
    other = StorageConfig(tmp_path / f"src{random.random()}.duckdb", seed_path=None)
    save_traces(other, [make_record(**record_fields)])
    out = tmp_path / "src.jsonl"
    export_jsonl(other, out)
    return json.loads(out.read_text())


# --- 1. NaN, ±Infinity, out-of-range numbers --------------------------------------------------

def _openai_lp(value: str, top: str = "-1.0") -> str:
    return ('{"model": "m", "choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"token": "x", '
            f'"logprob": {value}, "top_logprobs": [{{"token": "y", "logprob": {top}}}]}}]}}}}]}}')


@pytest.mark.parametrize(
    ("line", "field", "phrase"),
    [
        (_openai_lp("NaN"), "choices[0].logprobs.content[0].logprob", "is NaN"),
        (_openai_lp("-Infinity"), "choices[0].logprobs.content[0].logprob", "is -Infinity"),
        (_openai_lp("-1.0", "Infinity"), "choices[0].logprobs.content[0].top_logprobs[0].logprob", "is Infinity"),
        (_openai_lp("-1e300"), "choices[0].logprobs.content[0].logprob", "is -1e+300, outside"),
        (_openai_lp("-" + "9" * 400), "choices[0].logprobs.content[0].logprob", "an integer of 400 digits"),
    ],
    ids=["nan", "minus-infinity", "top-infinity", "1e300", "400-digits"],
)
def test_openai_non_finite_numbers_are_refused_naming_the_field(db_config, tmp_path, line, field, phrase):
    path = _write(tmp_path / "lp.jsonl", json.dumps(GOOD), line)
    error = _refused(db_config, path, "line 2", f"field '{field}'", phrase, "finite numbers only")
    assert error.line == 2 and error.field == field


@pytest.mark.parametrize(
    ("where", "value", "field", "phrase"),
    [
        ("latency_s", "NaN", "trace.latency_s", "is NaN"),
        ("latency_s", "Infinity", "trace.latency_s", "is Infinity"),
        ("latency_s", "1e300", "trace.latency_s", "is 1e+300, outside 0 … 1e+09 seconds"),
        ("latency_s", "9" * 400, "trace.latency_s", "an integer of 400 digits"),
        ("latency_s", "-3", "trace.latency_s", "is -3, outside"),
        ("logprob", "1e300", "tokens.logprob[1]", "outside"),
        ("logprob", "-" + "9" * 400, "tokens.logprob[1]", "an integer of 400 digits"),
        ("logprob", "NaN", "tokens.logprob[1]", "is NaN"),
        ("top_logprobs", "-Infinity", "tokens.top_logprobs[4]", "is -Infinity"),
    ],
)
def test_thinkscope_non_finite_numbers_are_refused(db_config, tmp_path, where, value, field, phrase):
    obj = _thinkscope_line(db_config, tmp_path)
    sentinel = 12345.5  # written as is, then replaced by the literal JSON cannot hold
    if where == "latency_s":
        obj["trace"]["latency_s"] = sentinel
    elif where == "logprob":
        obj["tokens"]["logprob"][1] = sentinel
    else:
        obj["tokens"]["top_logprobs"][1][1] = sentinel
    text = json.dumps(obj).replace("12345.5", value)
    _refused(db_config, _write(tmp_path / "ts.jsonl", text), "line 1", f"field '{field}'", phrase)


def test_null_stays_the_way_to_write_an_unknown_number(db_config, tmp_path):
    obj = _thinkscope_line(db_config, tmp_path)
    obj["tokens"]["logprob"][0] = None
    obj["trace"]["latency_s"] = None
    (trace_id,) = import_file(db_config, _write(tmp_path / "null.jsonl", json.dumps(obj))).trace_ids
    record = get_trace(db_config, trace_id).record
    assert np.isnan(record.tokens.logprob[0]) and record.latency_s == 0.0


def test_generated_non_finite_numbers_are_stored_as_unknown_and_export(db_config, tmp_path):
    """The generation / remote save path never refuses a finished trace: ±inf -> unknown."""
    record = make_record(n_tokens=4, k=2)
    record.tokens.logprob[:] = [-np.inf, np.nan, np.inf, -0.5]
    record.tokens.top_logprobs[0, :] = [-np.inf, -1.0]
    record.latency_s = float("nan")
    (trace_id,) = save_traces(db_config, [record])
    stored = get_trace(db_config, trace_id).record
    assert np.isnan(stored.tokens.logprob[:3]).all() and stored.tokens.logprob[3] == np.float32(-0.5)
    assert np.isnan(stored.tokens.top_logprobs[0, 0]) and stored.latency_s == 0.0
    out = tmp_path / "out.jsonl"
    assert export_jsonl(db_config, out) == 1
    assert json.loads(out.read_text())["tokens"]["logprob"][:3] == [None, None, None]


def test_export_never_fails_on_non_finite_values_an_older_database_holds(db_config, tmp_path):
    (trace_id,) = save_traces(db_config, [make_record(n_tokens=3, k=1)])
    with connect(db_config) as con:  # what imports before the number rule could leave behind
        con.execute("UPDATE traces SET latency_s = 'inf'::DOUBLE WHERE trace_id = ?", [trace_id])
        con.execute("UPDATE tokens SET logprob = '-inf'::FLOAT, top_logprobs = ['nan'::FLOAT] WHERE trace_id = ?",
                    [trace_id])
    out = tmp_path / "old.jsonl"
    assert export_jsonl(db_config, out) == 1
    obj = json.loads(out.read_text())
    assert obj["trace"]["latency_s"] is None and obj["tokens"]["logprob"] == [None] * 3
    assert obj["tokens"]["top_logprobs"] == [[None]] * 3
    other = StorageConfig(tmp_path / "other.duckdb", seed_path=None)
    assert import_file(other, out).count == 1  # and it reads back


# --- 3 / 5. one set of limits; the round trip over the full range ------------------------------

def test_an_oversized_generated_text_is_clipped_to_the_shared_limit_and_round_trips(db_config, tmp_path):
    """A remote stream with one 52 M-character chunk: stored within MAX_FIELD_CHARS (saying so),
    so the backup imports again (before: stored whole, refused by the importer)."""
    record = make_record(n_tokens=2, k=1, thinking_text="t" * (MAX_FIELD_CHARS + 7))
    (trace_id,) = save_traces(db_config, [record])
    stored = get_trace(db_config, trace_id).record
    assert len(stored.thinking_text) == MAX_FIELD_CHARS
    assert stored.meta["clipped"] == {"thinking_text": MAX_FIELD_CHARS + 7}
    out = tmp_path / "big.jsonl"
    export_jsonl(db_config, out)
    other = StorageConfig(tmp_path / "other.duckdb", seed_path=None)
    (back,) = import_file(other, out).trace_ids
    assert len(get_trace(other, back).record.thinking_text) == MAX_FIELD_CHARS


def test_too_many_generated_tokens_are_clipped_to_the_token_limit():
    from storage.content import fit_record, token_values

    n = MAX_TOKEN_VALUES // 5 + 3  # K = 0: five values per token
    tokens = TokenColumns(np.zeros(n, np.int64), ["a"] * n, np.zeros(n, np.float32), np.zeros(n, np.float32),
                          np.zeros((n, 0), np.int64), [[] for _ in range(n)], np.zeros((n, 0), np.float32),
                          np.zeros(n, np.int8))
    fitted = fit_record(make_record(n_tokens=1, k=0, tokens=tokens))
    assert token_values(fitted.tokens) <= MAX_TOKEN_VALUES and fitted.meta["clipped"]["tokens"] == n


def test_the_round_trip_over_the_full_range_of_stored_values(db_config, tmp_path):
    """Extremes of every stored value: export -> import -> export gives the same bytes."""
    k = 3
    ids = np.array([-1, 0, MAX_TOKEN_ID - 1], np.int64)
    floats = np.array([-FLOAT32_MAX, np.nan, FLOAT32_MAX], np.float32)
    tokens = TokenColumns(ids, ["\x00", "😀\u2028", "\\\"<"], floats, np.array([0, np.nan, 1e-45], np.float32),
                          np.tile(ids, (3, 1)), [["", "é", "\x1f"]] * 3, np.tile(floats, (3, 1)),
                          np.array([0, 2, 1], np.int8))
    deep: dict = {"leaf": [2**63 - 1, -(2**63), 1.7976931348623157e308, 5e-324, True, None, ""]}
    for _ in range(MAX_JSON_DEPTH - 3):  # meta, these, the leaf object and its list: MAX_JSON_DEPTH levels
        deep = {"d": deep}
    records = [
        make_record(prompt="p" * MAX_FIELD_CHARS, thinking_text="", answer_text="\x00 NUL\ttab 😀", latency_s=MAX_LATENCY_S,
                    tokens=tokens, meta={"deep": deep, "unicode": "\u2028\u0085"}, settings={"temperature": 0.0}),
        make_record(prompt="", thinking_text="x" * MAX_FIELD_CHARS, answer_text="", latency_s=0.0, n_tokens=0, k=0),
    ]
    records[0].reference_answer = "r" * 10
    src = tmp_path / "src.jsonl"
    src.write_text("\n".join(_line_with_time(r, t) for r, t in
                             zip(records, ["0001-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z"])) + "\n")
    result = import_file(db_config, src)
    assert result.count == 2
    first = tmp_path / "first.jsonl"
    export_jsonl(db_config, first)
    other = StorageConfig(tmp_path / "other.duckdb", seed_path=None)
    import_file(other, first)
    second = tmp_path / "second.jsonl"
    export_jsonl(other, second)
    assert second.read_bytes() == first.read_bytes()
    back = get_trace(other, 1)
    assert back.created_at == datetime(1, 1, 1) and get_trace(other, 2).created_at == datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert back.record.tokens.text == tokens.text and back.record.answer_text == "\x00 NUL\ttab 😀"
    np.testing.assert_array_equal(back.record.tokens.token_id, ids)
    assert '"created_at":"0001-01-01T00:00:00.000000Z"' in first.read_text()


def _line_with_time(record, created_at: str) -> str:
    from storage.jsonl import encode_tokens

    obj = {"format": "thinkscope.trace", "version": 1,
           "prompt": {"text": record.prompt, "reference_answer": record.reference_answer, "source": "user"},
           "trace": {"model": record.model, "thinking_text": record.thinking_text, "answer_text": record.answer_text,
                     "stop_reason": "eos", "latency_s": record.latency_s, "settings": record.settings,
                     "meta": record.meta, "created_at": created_at},
           "tokens": encode_tokens(record.tokens)}
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def test_a_year_1_backup_written_before_the_fix_reads_back(db_config, tmp_path):
    obj = _thinkscope_line(db_config, tmp_path)
    obj["trace"]["created_at"] = "1-01-01T00:00:00.000000Z"  # strftime("%Y") wrote year 1 like this
    (trace_id,) = import_file(db_config, _write(tmp_path / "old.jsonl", json.dumps(obj))).trace_ids
    assert get_trace(db_config, trace_id).created_at == datetime(1, 1, 1)


# --- 8. Open WebUI in linear time -------------------------------------------------------------

_OLD_BLOCK = re.compile(r'<details\s+type="reasoning"(?P<attrs>[^>]*)>(?P<body>.*?)</details>\s*', re.DOTALL)


def _old_split(content: str):
    """The regex implementation before the fix: the slow reference (quadratic, same results)."""
    from storage.importers.openwebui import _DURATION, _SUMMARY, _unquote

    thoughts, duration = [], None
    for match in _OLD_BLOCK.finditer(content):
        found = _DURATION.search(match.group("attrs"))
        if found:
            duration = (duration or 0.0) + float(found.group(1))
        thoughts.append(_unquote(_SUMMARY.sub("", match.group("body"), count=1)))
    return "\n\n".join(t for t in thoughts if t), _OLD_BLOCK.sub("", content).strip(), duration


def test_split_details_matches_the_regex_reference_on_random_messages():
    rng = random.Random(7)
    pieces = ['<details type="reasoning" done="true" duration="3">', '<details  type="reasoning">', "</details>",
              "<summary>Thought</summary>", "> quoted\n", "&gt; esc\n", "plain ", "\n", ">", "<details", '"reasoning"']
    for _ in range(3000):
        content = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert split_details(content) == _old_split(content), content


def test_many_unclosed_reasoning_openings_parse_as_answer(db_config, tmp_path):
    """336 KB of openings without a closing tag (91 s before): all answer text, no thinking."""
    content = '<details type="reasoning">' * 13_000 + "final"
    assert len(content) > 336_000
    thinking, answer, duration = split_details(content)
    assert (thinking, answer, duration) == ("", content, None)
    chat = {"id": "c", "chat": {"models": ["m"], "messages": [{"role": "user", "content": "q"},
                                                                {"role": "assistant", "content": content}]}}
    path = tmp_path / "owui.json"
    path.write_text(json.dumps([chat]))
    (trace_id,) = import_file(db_config, path, "openwebui").trace_ids
    assert get_trace(db_config, trace_id).record.answer_text == content


# --- 9. bounded memory per line ---------------------------------------------------------------

def test_a_line_with_too_many_values_is_refused_before_it_is_parsed(db_config, tmp_path, monkeypatch):
    """Parsing costs ~100 bytes per JSON value: a line of more than MAX_LINE_VALUES is refused
    with the limit named (the 150 MB / 6 M-token line of the issue took 3 GB)."""
    import storage.importers.source as source

    monkeypatch.setattr(source, "MAX_LINE_VALUES", 50_000)  # same code path, a small file
    n = 30_000
    tokens = {"token_id": [1] * n, "text": ["a,b"] * n, "logprob": [-0.5] * n, "entropy": [0.1] * n,
              "top_ids": [[]] * n, "top_texts": [[]] * n, "top_logprobs": [[]] * n, "phase": [0] * n}
    obj = _thinkscope_line(db_config, tmp_path)
    obj["tokens"] = tokens
    path = _write(tmp_path / "huge.jsonl", json.dumps(GOOD), json.dumps(obj))
    _refused(db_config, path, "line 2", "JSON values", "at most 50,000", "bounded memory")
    assert MAX_LINE_VALUES > MAX_TOKEN_VALUES  # a stored trace's own export always fits a line


def test_commas_inside_strings_do_not_count_as_values(tmp_path, monkeypatch):
    import storage.importers.source as source

    monkeypatch.setattr(source, "MAX_LINE_VALUES", 1_000)
    line = json.dumps({"prompt": "q", "response": "," * 50_000 + '\\",[{'})
    source.check_values(tmp_path / "x.jsonl", 1, line.encode())  # no error: a few values only


def test_value_count_matches_a_regex_reference_on_random_json():
    """values_outside_strings (numpy, chunked) against the direct count: strip strings, count."""
    from storage.importers.source import values_outside_strings

    strings = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
    rng = random.Random(3)
    alphabet = ["a", ",", "[", "{", '"', "\\", "é", "\n", "\\\""]
    for _ in range(2000):
        items = []
        for _ in range(rng.randint(0, 8)):
            r = rng.random()
            if r < 0.5:
                items.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10))))
            elif r < 0.75:
                items.append({'k,"': [1, "x\\", {"[": ","}]})
            else:
                items.append([[], {}, 3])
        raw = json.dumps(items, ensure_ascii=False).encode()
        skeleton = strings.sub(b"", raw)
        expected = skeleton.count(b",") + skeleton.count(b"[") + skeleton.count(b"{")
        for chunk in (1, 3, 7, 1 << 22):  # chunk borders anywhere, also inside an escape
            assert values_outside_strings(raw, chunk) == expected, (raw, chunk)


def test_a_trace_over_the_token_value_limit_is_refused_naming_tokens(db_config, tmp_path, monkeypatch):
    import storage.importers.common as common

    monkeypatch.setattr(common, "MAX_TOKEN_VALUES", 20)
    obj = _thinkscope_line(db_config, tmp_path, n_tokens=8, k=3)  # 8 * (5 + 9) = 112 values
    _refused(db_config, _write(tmp_path / "t.jsonl", json.dumps(obj)), "line 1", "field 'tokens'",
             "8 tokens with 3 alternatives", "at most 20 per-token values")


# --- 10 / 11. clear errors ---------------------------------------------------------------------

SURROGATE = "\ud800"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"request": {"messages": [{"role": "user", "content": "a" + SURROGATE}]}, "response": GOOD},
         "request.messages[0].content"),
        ({"model": "m", "choices": [{"message": {"content": "4", "reasoning_content": SURROGATE}}]},
         "choices[0].message.reasoning_content"),
        ({**GOOD, "id": SURROGATE}, "meta.response_id"),
        ({**GOOD, "usage": {"prompt_tokens": SURROGATE}}, "meta.usage.prompt_tokens"),
        ({"prompt": "q", "response": "r", "note": {"x": [SURROGATE]}}, "meta.fields.note.x[0]"),
    ],
    ids=["prompt", "thinking", "ids", "usage", "record-meta"],
)
def test_lone_surrogates_name_line_and_field(db_config, tmp_path, obj, field):
    first = {"prompt": "q0", "response": "r0"} if "prompt" in obj else GOOD  # the format of the file
    path = _write(tmp_path / "s.jsonl", json.dumps(first), json.dumps(obj))
    _refused(db_config, path, "line 2", f"field '{field}'", "lone UTF-16 surrogate")


@pytest.mark.parametrize(("key", "field"), [(("prompt", "text"), "prompt.text"),
                                            (("trace", "thinking_text"), "trace.thinking_text")])
def test_lone_surrogates_in_thinkscope_lines(db_config, tmp_path, key, field):
    obj = _thinkscope_line(db_config, tmp_path)
    obj[key[0]][key[1]] = "x" + SURROGATE
    _refused(db_config, _write(tmp_path / "ts.jsonl", json.dumps(obj)), "line 1", f"field '{field}'", "surrogate")


def test_lone_surrogate_in_token_text_and_meta_of_thinkscope_lines(db_config, tmp_path):
    obj = _thinkscope_line(db_config, tmp_path)
    obj["tokens"]["text"][2] = SURROGATE
    _refused(db_config, _write(tmp_path / "a.jsonl", json.dumps(obj)), "field 'tokens.text[2]'", "surrogate")
    obj = _thinkscope_line(db_config, tmp_path)
    obj["trace"]["meta"]["id"] = SURROGATE
    _refused(db_config, _write(tmp_path / "b.jsonl", json.dumps(obj)), "field 'trace.meta.id'", "surrogate")


def test_meta_nested_500_levels_is_refused(db_config, tmp_path):
    deep: dict = {}
    for _ in range(500):
        deep = {"a": deep}
    path = _write(tmp_path / "deep.jsonl", json.dumps(GOOD), json.dumps({**GOOD, "usage": deep}))
    _refused(db_config, path, "line 2", "field 'meta.usage.a.…'", f"nested more than {MAX_JSON_DEPTH} levels")
    obj = _thinkscope_line(db_config, tmp_path)
    obj["trace"]["meta"] = deep
    _refused(db_config, _write(tmp_path / "ts.jsonl", json.dumps(obj)), "line 1", "field 'trace.meta.a.…'", "nested")


def test_a_400_digit_integer_in_meta_is_refused(db_config, tmp_path):
    path = _write(tmp_path / "big.jsonl", json.dumps({**GOOD, "usage": {"total_tokens": int("9" * 400)}}))
    _refused(db_config, path, "line 1", "field 'meta.usage.total_tokens'", "integer of 400 digits")


@pytest.mark.parametrize("value", ["9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59+00:00"])
def test_created_at_at_the_end_of_time(db_config, tmp_path, value):
    obj = _thinkscope_line(db_config, tmp_path)
    obj["trace"]["created_at"] = value
    path = _write(tmp_path / "t.jsonl", json.dumps(obj))
    if value.endswith("-05:00"):  # 10000-01-01 in UTC
        _refused(db_config, path, "line 1", "field 'trace.created_at'", "outside the years 1 to 9999")
    else:
        (trace_id,) = import_file(db_config, path).trace_ids
        assert get_trace(db_config, trace_id).created_at == datetime(9999, 12, 31, 23, 59, 59)


@pytest.mark.parametrize(
    ("fmt", "field", "phrase"),
    [
        ({"kind": "think_tags", "colour": "red"}, "trace.settings.format.colour", "is not a reasoning-format key"),
        ({"kind": "tags"}, "trace.settings.format", "unknown reasoning format 'tags'"),
        ({"kind": "think_tags", "starts_in_thinking": "yes"}, "trace.settings.format.starts_in_thinking", "true or false"),
        ("think_tags", "trace.settings.format", "must be an object"),
    ],
    ids=["unknown-key", "unknown-kind", "wrong-type", "not-object"],
)
def test_settings_format_is_validated_at_import(db_config, tmp_path, fmt, field, phrase):
    obj = _thinkscope_line(db_config, tmp_path)
    obj["trace"]["settings"]["format"] = fmt
    _refused(db_config, _write(tmp_path / "f.jsonl", json.dumps(obj)), "line 1", f"field '{field}'", phrase)


@pytest.mark.parametrize(("column", "value", "field"), [("token_id", 10**12, "tokens.token_id[1]"),
                                                       ("token_id", -2, "tokens.token_id[1]"),
                                                       ("top_ids", 10**12, "tokens.top_ids[3]")])
def test_token_ids_out_of_range_are_refused(db_config, tmp_path, column, value, field):
    obj = _thinkscope_line(db_config, tmp_path, k=2)
    if column == "token_id":
        obj["tokens"]["token_id"][1] = value
    else:
        obj["tokens"]["top_ids"][1][1] = value
    _refused(db_config, _write(tmp_path / "ids.jsonl", json.dumps(obj)), "line 1", f"field '{field}'",
             f"is {value}, not a token id")


# --- 14. messages ------------------------------------------------------------------------------

def test_nul_byte_message(db_config, tmp_path):
    path = tmp_path / "nul.jsonl"
    path.write_bytes((json.dumps(GOOD) + "\n").encode() + b'{"model": "m\x00"}\n')
    error = _refused(db_config, path, "nul.jsonl, line 2", "a NUL byte inside a string at column 13",
                     "escape control characters (write \\u0000)")
    assert "at at" not in str(error)


def test_run_prompts_malformed_line_names_file_and_line(tmp_path, capsys):
    from cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 1 + 1?", "answer": "2"}\n{"prompt": oops}\n')
    assert main(["--db", str(tmp_path / "db.duckdb"), "run", "--strategy", "greedy", "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err
    assert f"{prompts}, line 2: invalid JSON (Expecting value at column 12)" in err and "line 1 column" not in err
    prompts.write_bytes(b'{"prompt": "a\x00b"}\n')
    assert main(["--db", str(tmp_path / "db.duckdb"), "run", "--strategy", "greedy", "--prompts", str(prompts)]) == 2
    assert "line 1: invalid JSON (a NUL byte inside a string" in capsys.readouterr().err


def test_same_run_ref_with_different_models_is_an_error(db_config, tmp_path):
    save_traces(db_config, [make_record(model="alpha"), make_record(model="beta", prompt="other")])
    out = tmp_path / "two.jsonl"
    export_jsonl(db_config, out)
    a, b = (json.loads(line) for line in out.read_text().splitlines())
    b = copy.deepcopy(b)
    b["run"]["ref"] = a["run"]["ref"]  # a hand-merged file: one ref, two models
    path = _write(tmp_path / "merged.jsonl", json.dumps(a), json.dumps(b))
    other = StorageConfig(tmp_path / "other.duckdb", seed_path=None)
    _refused(other, path, "merged.jsonl, line 2", "field 'run.model'", "run.ref 1 was given model 'alpha' before (line 1), here 'beta'")
