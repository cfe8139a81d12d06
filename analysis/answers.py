"""Final-answer extraction, canonical forms, grading and intermediate answers in a trace.

Everything here is a pure function of strings. Model output is untrusted text, so every regex is
linear-time (no nested quantifiers over the same characters) and nothing is evaluated.

Canonical form (what votes and grades compare):
- numbers: no thousands commas, no currency, no unit, no trailing zeros, no "+" ("1234", "-5",
  "0.5", "12"); fractions reduced and kept as fractions ("6/8" -> "3/4", "4/2" -> "2");
  percentages keep the number ("12%" -> "12").
- anything else: lowercased, whitespace collapsed, trailing punctuation stripped; a lone
  multiple-choice letter loses its brackets ("(B)" -> "b").

Decimals and fractions keep their own spelling ("0.75" stays "0.75"); `numeric_value` and `grade`
compare them by value, and `answer_key` gives the value-based grouping key the votes use.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

__all__ = [
    "AnswerMention",
    "ExtractionSettings",
    "GradeSettings",
    "MentionSettings",
    "answer_key",
    "canonical_answer",
    "extract_answer",
    "find_boxed",
    "grade",
    "intermediate_answers",
    "numeric_value",
]


@dataclass(frozen=True)
class ExtractionSettings:
    """How `extract_answer` looks for the final answer.

    markers: searched case-insensitively, last occurrence wins, the value is the rest of that line
    (or the next non-empty line when the marker ends its line); earlier markers outrank later
    ones. A marker ending in ":" tolerates markdown before the colon ("**Final Answer**:").
    "####" only counts when a number follows (otherwise it is a markdown heading).
    answer_phrase: also accept "the answer is X" after the explicit markers, before falling back to
    the last number. Off gives exactly boxed -> markers -> last number.
    last_number_fallback: off means "no marker, no answer" (stricter grading).
    """

    markers: tuple[str, ...] = ("final answer:", "answer:", "####")
    answer_phrase: bool = True
    last_number_fallback: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.markers, tuple):
            raise TypeError("ExtractionSettings.markers must be a tuple of strings")
        for m in self.markers:
            if not isinstance(m, str) or not m.strip():
                raise ValueError(f"ExtractionSettings.markers holds an empty or non-string marker: {m!r}")


@dataclass(frozen=True)
class GradeSettings:
    """Numeric tolerance for `grade`: equal when |a-b| <= max(rel_tol * max(|a|,|b|), abs_tol)."""

    rel_tol: float = 1e-6
    abs_tol: float = 1e-9

    def __post_init__(self) -> None:
        for name in ("rel_tol", "abs_tol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"GradeSettings.{name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class MentionSettings:
    """Which phrasings `intermediate_answers` counts as a candidate answer.

    "= 17" and "is 17" are noisy (they also fire on sub-results), but outcome efficiency only
    looks for the first *correct* mention, so recall matters more than precision there.
    """

    equals: bool = True
    is_phrase: bool = True
    markers: bool = True
    boxed: bool = True

    def __post_init__(self) -> None:
        for name in ("equals", "is_phrase", "markers", "boxed"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"MentionSettings.{name} must be a bool")


DEFAULT_EXTRACTION = ExtractionSettings()
DEFAULT_GRADE = GradeSettings()
DEFAULT_MENTIONS = MentionSettings()


@dataclass(frozen=True)
class AnswerMention:
    """A candidate answer inside a text. [char_start, char_end) spans the answer itself
    (the number, the marker's value, or the whole \\boxed{...}), so char_end marks where the
    model had finished stating it."""

    value: str  # canonical form
    char_start: int
    char_end: int
    kind: str  # "boxed", "marker", "equals" or "is"


# ---------------------------------------------------------------------------------------------
# Number pattern shared by the fallback and the intermediate answers.
# A sign only counts when glued to the digits and not preceded by a word character or a closing
# bracket, so "3-4" and "17 - 8" read as subtraction/ranges, "-5" and "=-5" as negatives.
_LATEX_FRAC = r"\\[dt]?frac\s*\{\s*[-+]?\d+(?:\.\d+)?\s*\}\s*\{\s*[-+]?\d+(?:\.\d+)?\s*\}|\\[dt]?frac\d\d"
_PLAIN_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(
    r"(?<![\w.)\]}])"  # not the tail of a word, a decimal or a bracketed expression
    r"(?:[-+](?=[\\$€£\d]))?"  # a sign glued to what follows
    r"(?:\\?\$|€|£)?"  # currency (plain or LaTeX-escaped dollar)
    rf"(?:{_LATEX_FRAC}|\d+/\d+(?![\d/])|{_PLAIN_NUM})"
    r"(?![\d])"
)
# A number followed by an operator and another operand is a sub-expression, not a result.
_CONTINUES_RE = re.compile(r"\s*(?:[-+*/×·÷^]\s*[\d(\\]|\\(?:cdot|times|div)\b)|[A-Za-z_(]")


_CHAR_MAP = {0x2212: "-", 0x2013: "-", 0x00A0: " ", 0x2009: " ", 0x202F: " "}


def _normalize_chars(text: str) -> str:
    # Same length in, same length out, so spans found on the result index the original.
    return text.translate(_CHAR_MAP)


# ---------------------------------------------------------------------------------------------
# \boxed{...}


@dataclass(frozen=True)
class _Boxed:
    content: str
    start: int  # index of the backslash
    end: int  # one past the closing brace


_BOXED_START_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOXED_BARE_RE = re.compile(r"\\boxed\s+([^\s${}]+)")


def _boxed_spans(text: str) -> list[_Boxed]:
    out: list[_Boxed] = []
    pos = 0
    while True:
        m = _BOXED_START_RE.search(text, pos)
        bare = _BOXED_BARE_RE.search(text, pos)
        if bare is not None and (m is None or bare.start() < m.start()):
            out.append(_Boxed(bare.group(1), bare.start(), bare.end()))
            pos = bare.end()
            continue
        if m is None:
            return out
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                i += 2  # an escaped brace does not open or close
                continue
            depth += c == "{"
            depth -= c == "}"
            i += 1
        if depth:  # unclosed (e.g. a trace cut by max_tokens): not an answer
            return out
        out.append(_Boxed(text[m.end(): i - 1], m.start(), i))
        pos = i


def find_boxed(text: str) -> list[str]:
    """Contents of every \\boxed{...} (nested braces honoured; unclosed ones skipped), in order."""
    return [b.content for b in _boxed_spans(text)]


# ---------------------------------------------------------------------------------------------
# Canonical forms

_LATEX_WRAPPERS_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_DROP_RE = re.compile(r"\\left|\\right|\\!|\\displaystyle|\^\s*\{?\\circ\}?|\\circ|°")
_LATEX_SPACE_RE = re.compile(r"\\[,;: ]|~")
_LATEX_FRAC_RE = re.compile(r"^\\frac\s*\{\s*([-+]?\d+(?:\.\d+)?)\s*\}\s*\{\s*([-+]?\d+(?:\.\d+)?)\s*\}$")
_LATEX_FRAC_SHORT_RE = re.compile(r"^\\frac(\d)(\d)$")
_SLASH_FRAC_RE = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*/\s*([-+]?\d+(?:\.\d+)?)$")
_NUMBER_WITH_UNIT_RE = re.compile(
    r"^(?P<sign>[-+])?\s*(?:€|£|¥|usd\s+|rs\.?\s*)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)"
    r"\s*(?P<unit>%|percent|[a-z][a-z .'/²³^]{0,30})?$",
    re.IGNORECASE,
)
_NOT_UNITS = frozenset(
    "pi sqrt root i j x y z n k e times plus minus over divided and or to mod".split()
)
# Longer digit runs are kept as text: int <-> str conversion of huge numbers is slow and capped
# by Python, and no real answer is that long.
_MAX_NUMBER_CHARS = 200
_CHOICE_RE = re.compile(r"^[(\[]?([a-z])[)\]]?$")
_ASSIGNMENT_RE = re.compile(r"^[a-z]\w{0,2}\s*=\s*(.+)$", re.IGNORECASE)
_TRAILING_PUNCT = " \t\n.,;:!?"
_LEADING_PUNCT = " \t\n,;:!?"  # not ".": ".5" is a number


def _strip_markup(text: str) -> str:
    s = _normalize_chars(text).strip()
    boxed = [b for b in find_boxed(s) if b.strip()]
    if boxed:
        s = boxed[-1]
    s = s.replace("**", "").replace("__", "").replace("`", "")
    if s.startswith("####"):
        s = s[4:]
    s = s.replace("\\(", " ").replace("\\)", " ").replace("\\[", " ").replace("\\]", " ")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "%").replace("{,}", ",").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for _ in range(3):  # wrappers may nest: \text{\textbf{x}}
        s2 = _LATEX_WRAPPERS_RE.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    s = _LATEX_DROP_RE.sub("", s)
    s = _LATEX_SPACE_RE.sub(" ", s)
    return " ".join(s.split())


def _format_decimal(d: Decimal) -> str:
    if d == 0:
        return "0"  # also turns "-0.0" into "0"
    return format(d.normalize(), "f")


def _format_fraction(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _parse_fraction(num: str, den: str, negate: bool) -> str | None:
    try:
        d = Decimal(den)
        if d == 0:
            return None
        f = Fraction(Decimal(num)) / Fraction(d)
    except (InvalidOperation, ValueError):
        return None
    return _format_fraction(-f if negate else f)


def _canonical_number(s: str) -> str | None:
    """The canonical number if `s` is one number (with optional sign, currency, unit), else None."""
    if len(s) > _MAX_NUMBER_CHARS:
        return None
    negate = False
    body = s
    if body[:1] in "+-" and len(body) > 1:
        negate = body[0] == "-"
        body = body[1:].lstrip()
    m = _LATEX_FRAC_RE.match(body) or _LATEX_FRAC_SHORT_RE.match(body) or _SLASH_FRAC_RE.match(body)
    if m:
        return _parse_fraction(m.group(1), m.group(2), negate)
    m = _NUMBER_WITH_UNIT_RE.match(s)
    if not m:
        return None
    unit = m.group("unit")
    # "12 apples and 3 pears" is not one number, and "2 pi" or "3 sqrt 2" is not a unit
    if unit and (re.search(r"\d", unit) or unit.split()[0].lower() in _NOT_UNITS):
        return None
    try:
        d = Decimal(m.group("num").replace(",", ""))
    except InvalidOperation:
        return None
    return _format_decimal(-d if m.group("sign") == "-" else d)


def canonical_answer(text: str | None) -> str | None:
    """The canonical form of one answer string (see the module docstring), or None when empty.

    Idempotent: canonical_answer(canonical_answer(x)) == canonical_answer(x).
    """
    if text is None:
        return None
    # datasets often store numeric references as numbers
    return _canonical_cached(text if isinstance(text, str) else str(text))


@functools.lru_cache(maxsize=8192)  # long traces repeat the same few numbers many times
def _canonical_cached(text: str) -> str | None:
    s = _strip_markup(text).rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT)
    if not s:
        return None
    num = _canonical_number(s)
    if num is not None:
        return num
    if "=" in s:  # "x = 5", "2+3=5": the value is what follows the last "="
        tail = s.rsplit("=", 1)[1].rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT)
        num = _canonical_number(tail) if tail else None
        if num is not None:
            return num
        m = _ASSIGNMENT_RE.match(s)
        if m:
            s = m.group(1)
    s = " ".join(s.lower().split()).rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT)
    m = _CHOICE_RE.match(s)
    if m:
        return m.group(1)
    return s or None


_CANON_NUM_RE = re.compile(r"^-?\d+(?:\.\d+)?(?:/\d+)?$")


def numeric_value(canonical: str | None) -> Fraction | None:
    """Exact value of a canonical numeric answer ("3/4", "-0.5", "12"); None for non-numbers."""
    if canonical is None or len(canonical) > _MAX_NUMBER_CHARS or not _CANON_NUM_RE.match(canonical):
        return None
    if "/" in canonical:
        num, den = canonical.split("/")
        return Fraction(int(num), int(den)) if int(den) else None
    return Fraction(Decimal(canonical))


def answer_key(canonical: str | None) -> tuple[str, str] | None:
    """Grouping key for votes: numbers by exact value (so "0.75" and "3/4" vote together),
    everything else by canonical string. A tuple, so no text can collide with a number."""
    if canonical is None:
        return None
    v = numeric_value(canonical)
    return ("text", canonical) if v is None else ("number", _format_fraction(v))


def grade(
    extracted: str | None, reference: str | None, settings: GradeSettings = DEFAULT_GRADE
) -> bool | None:
    """True/False against the reference; None when there is no reference to grade against."""
    ref = canonical_answer(reference) if reference is not None else None
    if ref is None:
        return None
    got = canonical_answer(extracted) if extracted is not None else None
    if got is None:
        return False
    a, b = numeric_value(got), numeric_value(ref)
    if a is not None and b is not None:
        # exact arithmetic: floats would overflow on huge values and blur tiny ones
        tol = max(Fraction(settings.rel_tol) * max(abs(a), abs(b)), Fraction(settings.abs_tol))
        return abs(a - b) <= tol
    return got == ref


# ---------------------------------------------------------------------------------------------
# Final-answer extraction

_SENTENCE_END_RE = re.compile(r"[.;!?](?:\s|$)")
_NEXT_LINE_RE = re.compile(r"\n\s*(\S[^\n]*)")


def _marker_regex(marker: str) -> re.Pattern[str]:
    m = marker.strip()
    colon = m.endswith(":")
    words = m.rstrip(":").split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    if words and re.match(r"\w", words[0]):
        pattern = r"\b" + pattern
    if colon:
        pattern += r"\s*[*_]*\s*:"  # "**Answer**:" and "Answer :" too
    return re.compile(pattern, re.IGNORECASE)


def _value_after(text: str, pos: int) -> str:
    """The rest of the line from `pos`, or the next non-empty line; cut at the end of a sentence."""
    nl = text.find("\n", pos)
    line = text[pos:] if nl < 0 else text[pos:nl]
    if not line.strip(" \t*_:") and nl >= 0:
        nxt = _NEXT_LINE_RE.search(text, nl)
        if nxt:
            line = nxt.group(1)
    cut = _SENTENCE_END_RE.search(line)
    return line[: cut.start()] if cut else line


_ANSWER_PHRASE_RE = re.compile(r"\banswer\s+(?:is|=|would be|should be)\s*:?", re.IGNORECASE)


def _from_markers(text: str, settings: ExtractionSettings) -> str | None:
    for marker in settings.markers:
        for m in reversed(list(_marker_regex(marker).finditer(text))):
            value = canonical_answer(_value_after(text, m.end()))
            # "####" doubles as a markdown heading; only a number after it is a GSM8K-style answer.
            if value is not None and (marker.strip() != "####" or numeric_value(value) is not None):
                return value
    if settings.answer_phrase:
        for m in reversed(list(_ANSWER_PHRASE_RE.finditer(text))):
            rest = _value_after(text, m.end())
            # "the answer is 42 because ..." -> 42: take a leading number when there is one
            lead = _NUMBER_RE.match(rest.lstrip())
            value = canonical_answer(lead.group(0) if lead else rest)
            if value is not None:
                return value
    return None


def _last_number(text: str) -> str | None:
    for m in reversed(list(_NUMBER_RE.finditer(text))):
        value = canonical_answer(m.group(0))
        if value is not None:
            return value
    return None


def extract_answer(
    answer_text: str, thinking_text: str = "", settings: ExtractionSettings = DEFAULT_EXTRACTION
) -> str | None:
    """The model's final answer in canonical form, or None.

    Order: in the answer part, then in the thinking part: last non-empty \\boxed{}, then the
    markers (last occurrence), then "the answer is X"; then the last number of the answer part,
    then of the thinking part. The answer part wins because the thinking may try answers it
    later rejects. Known limit of the fallback: "so 17. Check: 17 - 8 = 9" with no marker gives 9.
    """
    parts = [_normalize_chars(p) for p in (answer_text or "", thinking_text or "")]
    for part in parts:
        for content in reversed(find_boxed(part)):
            value = canonical_answer(content)
            if value is not None:
                return value
        value = _from_markers(part, settings)
        if value is not None:
            return value
    if settings.last_number_fallback:
        for part in parts:
            value = _last_number(part)
            if value is not None:
                return value
    return None


# ---------------------------------------------------------------------------------------------
# Intermediate answers

_EQUALS_RE = re.compile(r"(?:(?<![<>!=])=(?!=)|≈|\bequals?\b)\s*")  # not <=, >=, !=, ==
_IS_RE = re.compile(r"\bis\s*:?\s*")
_MARKER_MENTION_RE = re.compile(r"(?:\banswer\s*[*_]*\s*(?::|is\b|would be\b)|####)\s*[*_]*\s*", re.IGNORECASE)


def _number_at(text: str, pos: int) -> re.Match[str] | None:
    m = _NUMBER_RE.match(text, pos)
    if m is None or _CONTINUES_RE.match(text, m.end()):
        return None
    return m


_KIND_RANK = {"boxed": 0, "marker": 1, "equals": 2, "is": 3}


def intermediate_answers(text: str, settings: MentionSettings = DEFAULT_MENTIONS) -> list[AnswerMention]:
    """Every candidate answer in `text`, in order of position.

    A span claimed by several phrasings ("the answer is 17" is also "is 17") appears once, with the
    most specific kind; numbers inside a \\boxed{} are covered by the boxed mention.
    """
    text = _normalize_chars(text or "")
    found: dict[tuple[int, int], AnswerMention] = {}

    def add(value: str | None, start: int, end: int, kind: str) -> None:
        if value is None:
            return
        old = found.get((start, end))
        if old is None or _KIND_RANK[kind] < _KIND_RANK[old.kind]:
            found[(start, end)] = AnswerMention(value, start, end, kind)

    boxes = _boxed_spans(text) if settings.boxed else []
    for b in boxes:
        add(canonical_answer(b.content), b.start, b.end, "boxed")
    if settings.markers:
        for m in _MARKER_MENTION_RE.finditer(text):
            num = _number_at(text, m.end())
            if num is not None:
                add(canonical_answer(num.group(0)), num.start(), num.end(), "marker")
            elif not m.group(0).startswith("#") and not text.startswith("\\boxed", m.end()):
                rest = _value_after(text, m.end())
                stripped = rest.strip()
                if stripped and "\n" not in stripped:
                    start = text.find(stripped, m.end())
                    add(canonical_answer(stripped), start, start + len(stripped), "marker")
    for enabled, regex, kind in ((settings.equals, _EQUALS_RE, "equals"), (settings.is_phrase, _IS_RE, "is")):
        if not enabled:
            continue
        for m in regex.finditer(text):
            num = _number_at(text, m.end())
            if num is not None:
                add(canonical_answer(num.group(0)), num.start(), num.end(), kind)
    mentions = [
        a for a in found.values()
        if a.kind == "boxed" or not any(b.start <= a.char_start and a.char_end <= b.end for b in boxes)
    ]
    # two kinds can claim spans starting at the same place; keep the most specific one
    mentions.sort(key=lambda a: (a.char_start, _KIND_RANK[a.kind], a.char_end))
    out: list[AnswerMention] = []
    for a in mentions:
        if out and out[-1].char_start == a.char_start:
            continue
        out.append(a)
    return out
