"""Where thinking ends and the answer begins, for both reasoning formats.

Two formats cover the models we meet:
- think tags: `<think> ... </think> answer` (R1 / Qwen3 style). Some chat templates pre-open `<think>`
  (R1 distills), so the output starts inside thinking with no opening tag. Qwen3's template has an
  `enable_thinking` switch: off, it closes an empty thinking block itself and everything is answer.
  gpt-oss's harmony channels are the same shape with other tags: the analysis channel is thinking,
  the final channel the answer (`HARMONY_OPEN` ... `HARMONY_CLOSE` answer).
- answer marker: a plain instruct model asked to reason step by step and then write `Answer: ...`.

Which one a model speaks is read from its tokenizer's chat template (generation/prompting.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from analysis.records import ANSWER, THINKING

FormatKind = Literal["think_tags", "answer_marker"]
TemplateFamily = Literal["", "qwen3", "r1", "harmony"]
# gpt-oss (harmony): the model opens the analysis channel itself; the final channel follows a new
# assistant header, so that whole header is the delimiter.
HARMONY_OPEN = "<|channel|>analysis<|message|>"
HARMONY_CLOSE = "<|end|><|start|>assistant<|channel|>final<|message|>"


@dataclass(frozen=True)
class ReasoningFormat:
    kind: FormatKind = "answer_marker"
    open_tag: str = "<think>"
    close_tag: str = "</think>"
    answer_marker: str = "Answer:"
    # True when the prompt already opened the thinking block (template pre-opens <think>).
    starts_in_thinking: bool = False
    # Qwen3-style templates: the value passed as `enable_thinking` (False: the template closes an
    # empty thinking block, so all output is answer). None: the template has no such switch.
    enable_thinking: bool | None = None
    # Extra system-turn text (a prompt set's preset, generation/prompt_sets.py); "" for none.
    system_prompt: str = ""
    # How the final answer is read (a preset's answer format, analysis/answers.py extraction_for):
    # "" the default rules, "boxed" only a \boxed{} or a marker counts, "number" a final number.
    answer_format: str = ""
    # The template family it was detected from, for display only ("" when none was recognised).
    template: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("think_tags", "answer_marker"):
            raise ValueError(f"unknown reasoning format {self.kind!r}")
        if self.enable_thinking is not None and not isinstance(self.enable_thinking, bool):
            raise ValueError("enable_thinking must be true, false or unset")
        if self.answer_format not in ("", "boxed", "number"):
            raise ValueError(f"answer_format must be '', 'boxed' or 'number', not {self.answer_format!r}")
        if self.template not in ("", "qwen3", "r1", "harmony"):
            raise ValueError(f"unknown template family {self.template!r}")
        if self.kind == "think_tags" and not (self.open_tag and self.close_tag):
            raise ValueError("think-tag format needs both an opening and a closing tag")
        if self.kind == "answer_marker" and not self.answer_marker.strip():
            raise ValueError("answer-marker format needs a non-empty marker, e.g. 'Answer:'")

    @property
    def delimiter(self) -> str:
        """The text that ends thinking."""
        return self.close_tag if self.kind == "think_tags" else self.answer_marker

    @property
    def thinking_off(self) -> bool:
        """The template was told not to think: the output is all answer."""
        return self.kind == "think_tags" and self.enable_thinking is False

    @property
    def forced_end_text(self) -> str:
        """Appended when the thinking budget runs out (s1 budget forcing, maximum)."""
        if self.kind == "think_tags":
            return f"\n{self.close_tag}\n\nFinal Answer:"
        return f"\nFinal {self.answer_marker}"

    def describe(self) -> str:
        if self.kind == "think_tags":
            if self.template == "harmony" and (self.open_tag, self.close_tag) == (HARMONY_OPEN, HARMONY_CLOSE):
                return "harmony channels: thinking in the analysis channel, answer in the final channel"
            if self.thinking_off:
                return "thinking switched off (enable_thinking=False): all output is answer"
            opened = " (template pre-opens it)" if self.starts_in_thinking else ""
            switch = " (enable_thinking=True)" if self.enable_thinking else ""
            return f"thinking inside {self.open_tag}…{self.close_tag}{opened}{switch}"
        return f"thinking until the marker “{self.answer_marker}”, answer after it"

    def to_dict(self) -> dict:
        out = {
            "kind": self.kind,
            "open_tag": self.open_tag,
            "close_tag": self.close_tag,
            "answer_marker": self.answer_marker,
            "starts_in_thinking": self.starts_in_thinking,
        }
        # Only when set, so traces stored before these fields existed keep the same settings.
        if self.enable_thinking is not None:
            out["enable_thinking"] = self.enable_thinking
        for key in ("system_prompt", "answer_format", "template"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Boundary:
    """Character offsets into the generated text: thinking = text[think_start:think_end], answer = text[answer_start:]."""

    think_start: int
    think_end: int
    answer_start: int


def _find_delimiter(text: str, fmt: ReasoningFormat, start: int = 0) -> tuple[int, int] | None:
    if fmt.kind == "think_tags":
        at = text.find(fmt.close_tag, start)
        return None if at < 0 else (at, at + len(fmt.close_tag))
    # Models vary the marker's case ("answer:", "ANSWER:"), so match it case-insensitively.
    lowered = text.lower()
    at = lowered.find(fmt.answer_marker.lower(), start)
    if at < 0:
        return None
    end = at + len(fmt.answer_marker)
    # "Final Answer:" (what budget forcing appends, and what models like to write) is one marker.
    if lowered[max(start, at - 6) : at] == "final ":
        at -= 6
    return at, end


def _opening_tag_end(text: str, fmt: ReasoningFormat) -> int | None:
    stripped = len(text) - len(text.lstrip())
    if fmt.kind == "think_tags" and text.startswith(fmt.open_tag, stripped):
        return stripped + len(fmt.open_tag)
    return None


def find_boundary(text: str, fmt: ReasoningFormat) -> Boundary | None:
    """The split once the delimiter has appeared, or None while the text is still all thinking/undecided."""
    open_end = _opening_tag_end(text, fmt)
    found = _find_delimiter(text, fmt, open_end or 0)
    if found is None:
        return None
    return Boundary(open_end or 0, found[0], found[1])


def split_reasoning(text: str, fmt: ReasoningFormat) -> tuple[str, str]:
    """(thinking, answer) of a finished generation, both stripped of surrounding whitespace."""
    if fmt.thinking_off:  # as the tracker and token_phases see it: a later tag is answer text
        return "", text.strip()
    boundary = find_boundary(text, fmt)
    if boundary is not None:
        return text[boundary.think_start : boundary.think_end].strip(), text[boundary.answer_start :].strip()
    open_end = _opening_tag_end(text, fmt)
    if open_end is not None:
        return text[open_end:].strip(), ""
    if fmt.kind == "think_tags" and not fmt.starts_in_thinking:
        # A think-tag model that never opened a thinking block just answered.
        return "", text.strip()
    return text.strip(), ""


def token_phases(pieces: list[str], fmt: ReasoningFormat) -> np.ndarray:
    """Phase of each token (int8 [T]): THINKING until the token that completes the delimiter, ANSWER after.

    Consistent with `split_reasoning` on "".join(pieces).
    """
    text = "".join(pieces)
    if fmt.thinking_off:
        return np.full(len(pieces), ANSWER, dtype=np.int8)
    starts = np.cumsum([0] + [len(p) for p in pieces[:-1]]) if pieces else np.zeros(0, dtype=np.int64)
    boundary = find_boundary(text, fmt)
    if boundary is not None:
        return np.where(starts < boundary.answer_start, THINKING, ANSWER).astype(np.int8)
    thinking, _ = split_reasoning(text, fmt)
    whole = THINKING if thinking or not text.strip() else ANSWER
    return np.full(len(pieces), whole, dtype=np.int8)


class PhaseTracker:
    """Streaming counterpart of `token_phases`: feed token texts in order, get each token's phase."""

    def __init__(self, fmt: ReasoningFormat):
        self._fmt = fmt
        self._text = ""
        self._in_answer = fmt.thinking_off  # the template already closed thinking

    @property
    def in_answer(self) -> bool:
        return self._in_answer

    def feed(self, piece: str) -> int:
        if self._in_answer:
            return ANSWER
        # Only the tail can newly contain the delimiter, so search just there.
        search_from = max(0, len(self._text) - len(self._fmt.delimiter))
        self._text += piece
        open_end = _opening_tag_end(self._text, self._fmt) or 0
        if _find_delimiter(self._text, self._fmt, max(search_from, open_end)) is not None:
            self._in_answer = True
        return THINKING


