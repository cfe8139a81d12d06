"""storage/anchors.py (migration 010): rollouts keyed per sample, branches as a tree; bad input refused."""
from __future__ import annotations

import pytest

from analysis.records import TokenColumns, TraceRecord
from storage.anchors import (
    Branch,
    StoredRollout,
    anchor_settings_keys,
    branch_of,
    branch_tree,
    get_rollouts,
    save_branch,
    save_rollouts,
)
from storage.errors import StorageError
from storage.traces import save_trace


def _trace(config, text="One. Two.") -> int:
    return save_trace(config, TraceRecord(prompt="Q?", model="m", thinking_text=text, answer_text="2",
                                          tokens=TokenColumns.empty(), stop_reason="imported"))


def _row(cut, sample, kind="free", answer="2"):
    return StoredRollout(cut, kind, sample, "text", answer, None if answer is None else '["number", "2"]', True,
                         "eos", 3, "new" if kind == "free" else None, 0.5 if kind == "free" else None)


def test_rollouts_round_trip_and_a_rerun_replaces_the_same_sample(db_config):
    tid = _trace(db_config)
    save_rollouts(db_config, tid, "k1", {"samples": 2}, 2, [_row(0, 0), _row(0, 1), _row(1, 0, "forced", None)])
    save_rollouts(db_config, tid, "k1", {"samples": 2}, 2, [_row(0, 1, answer="3")])
    rows = get_rollouts(db_config, tid, "k1")
    assert [(r.kind, r.cut, r.sample) for r in rows] == [("forced", 1, 0), ("free", 0, 0), ("free", 0, 1)]
    assert rows[2].answer == "3" and rows[0].answer_key is None and rows[1].similarity == 0.5
    assert get_rollouts(db_config, tid, "other") == []
    assert anchor_settings_keys(db_config, tid) == [("k1", {"samples": 2}, 3)]


def test_rollouts_of_a_missing_trace_or_bad_kind_are_refused(db_config):
    with pytest.raises(StorageError, match="No trace 99"):
        save_rollouts(db_config, 99, "k", {}, 1, [_row(0, 0)])
    with pytest.raises(ValueError, match="rollout kind"):
        save_rollouts(db_config, _trace(db_config), "k", {}, 1, [_row(0, 0, kind="weird")])


def test_branches_form_a_tree_from_any_member(db_config):
    root, a, b, c = (_trace(db_config) for _ in range(4))
    save_branch(db_config, Branch(a, root, 1, 5, "delete", None, "Two."))
    save_branch(db_config, Branch(b, root, 0, 0, "replace", "Uno.", "One."))
    save_branch(db_config, Branch(c, a, 0, 0, "replace", "Eins.", "One."))
    assert branch_of(db_config, root) is None
    assert branch_of(db_config, c).parent_trace_id == a
    for member in (root, a, b, c):
        top, rows = branch_tree(db_config, member)
        assert top == root and [r.child_trace_id for r in rows] == [a, b, c]


def test_bad_branches_get_clear_messages(db_config):
    with pytest.raises(ValueError, match="edit must be"):
        Branch(2, 1, 0, 0, "rewrite", None, "x")
    with pytest.raises(ValueError, match="replacement needs text"):
        Branch(2, 1, 0, 0, "replace", "  ", "x")
    tid = _trace(db_config)
    with pytest.raises(StorageError, match="No trace 77"):
        save_branch(db_config, Branch(77, tid, 0, 0, "delete", None, "One."))
