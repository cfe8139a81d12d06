"""Saving and loading traces: token round trip, prompt dedupe, runs, filters, bad paths."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from analysis.records import TokenColumns
from storage import (
    LIST_COLUMNS,
    StorageConfig,
    StorageError,
    TraceFilter,
    connect,
    count_traces,
    create_run,
    get_tokens,
    get_trace,
    list_models,
    list_traces,
    save_trace,
    save_traces,
)
from storage.testing import make_record, make_tokens


@pytest.fixture
def cfg(tmp_path):
    return StorageConfig(tmp_path / "db.duckdb", lock_timeout_s=10)


def assert_tokens_equal(a: TokenColumns, b: TokenColumns) -> None:
    for name in ("token_id", "logprob", "entropy", "top_ids", "top_logprobs", "phase"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)  # NaN == NaN here
    assert a.text == b.text
    assert a.top_texts == b.top_texts


def test_save_and_get_round_trip(cfg):
    record = make_record(n_tokens=50, k=5, seed=3, meta={"note": "ok", "forced_end": [3, 9]})
    trace_id = save_trace(cfg, record)
    stored = get_trace(cfg, trace_id)
    assert stored is not None
    assert stored.trace_id == trace_id
    got = stored.record
    for name in ("prompt", "model", "thinking_text", "answer_text", "stop_reason", "latency_s",
                 "reference_answer", "extracted_answer", "correct", "prompt_source", "strategy",
                 "settings", "meta"):  # fmt: skip
        assert getattr(got, name) == getattr(record, name), name
    assert np.isnan(got.tokens.logprob[1])
    assert_tokens_equal(got.tokens, record.tokens)
    assert_tokens_equal(get_tokens(cfg, trace_id), record.tokens)
    assert got.n_thinking_tokens == record.n_thinking_tokens


@pytest.mark.parametrize("n,k", [(0, 0), (1, 0), (7, 0), (3, 1), (4, 20)])
def test_token_shapes_round_trip(cfg, n, k):
    record = make_record(n_tokens=n, k=k, seed=n + k)
    assert_tokens_equal(get_trace(cfg, save_trace(cfg, record)).record.tokens, record.tokens)


def test_untrusted_text_is_stored_verbatim(cfg):
    nasty = "'); DROP TABLE traces; -- \" \\ %_ \u0000 \U0001f600 \n\t"
    tokens = make_tokens(3, 2)
    tokens = TokenColumns(**{**tokens.__dict__, "text": [nasty, "?", "$1"], "top_texts": [[nasty, "'"], ["", "x"], ["a", "b"]]})
    record = make_record(prompt=nasty, thinking_text=nasty, answer_text=nasty, extracted_answer=nasty,
                         reference_answer=nasty, model=nasty, tokens=tokens)  # fmt: skip
    stored = get_trace(cfg, save_trace(cfg, record)).record
    assert (stored.prompt, stored.thinking_text, stored.model) == (nasty, nasty, nasty)
    assert_tokens_equal(stored.tokens, tokens)
    assert count_traces(cfg, TraceFilter(prompt_contains=nasty[:12], models=(nasty,))) == 1


def test_get_missing_trace(cfg):
    assert get_trace(cfg, 12345) is None
    assert len(get_tokens(cfg, 12345)) == 0


def test_prompts_are_deduplicated_by_text_and_reference(cfg):
    ids = save_traces(
        cfg,
        [
            make_record(prompt="p", reference_answer="1"),
            make_record(prompt="p", reference_answer="1"),
            make_record(prompt="p", reference_answer="2"),
            make_record(prompt="p", reference_answer=None),
            make_record(prompt="p", reference_answer=None),
        ],
    )
    ids.append(save_trace(cfg, make_record(prompt="p", reference_answer="1")))
    prompt_ids = [get_trace(cfg, i).prompt_id for i in ids]
    assert prompt_ids[0] == prompt_ids[1] == prompt_ids[5]
    assert len(set(prompt_ids)) == 3
    with connect(cfg, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM prompts").fetchall()[0][0] == 3


def test_runs(cfg):
    run_id = create_run(cfg, "model-a", "best_of_n", {"n": 4}, note="try")
    ids = save_traces(cfg, [make_record(model="model-a", seed=i) for i in range(4)], run_id)
    assert {get_trace(cfg, i).run_id for i in ids} == {run_id}
    assert get_trace(cfg, ids[0]).record.strategy == "best_of_n"
    assert count_traces(cfg, TraceFilter(run_id=run_id)) == 4

    # Without a run, one is created per (model, strategy).
    loose = save_traces(cfg, [make_record(model="a"), make_record(model="b"), make_record(model="a")])
    runs = [get_trace(cfg, i).run_id for i in loose]
    assert runs[0] == runs[2] != runs[1] and run_id not in runs

    with pytest.raises(StorageError, match="Run 999 does not exist"):
        save_trace(cfg, make_record(), run_id=999)


def test_save_is_atomic(cfg):
    save_trace(cfg, make_record())
    bad = make_record(seed=1, settings={"fn": object()})  # not JSON-serialisable
    with pytest.raises(StorageError, match="settings"):
        save_traces(cfg, [make_record(seed=2), bad])
    with connect(cfg, read_only=True) as con:
        counts = [con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("traces", "tokens", "runs")]
    assert counts == [1, 8, 1]


@pytest.mark.parametrize("broken", ["top_texts_row", "top_shape"])
def test_inconsistent_token_columns_are_refused(cfg, broken):
    tokens = make_tokens(4, 2)
    if broken == "top_texts_row":
        tokens.top_texts[2].append("extra")
    else:
        tokens = TokenColumns(**{**tokens.__dict__, "top_logprobs": tokens.top_logprobs[:, :1]})
    with pytest.raises(StorageError, match="cannot be stored"):
        save_trace(cfg, make_record(tokens=tokens))
    assert count_traces(cfg) == 0


def test_settings_with_numpy_and_nan_are_stored(cfg):
    record = make_record(settings={"t": np.float32(0.5), "ids": np.arange(2), "x": float("nan")})
    assert get_trace(cfg, save_trace(cfg, record)).record.settings == {"t": 0.5, "ids": [0, 1], "x": None}


def test_many_traces_in_several_batches(cfg, monkeypatch):
    import storage.writes

    monkeypatch.setattr(storage.writes, "BATCH_TOKENS", 25)  # several Arrow batches in one save
    records = [make_record(n_tokens=10, seed=i, prompt=f"p{i % 3}") for i in range(12)]
    ids = save_traces(cfg, records)
    assert ids == sorted(ids) and len(set(ids)) == 12
    for trace_id, record in zip(ids, records):
        assert_tokens_equal(get_tokens(cfg, trace_id), record.tokens)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    # Module scope: the tests below only read it, and building it costs five saves.
    cfg = StorageConfig(tmp_path_factory.mktemp("filled") / "db.duckdb", lock_timeout_s=10)
    specs = [
        # model, prompt, correct, n_tokens
        ("alpha", "What is 2 + 3?", True, 10),
        ("alpha", "What is 7 + 1?", False, 20),
        ("beta", "Name a 50%_off prime", None, 30),
        ("beta", "what IS love", True, 40),
        ("gamma", "Count the r in strawberry", False, 50),
    ]
    ids = [
        save_trace(cfg, make_record(model=m, prompt=p, correct=c, n_tokens=n, seed=i))
        for i, (m, p, c, n) in enumerate(specs)
    ]
    return cfg, ids


@pytest.mark.parametrize(
    "filt,expected",
    [
        (TraceFilter(), [0, 1, 2, 3, 4]),
        (TraceFilter(models=("alpha",)), [0, 1]),
        (TraceFilter(models=("alpha", "gamma")), [0, 1, 4]),
        (TraceFilter(models=("nope",)), []),
        (TraceFilter(prompt_contains="what is"), [0, 1, 3]),
        (TraceFilter(prompt_contains="%_"), [2]),  # no LIKE wildcards
        (TraceFilter(prompt_contains="%"), [2]),
        (TraceFilter(correct="correct"), [0, 3]),
        (TraceFilter(correct="incorrect"), [1, 4]),
        (TraceFilter(correct="unknown"), [2]),
        (TraceFilter(min_tokens=20), [1, 2, 3, 4]),
        (TraceFilter(max_tokens=20), [0, 1]),
        (TraceFilter(min_tokens=20, max_tokens=40), [1, 2, 3]),
        (TraceFilter(models=("alpha", "beta"), prompt_contains="what", correct="correct", max_tokens=30), [0]),
    ],
)
def test_filters(filled, filt, expected):
    cfg, ids = filled
    want = [ids[i] for i in reversed(expected)]  # newest first
    df = list_traces(cfg, filt)
    assert df["trace_id"].tolist() == want
    assert count_traces(cfg, filt) == len(expected)


def test_run_filter(filled):
    cfg, ids = filled
    run_id = get_trace(cfg, ids[2]).run_id
    assert list_traces(cfg, TraceFilter(run_id=run_id))["trace_id"].tolist() == [ids[2]]


def test_list_columns_and_values(filled):
    cfg, ids = filled
    df = list_traces(cfg)
    assert tuple(df.columns) == LIST_COLUMNS
    row = df[df.trace_id == ids[2]].iloc[0]
    assert row["model"] == "beta" and row["prompt"] == "Name a 50%_off prime"
    assert row["n_tokens"] == 30 and row["n_thinking_tokens"] + row["n_answer_tokens"] == 30
    assert row["reference_answer"] == "5" and row["extracted_answer"] == "5"
    assert row["tokens_per_s"] == pytest.approx(30 / 0.25)
    assert df["correct"].isna().sum() == 1
    assert str(df["correct"].dtype) in ("boolean", "object")


def test_newest_first_and_paging(cfg):
    ids = [save_trace(cfg, make_record(seed=i)) for i in range(5)]
    # An imported (older) trace sorts by its creation time, not its id.
    with connect(cfg) as con:
        con.execute("UPDATE traces SET created_at = created_at - INTERVAL 1 DAY WHERE trace_id = ?", [ids[4]])
    order = [ids[3], ids[2], ids[1], ids[0], ids[4]]
    assert list_traces(cfg)["trace_id"].tolist() == order
    assert list_traces(cfg, limit=2, offset=1)["trace_id"].tolist() == order[1:3]
    assert list_traces(cfg, limit=2, offset=10).empty
    assert tuple(list_traces(cfg, limit=2, offset=10).columns) == LIST_COLUMNS
    created = list_traces(cfg)["created_at"]
    assert (created.diff().dropna() <= timedelta(0)).all()


def test_list_traces_does_not_read_tokens(cfg):
    save_traces(cfg, [make_record(prompt="what now"), make_record(prompt="other")])
    with connect(cfg) as con:
        con.execute("DROP TABLE tokens")
    assert list_traces(cfg, TraceFilter(prompt_contains="what"))["prompt"].tolist() == ["what now"]
    assert count_traces(cfg) == 2


def test_list_models(filled):
    cfg, _ = filled
    assert list_models(cfg) == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    "kwargs",
    [{"correct": "yes"}, {"min_tokens": -1}, {"max_tokens": 1.5}, {"min_tokens": 5, "max_tokens": 4},
     {"models": (1,)}, {"run_id": True}],
)  # fmt: skip
def test_bad_filters(kwargs):
    with pytest.raises(ValueError):
        TraceFilter(**kwargs)


def test_filter_accepts_single_model_string(filled):
    cfg, ids = filled
    assert TraceFilter(models="alpha").models == ("alpha",)
    assert count_traces(cfg, TraceFilter(models=["gamma"])) == 1


def test_path_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = StorageConfig(blocker / "sub" / "db.duckdb")
    with pytest.raises(StorageError, match="Cannot create the directory") as info:
        list_traces(cfg)
    assert str(blocker) in str(info.value)
    assert "Traceback" not in str(info.value)


def test_path_is_a_directory(tmp_path):
    with pytest.raises(StorageError, match="is a directory"):
        save_trace(StorageConfig(tmp_path), make_record())


def test_path_is_not_a_database(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_bytes(b"these are my notes, not a database" * 200)
    with pytest.raises(StorageError) as info:
        count_traces(StorageConfig(path))
    assert str(path) in str(info.value)
    assert path.read_bytes().startswith(b"these are my notes")


def test_read_only_directory(tmp_path):
    import os

    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: directory permissions do not apply")
        with pytest.raises(StorageError, match="permission denied|Permission denied"):
            count_traces(StorageConfig(locked / "db.duckdb"))
    finally:
        locked.chmod(0o700)