# Raw model output written by other tools: `<think>` (R1, Qwen3) or `<thinking>` (Claude-style
# prompts). `<thinking>` comes first because "<thinking>" also starts with "<think>".
THINK_TAG_VARIANTS: tuple[tuple[str, str], ...] = (("<thinking>", "</thinking>"), ("<think>", "</think>"))


def tagged_format(text: str) -> ReasoningFormat:
    """The think-tag format that fits a piece of raw output.

    An opening tag at the start picks its variant; otherwise the first closing tag found means
    the output started inside thinking (the template pre-opened the tag). Text with no tag at all
    is all answer.
    """
    body = text.lstrip()
    for open_tag, close_tag in THINK_TAG_VARIANTS:
        if body.startswith(open_tag):
            return ReasoningFormat("think_tags", open_tag, close_tag)
    found = [(text.find(close), open_tag, close) for open_tag, close in THINK_TAG_VARIANTS if close in text]
    if found:
        _, open_tag, close_tag = min(found)
        return ReasoningFormat("think_tags", open_tag, close_tag, starts_in_thinking=True)
    return ReasoningFormat("think_tags")


def split_tagged_text(text: str) -> tuple[str, str, ReasoningFormat]:
    """(thinking, answer, the format found) of raw output with `<think>` or `<thinking>` tags."""
    fmt = tagged_format(text)
    thinking, answer = split_reasoning(text, fmt)
    return thinking, answer, fmt
