"""Grades a person would give: extraction + equivalence on GSM8K- and MATH-style outputs, the ungraded
rule for stopped / failed traces (storage, display, migration), and grading off the main thread.

docs/METHODS.md §7 describes the rules these cases pin down.
"""
from __future__ import annotations

import random
import threading
from fractions import Fraction
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from analysis import answers as answers_module
from analysis.answers import (
    GradeSettings,
    answer_key,
    answers_equivalent,
    canonical_answer,
    equivalence_classes,
    extract_answer,
    grade,
    grade_trace,
    stored_grade,
    ungraded_reason,
)
from analysis.reasoning import ReasoningFormat
from analysis.records import GRADED_STOP_REASONS, STOP_REASONS, finished_normally
from storage import StorageConfig, apply_migrations, connect
from storage.filters import TraceFilter
from storage.testing import make_record
from storage.traces import count_traces, get_trace, list_traces, save_trace

MARKER = ReasoningFormat(kind="answer_marker")
TAGS = ReasoningFormat(kind="think_tags")

JANET = ("Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * $2 = $18 every day at the farmers' "
         "market.\n#### 18")
CHECK = "9 + 8 = 17, so 17. Let me check: 17 - 8 = 9"

# (answer part, thinking part, reference, format, grade a person gives, what the case is about)
GSM8K = [
    (JANET, "", "18", None, True, "GSM8K #### marker"),
    (JANET, "", "19", None, False, "GSM8K #### marker, wrong"),
    ("She makes $18 every day.", "", "18", None, True, "currency, last number"),
    ("The total is $1,234.50", "", "1234.5", None, True, "thousands separator and cents"),
    ("Answer: 1,000,000", "", "1000000", None, True, "thousands separators"),
    ("The answer is 12 apples.", "", "12", None, True, "unit after the number"),
    ("Answer: 5 sheep", "", "5", None, True, "unit word"),
    ("Answer: 24 cm^2", "", "24", None, True, "unit with an exponent"),
    ("Answer: 8 dollars", "", "$8.00", None, True, "currency on the reference side"),
    ("Answer: €15", "", "15", None, True, "euro sign"),
    ("The train arrives at 5:30 pm.", "", "5:30 PM", None, True, "time of day, not its minutes"),
    ("The train arrives at 5:30 pm.", "", "30", None, False, "the minutes are not the answer"),
    ("The train arrives at 5:30 pm.", "", "17:30", None, True, "12- and 24-hour clock"),
    ("The meeting starts at 9:00 a.m.", "", "9:00 AM", None, True, "a.m. spelled with dots"),
    ("Answer: 5:30 am", "", "5:30 pm", None, False, "morning is not evening"),
    ("Answer: 5:30", "", "5:30 pm", None, True, "no am/pm stated: the clock reading decides"),
    ("Answer: The train arrives at 5:30 pm.", "", "5:30 pm", None, True, "marker followed by a sentence"),
    ("Answer: 4, then he had 5 sheep left", "", "4", None, True, "the number the answer opens with"),
    ("Answer: 4, then he had 5 sheep left", "", "5", None, False, "not the later number"),
    ("4, then he had 5 sheep…", "Let me count.", "4", MARKER, True, "answer-marker format: text after the marker"),
    ("4, then he had 5 sheep…", "", "4", None, True, "an answer that opens with a lone number"),
    ("The answer is 7 <img src=x onerror=alert(2)>", "", "7", None, True, "trailing HTML is not read"),
    ("The answer is 7 <img src=x onerror=alert(2)>", "", "2", None, False, "the 2 inside the tag is no answer"),
    ("I computed it. <img src=x onerror=alert(2)>", "", "2", None, False, "only a tag holds a number"),
    ("See ![chart](http://x.io/9.png) for the total: 4", "", "4", None, True, "image address ignored"),
    (CHECK, "", "17", None, True, "the check after the result is not the answer"),
    ("He has 3 + 4 = 7 marbles.", "", "7", None, True, "the result, not an operand"),
    ("It dropped to -4 degrees", "", "-4", None, True, "a negative number"),
    ("I need 3-4 apples", "", "-4", None, False, "a range is not minus four"),
    ("It takes 2.5 hours.", "", "2.50", None, True, "trailing zero"),
    ("Answer: 50%", "", "50", None, True, "percent against the bare number"),
    ("Answer: 0.5", "", "50%", None, True, "a fraction against a percentage"),
    ("Answer: 75%", "", "0.75", None, True, "a percentage against a fraction"),
    ("Answer: 75%", "", "0.7", None, False, "a different share"),
    ("**Final Answer:** 42", "", "42", None, True, "markdown around the marker"),
    ("Final Answer: 42\nAnswer: 41", "", "42", None, True, "Final Answer outranks Answer"),
    ("The answer is 42 because 6 * 7 = 42 and 42 > 41", "", "42", None, True, "answer phrase, then reasons"),
    ("", "So she has 12 left. \\boxed{12}", "12", None, True, "no answer part: the thinking's box"),
    ("The answer is 3/4 of a cup", "", "0.75", None, True, "fraction against decimal"),
    ("Answer: (B)", "", "B", None, True, "multiple choice letter"),
    ("Answer: (B)", "", "C", None, False, "another letter"),
    ("Answer: Paris", "", "paris", None, True, "text answer, case"),
    ("I don't know.", "", "5", None, False, "no answer at all"),
    ("", "", "5", None, False, "empty output"),
    ("Step 1: 3 apples. Step 2: 4 apples. Total 7", "", "7", None, True, "step numbers are not answers"),
    ("The answer is 18.", "", "18.0", None, True, "decimal reference"),
    ("</think> ignored\n\nFinal Answer: 6", "", "6", TAGS, True, "forced Final Answer after thinking"),
    ("It is 12.", "so the answer is 15\n\\boxed{15}", "15", None, True, "a box in the thinking beats a bare number"),
]

