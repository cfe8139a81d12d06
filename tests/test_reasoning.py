"""The thinking/answer split: one rule for finished text, token phases and the streaming tracker."""
import numpy as np
import pytest

from analysis.records import ANSWER, THINKING
from analysis.reasoning import PhaseTracker, ReasoningFormat, split_reasoning, token_phases

MARKER = ReasoningFormat(kind="answer_marker")
TAGS = ReasoningFormat(kind="think_tags")
TAGS_PREOPENED = ReasoningFormat(kind="think_tags", starts_in_thinking=True)

CASES = [
    # (format, text, thinking, answer)
    (MARKER, "7 + 5 is 12.\nAnswer: 12", "7 + 5 is 12.", "12"),
    (MARKER, "step one\n\nstep two\nanswer: 4", "step one\n\nstep two", "4"),  # case-insensitive marker
    (MARKER, "no marker at all, 12", "no marker at all, 12", ""),
    (MARKER, "Hmm.\nFinal Answer: 9", "Hmm.", "9"),
    (TAGS, "<think>\nadd them</think>\n\n12", "add them", "12"),
    (TAGS, "  <think>loop loop loop", "loop loop loop", ""),  # never closed: all thinking
    (TAGS, "starts inside</think>The answer is 3", "starts inside", "The answer is 3"),  # no opening tag
    (TAGS, "plain answer without tags", "", "plain answer without tags"),
    (TAGS_PREOPENED, "still thinking, budget ran out", "still thinking, budget ran out", ""),
    (TAGS, "<think>a</think>b</think>c", "a", "b</think>c"),  # the first close ends thinking
]


@pytest.mark.parametrize("fmt,text,thinking,answer", CASES)
def test_split_reasoning(fmt, text, thinking, answer):
    assert split_reasoning(text, fmt) == (thinking, answer)


@pytest.mark.parametrize("fmt,text,thinking,answer", CASES)
def test_token_phases_agree_with_split(fmt, text, thinking, answer):
    # Cut the text into uneven pieces so delimiters straddle token boundaries.
    cuts = sorted({0, len(text), *range(0, len(text), 3), *range(1, len(text), 7)})
    pieces = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    phases = token_phases(pieces, fmt)
    assert len(phases) == len(pieces)
    answer_text = "".join(p for p, ph in zip(pieces, phases) if ph == ANSWER)
    thinking_text = "".join(p for p, ph in zip(pieces, phases) if ph == THINKING)
    # A piece straddling the delimiter counts as thinking, so answer pieces are a suffix of the answer.
    assert answer.endswith(answer_text.strip())
    assert len(answer) - len(answer_text.strip()) <= 7
    assert thinking in thinking_text
    # Phases never go back from answer to thinking.
    assert np.all(np.diff(phases.astype(int)) >= 0)


@pytest.mark.parametrize("fmt,text,thinking,answer", [c for c in CASES if c[0] is not TAGS or "<think>" in c[1]])
def test_streaming_tracker_matches_token_phases(fmt, text, thinking, answer):
    pieces = [text[i : i + 2] for i in range(0, len(text), 2)]
    tracker = PhaseTracker(fmt)
    streamed = np.array([tracker.feed(p) for p in pieces], dtype=np.int8)
    assert streamed.tolist() == token_phases(pieces, fmt).tolist()


def test_forced_end_text_ends_thinking():
    for fmt in (MARKER, TAGS, TAGS_PREOPENED):
        thinking, answer = split_reasoning("thinking long" + fmt.forced_end_text + " 12", fmt)
        assert thinking.startswith("thinking long")
        assert answer.endswith("12") and "\n" not in answer.strip()


def test_invalid_formats_are_rejected():
    with pytest.raises(ValueError):
        ReasoningFormat(kind="answer_marker", answer_marker="  ")
    with pytest.raises(ValueError):
        ReasoningFormat(kind="xml")
