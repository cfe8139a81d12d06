"""Step alignment: every step appears once and in order, equal rows really are equal, word diffs
reassemble the texts."""
import random

import pytest

from analysis.step_alignment import align_steps, normalise_step, word_diff


def _check_cover(rows, left, right):
    assert [r.left for r in rows if r.left is not None] == list(range(len(left)))
    assert [r.right for r in rows if r.right is not None] == list(range(len(right)))
    for r in rows:
        if r.kind == "equal":
            assert normalise_step(left[r.left]) == normalise_step(right[r.right])
        elif r.kind == "changed":
            assert r.left is not None and r.right is not None
        elif r.kind == "left_only":
            assert r.right is None
        else:
            assert r.kind == "right_only" and r.left is None


def test_worked_example():
    left = ["We add 2 and 6.", "That gives 8.", "Wait, let me check.", "The answer is 8."]
    right = ["we add 2 and 6", "That gives 9.", "The answer is 8!"]
    rows = align_steps(left, right)
    assert [(r.kind, r.left, r.right) for r in rows] == [
        ("equal", 0, 0), ("changed", 1, 1), ("left_only", 2, None), ("equal", 3, 2)]
    _check_cover(rows, left, right)


@pytest.mark.parametrize("seed", range(100))
def test_random_step_lists_are_covered_in_order(seed):
    rng = random.Random(seed)
    pool = ["a b.", "c d.", "e f.", "A B", "g h!", "i j?"]
    left = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
    right = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
    _check_cover(align_steps(left, right), left, right)


def test_identical_and_disjoint():
    steps = ["One.", "Two.", "One."]
    assert all(r.kind == "equal" for r in align_steps(steps, steps))
    rows = align_steps(["x."], ["y.", "z."])
    assert [(r.kind, r.left, r.right) for r in rows] == [("changed", 0, 0), ("right_only", None, 1)]


def test_word_diff_marks_only_the_changed_words_and_reassembles():
    a, b = word_diff("So 2 + 6 = 8 here", "So 2 + 6 = 9 here")
    assert "".join(p for p, _ in a) == "So 2 + 6 = 8 here"
    assert "".join(p for p, _ in b) == "So 2 + 6 = 9 here"
    assert [p for p, d in a if d] == ["8"] and [p for p, d in b if d] == ["9"]
    assert word_diff("", "") == ([], [])