MATH = [
    ("\\boxed{2\\sqrt{2}}", "", "\\sqrt{8}", None, True, "equal roots"),
    ("\\boxed{3\\sqrt{2}}", "", "\\sqrt{18}", None, True, "equal roots again"),
    ("\\boxed{\\sqrt{2}}", "", "2", None, False, "a root is not its square"),
    ("\\boxed{\\sqrt{8}}", "", "2.83", None, False, "a rounded root is not the root"),
    ("\\boxed{\\frac{1}{2}}", "", "0.5", None, True, "fraction against decimal"),
    ("\\boxed{\\dfrac{3}{4}}", "", "\\frac{6}{8}", None, True, "unreduced fraction"),
    ("\\boxed{\\frac{5}{2}}", "", "2.5", None, True, "improper fraction"),
    ("\\boxed{0.333}", "", "\\frac{1}{3}", None, False, "rounding is not equality"),
    ("\\boxed{\\frac{\\pi}{2}}", "", "\\pi/2", None, True, "pi, two spellings"),
    ("\\boxed{\\pi}", "", "3.14", None, False, "pi is not 3.14"),
    ("\\boxed{3.14159265}", "", "\\pi", None, True, "pi to eight decimals"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "", "\\frac{1}{2}\\sqrt{3}", None, True, "root over a number"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "", "\\frac{\\sqrt{2}}{2}", None, False, "a different root"),
    ("\\boxed{x^2+2x+1}", "", "(x+1)^2", None, True, "expanded polynomial"),
    ("\\boxed{12x}", "", "12", None, False, "an expression with a variable is not a number"),
    ("\\boxed{(1,2)}", "", "(1, 2)", None, True, "an interval, spacing"),
    ("\\boxed{\\{1, 2\\}}", "", "\\{2, 1\\}", None, True, "a set in another order"),
    ("The final answer is $\\boxed{-\\frac{1}{3}}$", "", "-1/3", None, True, "negative fraction"),
    ("\\boxed{2^{10}}", "", "1024", None, True, "a power against its value"),
    ("\\boxed{x = 5}", "", "5", None, True, "an assignment"),
    ("\\boxed{\\text{(C)}}", "", "C", None, True, "boxed choice"),
    ("\\boxed{1} and later \\boxed{2}", "", "2", None, True, "the last box"),
    ("\\boxed{1} and later \\boxed{2}", "", "1", None, False, "not the first box"),
    ("\\boxed{90^\\circ}", "", "90", None, True, "degrees"),
    ("\\boxed{10\\%}", "", "0.1", None, True, "LaTeX percent"),
    ("\\boxed{\\$12.50}", "", "12.5", None, True, "LaTeX dollar"),
    ("\\boxed{10\\,000}", "", "10000", None, True, "LaTeX thin-space thousands"),
    ("\\boxed{1{,}000}", "", "1000", None, True, "LaTeX braced comma thousands"),
    ("\\boxed{\\infty}", "", "\\infty", None, True, "infinity"),
    ("Final Answer: The final answer is $\\frac{7}{2}$. I hope it is correct.", "", "3.5", None, True,
     "Minerva-style final answer"),
    ("\\boxed{5", "", "5", None, True, "an unclosed box (cut output): the number inside"),
    ("\\boxed{9 + 8 =}", "", "8", None, False, "an unfinished sum is not its last term"),
]

