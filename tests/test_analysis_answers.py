"""Answer extraction, canonical forms, grading and intermediate answers (analysis/answers.py)."""
from __future__ import annotations

import pytest

from analysis.answers import (
    AnswerMention,
    ExtractionSettings,
    GradeSettings,
    MentionSettings,
    answer_key,
    canonical_answer,
    extract_answer,
    find_boxed,
    grade,
    intermediate_answers,
    numeric_value,
)

CANONICAL_CASES = [
    ("1,234", "1234"),
    ("1,234,567", "1234567"),
    ("-5", "-5"),
    ("\u22125", "-5"),  # unicode minus
    ("+7", "7"),
    ("0.50", "0.5"),
    ("12.0", "12"),
    ("-0.0", "0"),
    (".5", "0.5"),
    ("007", "7"),
    ("3/4", "3/4"),
    ("6/8", "3/4"),
    ("4/2", "2"),
    ("\\frac{3}{4}", "3/4"),
    ("\\dfrac{1}{2}", "1/2"),
    ("\\frac34", "3/4"),
    ("-\\frac{3}{4}", "-3/4"),
    ("\\frac{-3}{4}", "-3/4"),
    ("$12", "12"),
    ("\\$12", "12"),
    ("$1,000.50", "1000.5"),
    ("12 apples", "12"),
    ("12%", "12%"),  # the sign stays: "12%" also equals "0.12" (test_grading_table.py)
    ("12\\%", "12%"),
    ("12 percent", "12%"),
    ("90^\\circ", "90"),
    ("1{,}000", "1000"),
    ("**42**", "42"),
    ("$\\boxed{17}$", "17"),
    ("x = 5", "5"),
    ("2+3=5", "5"),
    ("1/0", "1/0"),  # not a number: kept as text
    ("3-4 apples", "3-4 apples"),  # a range, not minus four
    ("12 apples and 3 pears", "12 apples and 3 pears"),
    ("2 pi", "2 pi"),  # a factor, not a unit
    ("1e5", "1e5"),
    ("Paris.", "paris"),
    ("  The   Eiffel\nTower!  ", "the eiffel tower"),
    ("\\text{Paris}", "paris"),
    ("(B)", "b"),
    ("B)", "b"),
    ("", None),
    ("  ...  ", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), CANONICAL_CASES)
def test_canonical_answer(text, expected):
    assert canonical_answer(text) == expected


@pytest.mark.parametrize(("text", "expected"), CANONICAL_CASES)
def test_canonical_answer_is_idempotent(text, expected):
    assert canonical_answer(canonical_answer(text)) == expected


CHECK_TEXT = "9 + 8 = 17, so 17. Let me check: 17 - 8 = 9"

# (answer_text, thinking_text, expected, why)
EXTRACT_CASES = [
    ("Answer: 1,234", "", "1234", "marker, thousands comma"),
    ("Final Answer: \\boxed{\\frac{3}{4}}", "", "3/4", "boxed with nested braces"),
    ("#### -12", "", "-12", "GSM8K marker, negative"),
    ("The total is $1,000.50", "", "1000.5", "last number with currency and decimals"),
    ("The answer is 42.", "", "42", "answer phrase, trailing period"),
    ("The answer is 42 because 6 * 7 = 42 and 42 > 41", "", "42", "phrase beats the last number"),
    (CHECK_TEXT, "", "17", "no marker: the last number before the check, not the check's 9"),
    (CHECK_TEXT + "\nAnswer: 17", "", "17", "the marker wins over the last number"),
    ("Answer: 17. Check: 17 - 8 = 9", "", "17", "marker value cut at the end of its sentence"),
    ("I need 3-4 apples", "", "4", "hyphen is not a minus sign"),
    ("it dropped to -4 degrees", "", "-4", "a real negative number"),
    ("Compute 17 - 8 to get the rest", "", "8", "spaced minus is an operator"),
    ("I cannot solve this problem.", "", None, "no answer at all"),
    ("", "", None, "empty"),
    ("\\boxed{1} then \\boxed{2}", "", "2", "last boxed"),
    ("\\boxed{\\text{(C)}}", "", "c", "boxed letter choice"),
    ("\\boxed{5", "", "5", "unclosed boxed (cut trace) is skipped, fallback number"),
    ("Answer: 5\nFinal Answer: 6\nAnswer: 7", "", "6", "Final Answer: outranks Answer:"),
    ("Answer: 5 \\boxed{8}", "", "8", "boxed outranks markers"),
    ("**Final Answer**: 42", "", "42", "markdown around the marker"),
    ("**Final Answer:**\n\n  3/4\n", "", "3/4", "marker alone on its line: next non-empty line"),
    ("answer: PARIS", "", "paris", "case-insensitive marker, text answer"),
    ("#### Step 1\nwe get 5", "", "5", "markdown heading is not the #### marker"),
    ("", "Hmm, 9 + 8 = 17. \\boxed{17}", "17", "truncated answer: thinking's boxed"),
    ("It is 12.", "so the answer is 15\n\\boxed{15}", "15", "answer part's number loses to thinking's boxed"),
    ("Done, 3 apples left.", "lots of 5 and 6", "3", "answer part's last number before the thinking's"),
    ("", "we have 5 and then 6", "6", "thinking's last number as the last resort"),
]


@pytest.mark.parametrize(("answer", "thinking", "expected", "why"), EXTRACT_CASES, ids=[c[3] for c in EXTRACT_CASES])
def test_extract_answer(answer, thinking, expected, why):
    assert extract_answer(answer, thinking) == expected, why


