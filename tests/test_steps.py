"""Steps: sentences and paragraphs of a thinking text, with offsets into the original text."""
import pytest

from analysis.steps import split_steps, step_at

TEXT = 'Let me think. 3.5 is big! Is it?\nSo we add.\n\n  Wait, "no." Then x=2.\n'


def test_sentences_keep_decimals_and_quotes_and_point_into_the_text():
    steps = split_steps(TEXT)
    assert [s.text for s in steps] == ["Let me think.", "3.5 is big!", "Is it?", "So we add.", 'Wait, "no."', "Then x=2."]
    assert all(TEXT[s.start:s.end] == s.text for s in steps)
    assert [s.index for s in steps] == list(range(len(steps)))


def test_paragraphs_split_on_blank_lines_only():
    steps = split_steps(TEXT, "paragraph")
    assert [s.text for s in steps] == ["Let me think. 3.5 is big! Is it?\nSo we add.", 'Wait, "no." Then x=2.']
    assert all(TEXT[s.start:s.end] == s.text for s in steps)


def test_empty_text_has_no_steps_and_unknown_units_are_refused():
    assert split_steps("") == [] and split_steps(" \n\n ") == []
    with pytest.raises(ValueError, match="sentence, paragraph"):
        split_steps("a.", "clause")


def test_step_at_finds_the_step_holding_an_offset():
    steps = split_steps(TEXT)
    assert step_at(steps, TEXT.index("big")).text == "3.5 is big!"
    assert step_at(steps, TEXT.index("\n\n")) is None