TABLE = GSM8K + MATH


def test_the_table_is_big_enough_and_balanced():
    assert len(TABLE) >= 60
    assert len(GSM8K) >= 25 and len(MATH) >= 25
    grades = [c[4] for c in TABLE]
    assert grades.count(False) >= 15 and grades.count(True) >= 30


@pytest.mark.parametrize(("answer", "thinking", "reference", "fmt", "expected", "why"), TABLE,
                         ids=[c[5] for c in TABLE])
def test_grade_a_person_would_give(answer, thinking, reference, fmt, expected, why):
    extracted = extract_answer(answer, thinking, fmt=fmt)
    assert grade(extracted, reference) is expected, f"{why}: extracted {extracted!r}"


def test_no_reference_means_no_grade():
    assert grade(extract_answer("#### 18"), None) is None
    assert grade("18", "  ") is None


def test_the_issue_examples_extract_what_a_person_reads():
    assert extract_answer("The train arrives at 5:30 pm.") == "5:30 pm"
    assert extract_answer("4, then he had 5 sheep…", fmt=MARKER) == "4"
    assert extract_answer("The answer is 7 <img src=x onerror=alert(2)>") == "7"
    assert extract_answer("\\boxed{2\\sqrt{2}}") == "2\\sqrt{2}"  # LaTeX keeps its case and form


# ---------------------------------------------------------------------------------------------
# The equivalence API shared with votes


def test_answers_equivalent_and_grade_agree():
    for answer, thinking, reference, fmt, expected, _ in TABLE:
        extracted = extract_answer(answer, thinking, fmt=fmt)
        if extracted is not None:
            assert answers_equivalent(reference, extracted) is expected
    assert answers_equivalent(None, "1") is False and answers_equivalent("1", None) is False
    assert answers_equivalent(17, "17.0") is True  # numbers from datasets


def test_equivalence_classes_group_like_grading():
    answers = ["\\sqrt{8}", "2\\sqrt{2}", "3", "3.0", None, "  ", "x", "0.75", "3/4", "5:30 pm", "17:30"]
    assert equivalence_classes(answers) == [0, 0, 1, 1, None, None, 2, 3, 3, 4, 4]
    assert equivalence_classes([]) == []


def test_equivalence_classes_match_a_brute_force_pairwise_grouping():
    rng = random.Random(7)
    pool = ["1/2", "0.5", "\\frac{1}{2}", "2", "2.0", "\\sqrt{4}", "paris", "Paris.", "b", "(B)", "12%", None]
    for _ in range(20):
        answers = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
        classes = equivalence_classes(answers)
        leaders: list[str] = []
        expected = []
        for a in answers:
            if a is None or canonical_answer(a) is None:
                expected.append(None)
                continue
            for i, lead in enumerate(leaders):
                if answers_equivalent(lead, a):
                    expected.append(i)
                    break
            else:
                expected.append(len(leaders))
                leaders.append(a)
        assert classes == expected, answers


def test_answer_key_is_a_fast_partial_key():
    assert answer_key("0.75") == answer_key("3/4") == ("number", "3/4")
    assert answer_key(canonical_answer("5:30 PM")) == answer_key("17:30") == ("time", "17:30")
    assert answer_key("5:30") == ("text", "5:30")  # an ambiguous clock reading keeps its text
    assert answer_key("\\sqrt{8}") != answer_key("2\\sqrt{2}")  # equal only via equivalence_classes


def test_numeric_fast_path_matches_exact_rational_arithmetic():
    """The fast path against a slow reference: Python's exact rationals, tolerance off."""
    exact = GradeSettings(rel_tol=0, abs_tol=0)
    rng = random.Random(3)
    spellings = []
    for _ in range(60):
        f = Fraction(rng.randint(-40, 40), rng.choice([1, 2, 4, 5, 8, 10]))
        spellings.append(f"{f.numerator}/{f.denominator}" if rng.random() < 0.5 else str(float(f)))
    for a in spellings[:30]:
        for b in spellings[30:]:
            assert answers_equivalent(a, b, exact) is (Fraction(a) == Fraction(b)), (a, b)