def test_extract_answer_settings_change_the_order():
    strict = ExtractionSettings(last_number_fallback=False)
    assert extract_answer(CHECK_TEXT, settings=strict) is None
    assert extract_answer("The answer is 42.", settings=ExtractionSettings(answer_phrase=False, last_number_fallback=False)) is None
    assert extract_answer("Result: 9", settings=ExtractionSettings(markers=("result:",))) == "9"


def test_extraction_settings_validate():
    with pytest.raises(ValueError):
        ExtractionSettings(markers=("answer:", " "))
    with pytest.raises(TypeError):
        ExtractionSettings(markers=["answer:"])
    with pytest.raises(ValueError):
        GradeSettings(rel_tol=-1)
    with pytest.raises(ValueError):
        GradeSettings(abs_tol=float("nan"))
    with pytest.raises(TypeError):
        MentionSettings(equals=1)
    with pytest.raises(Exception):
        ExtractionSettings().answer_phrase = False  # frozen


GRADE_CASES = [
    ("17", "17", True),
    ("17", "18", False),
    ("3/4", "0.75", True),
    ("0.75", "\\frac{3}{4}", True),
    ("1/3", "0.333", False),  # default tolerance is tight: rounding is not equality
    ("1234", "1,234", True),
    ("12", "$12.00", True),
    ("-5", "5", False),
    ("paris", "Paris.", True),
    ("b", "(B)", True),
    (None, "17", False),
    ("17", None, None),
    ("17", "", None),
    ("17", "   ", None),
    (None, None, None),
    ("17", "seventeen", False),
]


@pytest.mark.parametrize(("extracted", "reference", "expected"), GRADE_CASES)
def test_grade(extracted, reference, expected):
    assert grade(extracted, reference) is expected


def test_numeric_references_are_accepted():
    assert grade("17", 17) is True
    assert grade("0.5", 0.5) is True
    assert canonical_answer(1234) == "1234"


def test_huge_numbers_do_not_crash():
    big = "9" * 5000  # past Python's int/str conversion cap
    assert canonical_answer(big) == big  # kept as text
    assert grade(big, big) is True
    assert answer_key(big) == ("text", big)
    assert intermediate_answers("= " + big)[0].value == big
    assert grade("1" + "0" * 150, "1e150") is False  # no float overflow, just unequal spellings


def test_grade_tolerance_is_a_setting():
    loose = GradeSettings(rel_tol=1e-2)
    assert grade("0.333", "1/3", loose) is True
    assert grade("0.32", "1/3", loose) is False
    assert grade("0.0000000001", "0", GradeSettings(abs_tol=1e-9)) is True


def test_numeric_value_and_answer_key():
    assert numeric_value("3/4") == numeric_value("0.75")
    assert numeric_value("-12") == -12
    assert numeric_value("paris") is None
    assert numeric_value(None) is None
    assert answer_key("0.75") == answer_key("3/4")
    assert answer_key("2") == answer_key("2.0") != answer_key("-2")
    assert answer_key("paris") == ("text", "paris")
    assert answer_key("0.75") == ("number", "3/4")
    assert answer_key(None) is None
    # a text answer must never collide with a number's key
    assert answer_key("number") != answer_key("2") and answer_key("#2") != answer_key("2")


def test_find_boxed_nested_and_unclosed():
    assert find_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}} c \\boxed{oops") == ["\\frac{1}{2}", "x^{2}"]
    assert find_boxed("\\boxed 5 and \\fbox{6}") == ["5", "6"]
    assert find_boxed("nothing") == []


def _spans(text: str) -> list[tuple[str, str, str]]:
    return [(m.value, text[m.char_start: m.char_end], m.kind) for m in intermediate_answers(text)]


def test_intermediate_answers_in_order_with_spans():
    text = "9 + 8 = 17, so the answer is 17. Let me check: 17 - 8 = 9. Answer: 17"
    assert _spans(text) == [
        ("17", "17", "equals"),
        ("17", "17", "marker"),  # "answer is 17" is also "is 17": listed once, as a marker
        ("9", "9", "equals"),
        ("17", "17", "marker"),
    ]
    found = intermediate_answers(text)
    assert all(isinstance(m, AnswerMention) for m in found)
    assert [m.char_start for m in found] == sorted(m.char_start for m in found)
    assert found[0].char_start == text.index("17")


def test_intermediate_answers_skip_subexpressions():
    # "= 3 * 4" and "= 2x" continue an expression; only the results count
    assert _spans("x = 3 * 4 = 12, y = 2x + 1, z >= 5, so it is -5.") == [
        ("12", "12", "equals"),
        ("-5", "-5", "is"),
    ]


def test_intermediate_answers_boxed_covers_its_inside():
    text = "so \\boxed{x = 17} and \\boxed{\\frac{3}{4}}"
    assert _spans(text) == [("17", "\\boxed{x = 17}", "boxed"), ("3/4", "\\boxed{\\frac{3}{4}}", "boxed")]


def test_intermediate_answers_markers_and_text_values():
    text = "#### 72\nAnswer: Paris. The total is $1,000.50 and it equals 3/4."
    assert _spans(text) == [
        ("72", "72", "marker"),
        ("paris", "Paris", "marker"),
        ("1000.5", "$1,000.50", "is"),
        ("3/4", "3/4", "equals"),
    ]


def test_intermediate_answers_settings_and_empty():
    text = "so 9 + 8 = 17 and it is 17. \\boxed{17}"
    only_boxed = MentionSettings(equals=False, is_phrase=False, markers=False)
    assert [m.kind for m in intermediate_answers(text, only_boxed)] == ["boxed"]
    assert intermediate_answers("") == []
    assert intermediate_answers("no numbers here") == []
    # unicode minus keeps offsets aligned with the original text
    t = "x = \u22125"
    (m,) = intermediate_answers(t)
    assert (m.value, m.char_start, m.char_end) == ("-5", 4, 6)