def test_math_verify_only_runs_when_needed(monkeypatch):
    calls = []
    real = answers_module._mv_equal

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(answers_module, "_mv_equal", spy)
    answers_module._equivalent_cached.cache_clear()
    assert grade("1234", "1,234") and grade("0.5", "1/2") and not grade("paris", "rome") and not grade("b", "c")
    assert not grade("12x", "12")  # a variable never equals a number
    assert calls == []
    assert grade("2\\sqrt{2}", "\\sqrt{8}")
    assert calls == [("\\sqrt{8}", "2\\sqrt{2}")]


@pytest.mark.parametrize("expression", [
    "2^{2^{2^{2}}}",  # a tower of powers
    "9^{99999}",  # a huge exponent
    "1000!",  # a huge factorial
    "\\sqrt{" * 12 + "2" + "}" * 12,  # deep nesting
    "1+" * 100 + "1",  # too long
    "1" * 20 + "x",  # a long digit run
])
def test_expensive_expressions_are_not_handed_to_sympy(monkeypatch, expression):
    monkeypatch.setattr(answers_module, "_mv_equal", lambda a, b: pytest.fail("math-verify was asked"))
    answers_module._equivalent_cached.cache_clear()
    assert answers_equivalent(expression, "65536x") is False


def test_grade_settings_validate():
    with pytest.raises(ValueError):
        GradeSettings(max_expression_chars=0)
    with pytest.raises(TypeError):
        GradeSettings(math_verify="yes")
    with pytest.raises(ValueError):
        GradeSettings(rel_tol=True)
    assert grade("2\\sqrt{2}", "\\sqrt{8}", GradeSettings(math_verify=False)) is False  # strings only


# ---------------------------------------------------------------------------------------------
# Off the main thread (Streamlit scripts, decode workers)


def test_grading_inside_a_thread_works_and_does_not_raise():
    # fresh expressions, so the cache cannot answer and math-verify really parses in the thread
    pairs = [(f"\\frac{{\\sqrt{{{n * n * 3}}}}}{{{n}}}", "\\sqrt{3}") for n in (7, 11, 13)]
    results, errors = [], []

    def work():
        try:
            results.extend(grade(a, ref) for a, ref in pairs)
            results.append(grade("\\sqrt{50}", "5\\sqrt{3}"))
        except BaseException as exc:  # noqa: BLE001 (the test reports whatever escaped)
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []
    assert results == [True, True, True, False]


def test_math_verify_defaults_would_fail_in_a_thread():
    """Why the timeouts are turned off: with them, math-verify refuses to run off the main thread."""
    import math_verify

    errors = []

    def work():
        try:
            math_verify.parse("$\\sqrt{8}$")  # default parsing_timeout uses SIGALRM
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors and "thread" in str(errors[0])


# ---------------------------------------------------------------------------------------------
# Stopped, failed and partial traces are ungraded


def test_only_traces_that_finished_normally_are_graded():
    assert set(GRADED_STOP_REASONS) == {"eos", "max_tokens", "imported"}
    assert [r for r in STOP_REASONS if not finished_normally(r)] == ["stopped", "error"]
    for reason in ("stopped", "error"):
        assert grade_trace(reason, "8", "8") is None
        assert grade_trace(reason, "7", "8") is None
        assert ungraded_reason(reason, "8") == f"not finished ({reason})"
    assert grade_trace("eos", "8", "8") is True and grade_trace("max_tokens", None, "8") is False
    assert grade_trace("imported", "8", None) is None
    # a stream that broke off (a remote backend marks it partial) is not finished either
    assert grade_trace("eos", "8", "8", meta={"partial": True}) is None
    assert ungraded_reason("max_tokens", "8", {"partial": True}) == "not finished (partial)"
    assert stored_grade(make_record(stop_reason="eos", correct=True, meta={"partial": True})) is None
    assert ungraded_reason("eos", None) == "no reference answer" and ungraded_reason("eos", "8") is None


def test_stored_grade_rule():
    assert stored_grade(make_record(stop_reason="stopped", correct=False)) is None
    assert stored_grade(make_record(stop_reason="error", correct=True)) is None
    # an import with a reference but no verdict is graded like a generated trace
    assert stored_grade(make_record(stop_reason="imported", correct=None, extracted_answer="2\\sqrt{2}",
                                    reference_answer="\\sqrt{8}")) is True
    assert stored_grade(make_record(stop_reason="imported", correct=None, extracted_answer=None,
                                    reference_answer="5")) is False
    assert stored_grade(make_record(stop_reason="eos", correct=True)) is True  # a file's own verdict stays


@pytest.fixture
def stored(db_config):
    specs = [("eos", "5", True), ("eos", "6", False), ("stopped", "8", False), ("error", "8", True),
             ("max_tokens", "5", True), ("imported", "5", None)]
    ids = [save_trace(db_config, make_record(stop_reason=s, extracted_answer=a, correct=c, seed=i))
           for i, (s, a, c) in enumerate(specs)]
    return db_config, ids


def test_storage_keeps_unfinished_traces_ungraded(stored):
    cfg, ids = stored
    grades = [get_trace(cfg, i).record.correct for i in ids]
    assert grades == [True, False, None, None, True, True]  # the import graded on save: "5" == "5"


def test_filters_count_ungraded_apart_from_incorrect(stored):
    cfg, ids = stored
    assert count_traces(cfg, TraceFilter(correct="incorrect")) == 1
    assert count_traces(cfg, TraceFilter(correct="correct")) == 3
    assert count_traces(cfg, TraceFilter(correct="unknown")) == 2
    not_finished = list_traces(cfg, TraceFilter(correct="not_finished"))
    assert sorted(not_finished["trace_id"]) == [ids[2], ids[3]]
    assert set(not_finished["stop_reason"]) == {"stopped", "error"}


def test_display_shows_a_dash_for_ungraded(stored):
    from ui.results import GRADE_LABELS, grade_labels

    cfg, _ = stored
    frame = list_traces(cfg)
    labels = grade_labels(frame["correct"]).tolist()
    assert sorted(labels) == ["correct", "correct", "correct", "incorrect", "—", "—"]
    assert GRADE_LABELS[None] == "—"
    assert grade_labels(pd.Series([True, None, False], dtype="boolean")).tolist() == ["correct", "—", "incorrect"]


def test_trace_page_shows_a_stopped_trace_as_ungraded(stored, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    cfg, ids = stored
    monkeypatch.setenv("THINKSCOPE_DB", str(cfg.db_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "pages" / "trace.py"), default_timeout=60)
    at.query_params["id"] = str(ids[2])
    at.run()
    assert not at.exception, at.exception
    grade_metric = next(m for m in at.metric if m.label == "Grade")
    assert grade_metric.value == "—"
    assert "not finished (stopped)" in str(grade_metric.proto.delta)
    st.cache_resource.clear()


def test_migration_ungrades_traces_stored_graded_by_older_versions(tmp_path):
    cfg = StorageConfig(tmp_path / "old.duckdb", seed_path=None)
    ids = [save_trace(cfg, make_record(stop_reason=s, seed=i)) for i, s in enumerate(["eos", "stopped", "error"])]
    con = duckdb.connect(str(cfg.db_path))
    try:
        # what an older version stored: stopped and failed traces graded
        con.execute("UPDATE traces SET correct = (trace_id % 2 = 0)")
        con.execute("DELETE FROM schema_migrations WHERE name = '006_ungrade_unfinished.sql'")
        before = dict(con.execute("SELECT trace_id, correct FROM traces").fetchall())
        assert before[ids[1]] is not None and before[ids[2]] is not None
        assert apply_migrations(con) == ["006_ungrade_unfinished.sql"]
        after = dict(con.execute("SELECT trace_id, correct FROM traces").fetchall())
    finally:
        con.close()
    assert after == {ids[0]: before[ids[0]], ids[1]: None, ids[2]: None}
    with connect(cfg, read_only=True) as c:  # and the app still opens it
        assert c.execute("SELECT count(*) FROM traces WHERE correct IS NULL").fetchall()[0][0] == 2


def test_a_stopped_generation_on_the_real_model_is_stored_ungraded(embedded, db_config):
    from generation.decoding import SamplingConfig
    from generation.streaming import GenerationRequest, LiveGeneration

    request = GenerationRequest("What is 7 + 5? Think step by step.", SamplingConfig(max_thinking_tokens=200, seed=1),
                                MARKER, reference_answer="12")
    with LiveGeneration(embedded, request, on_finish=lambda r: save_trace(db_config, r)) as live:
        for seen, _ in enumerate(live.events(), start=1):
            if seen == 4:
                live.stop()
    finished = live.finished
    assert finished.record.stop_reason == "stopped" and finished.record.correct is None
    stored_trace = get_trace(db_config, finished.stored).record
    assert stored_trace.correct is None and stored_trace.reference_answer == "12"
    assert count_traces(db_config, TraceFilter(correct="incorrect")) == 0
    assert count_traces(db_config, TraceFilter(correct="not_finished")) == 1
