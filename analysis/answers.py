"""Final-answer extraction, canonical forms, grading by equivalence, and intermediate answers.

Everything here is a pure function of strings (docs/METHODS.md §7). Model output is untrusted text,
so every regex is linear-time (no nested quantifiers over the same characters), markup and HTML are
blanked before anything is read, and nothing is evaluated except by sympy through math-verify, on
short inputs that passed the size bounds below.

Canonical form (what votes and grades compare first):
- numbers: no thousands separators, no currency, no unit, no trailing zeros, no "+" ("1234", "-5",
  "0.5", "12"); fractions reduced and kept as fractions ("6/8" -> "3/4", "4/2" -> "2");
  percentages keep their sign ("12 percent" -> "12%"), which equals both "12" and "0.12".
- times of day: "h:mm" plus " am"/" pm" when given ("5:30 PM" -> "5:30 pm", "17:30" stays).
- LaTeX and other expressions: markup stripped, case kept ("\\boxed{2\\sqrt{2}}" -> "2\\sqrt{2}").
- anything else: lowercased, whitespace collapsed, trailing punctuation stripped; a lone
  multiple-choice letter loses its brackets ("(B)" -> "b").

Equivalence (`answers_equivalent`, used by `grade` and `equivalence_classes`): equal canonical
strings; else numbers by exact value within a tolerance; else times of day by clock reading; else,
for two expressions that look like mathematics, Hugging Face math-verify (symbolic and numeric
comparison through sympy). math-verify runs with its signal-based timeouts off, so it works off the
main thread (Streamlit scripts, decode workers); its work is bounded by input size limits instead.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import TYPE_CHECKING

from analysis.records import GRADED_STOP_REASONS, finished_normally

if TYPE_CHECKING:  # only for annotations: keeps this module importable without a cycle
    from analysis.reasoning import ReasoningFormat
    from analysis.records import TraceRecord

__all__ = [
    "AnswerMention",
    "ExtractionSettings",
    "GradeSettings",
    "MentionSettings",
    "answer_key",
    "answers_equivalent",
    "canonical_answer",
    "equivalence_classes",
    "extract_answer",
    "extraction_for",
    "find_boxed",
    "grade",
    "grade_trace",
    "intermediate_answers",
    "numeric_value",
    "stored_grade",
    "ungraded_reason",
]


@dataclass(frozen=True)
class ExtractionSettings:
    """How `extract_answer` looks for the final answer (docs/METHODS.md §7).

    markers: searched case-insensitively, last occurrence wins, the value is the rest of that line
    (or the next non-empty line when the marker ends its line), cut at the end of its sentence;
    earlier markers outrank later ones. A marker ending in ":" tolerates markdown before the colon
    ("**Final Answer**:"). "####" only counts when a number follows (otherwise it is a heading).
    answer_phrase: also accept "the answer is X" after the explicit markers, before the fallback.
    last_number_fallback: off means "no marker, no answer" (stricter grading).
    """

    markers: tuple[str, ...] = ("final answer:", "final answer is", "answer:", "####")
    answer_phrase: bool = True
    last_number_fallback: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.markers, tuple):
            raise TypeError("ExtractionSettings.markers must be a tuple of strings")
        for m in self.markers:
            if not isinstance(m, str) or not m.strip():
                raise ValueError(f"ExtractionSettings.markers holds an empty or non-string marker: {m!r}")
        for name in ("answer_phrase", "last_number_fallback"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ExtractionSettings.{name} must be a bool")


@dataclass(frozen=True)
class GradeSettings:
    """How `answers_equivalent` compares two answers (docs/METHODS.md §7).

    rel_tol / abs_tol: two numbers are equal when |a-b| <= max(rel_tol * max(|a|,|b|), abs_tol).
    math_verify: compare expressions that are not plain numbers with math-verify.
    max_expression_chars: longer canonical answers are compared as strings only; with the limits
    on exponents in `_bounded`, this is what bounds sympy's work now that its timeout is off.
    """

    rel_tol: float = 1e-6
    abs_tol: float = 1e-9
    math_verify: bool = True
    max_expression_chars: int = 160

    def __post_init__(self) -> None:
        for name in ("rel_tol", "abs_tol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"GradeSettings.{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.math_verify, bool):
            raise TypeError("GradeSettings.math_verify must be a bool")
        m = self.max_expression_chars
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 1000:
            raise ValueError(f"GradeSettings.max_expression_chars must be an integer in [1, 1000], got {m!r}")


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


def extraction_for(answer_format: str, settings: ExtractionSettings = DEFAULT_EXTRACTION) -> ExtractionSettings:
    """The extraction a prompt set's answer format asks for (ReasoningFormat.answer_format,
    generation/prompt_sets.py presets; docs/METHODS.md §7): "boxed" (MATH, AIME) turns the
    last-number fallback off, since a stray number is not a boxed answer; "number" (GSM8K) and ""
    keep `settings` as they are."""
    if answer_format == "boxed" and settings.last_number_fallback:
        return replace(settings, last_number_fallback=False)
    return settings


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
# Cleaning: characters and markup that hide or fake numbers. Same length in, same length out, so
# spans found on the result index the original text.

_CHAR_MAP = {0x2212: "-", 0x2013: "-", 0x00A0: " ", 0x2009: " ", 0x202F: " "}
# Bounded repetitions and excluded delimiters keep these linear: each scan stops at the next "<",
# "]" or ")".
_MARKUP_RE = re.compile(
    r"<[A-Za-z][A-Za-z0-9-]{0,30}(?:[\s/][^<>]{0,2000})?>"  # an HTML tag, attributes included
    r"|</[A-Za-z][A-Za-z0-9-]{0,30}\s*>"  # a closing tag
    r"|<!--[^<>]{0,2000}-->"
    r"|<(?:img|script|svg|iframe|object|embed|video|audio|a|style|link|meta)\b[^<>]{0,2000}$"  # cut tag at the end
    r"|&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z]{2,10});"  # HTML entities
    r"|!\[[^\]\n]{0,500}\]\([^()\n]{0,2000}\)"  # markdown image
    r"|(?<=\])\([^()\s]{1,2000}\)"  # the address of a markdown link (its text stays)
    r"|\b(?:https?|ftp)://[^\s<>()]{1,2000}|\bwww\.[^\s<>()]{1,2000}",  # a bare address
    re.IGNORECASE,
)


def _blank(m: re.Match[str]) -> str:
    return " " * (m.end() - m.start())


def _clean(text: str) -> str:
    """Unicode minus/spaces normalised, HTML, images and addresses blanked; length preserved."""
    return _MARKUP_RE.sub(_blank, text.translate(_CHAR_MAP))


# ---------------------------------------------------------------------------------------------
# Number pattern shared by the fallback and the intermediate answers.
# A sign only counts when glued to the digits and not preceded by a word character or a closing
# bracket, so "3-4" and "17 - 8" read as subtraction/ranges, "-5" and "=-5" as negatives. A time
# of day ("5:30 pm") is one answer, not the number 30.
_TIME = r"(?:[01]?\d|2[0-3]):[0-5]\d(?![\d:])(?:\s?[aApP]\.?\s?[mM]\b\.?)?"
_LATEX_FRAC = r"\\[dt]?frac\s*\{\s*[-+]?\d+(?:\.\d+)?\s*\}\s*\{\s*[-+]?\d+(?:\.\d+)?\s*\}|\\[dt]?frac\d\d"
_PLAIN_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(
    r"(?<![\w.)\]}])"  # not the tail of a word, a decimal or a bracketed expression
    r"(?:[-+](?=[\\$€£\d]))?"  # a sign glued to what follows
    r"(?:\\?\$|€|£)?"  # currency (plain or LaTeX-escaped dollar)
    rf"(?:{_TIME}|{_LATEX_FRAC}|\d+/\d+(?![\d/])|{_PLAIN_NUM})"
    r"(?![\d])"
)
# A number followed by an operator and another operand (or glued to a letter, a bracket or a LaTeX
# command: "2x", "2(", "2\sqrt{2}") is part of an expression, not a result.
_CONTINUES_RE = re.compile(
    r"\s*(?:[-+*/×·÷^]\s*[\w(\\{.$]|\\(?:cdot|times|div)\b)|[A-Za-z_({\\^]"
)


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
_LATEX_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\\,|\{,\}|\\ )(?=\d{3}(?!\d))")  # 10\,000, 10{,}000
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
_TIME_RE = re.compile(r"^(\d{1,2}):([0-5]\d)(?::[0-5]\d)?\s*(?:([ap])\.?\s?m\.?)?$", re.IGNORECASE)
# Longer digit runs are kept as text: int <-> str conversion of huge numbers is slow and capped
# by Python, and no real answer is that long.
_MAX_NUMBER_CHARS = 200
_CHOICE_RE = re.compile(r"^[(\[]?([a-z])[)\]]?$")
_ASSIGNMENT_RE = re.compile(r"^[a-z]\w{0,2}\s*=\s*(.+)$", re.IGNORECASE)
_TRAILING_PUNCT = " \t\n.,;:!?"
_LEADING_PUNCT = " \t\n,;:!?"  # not ".": ".5" is a number


def _strip_markup(text: str) -> str:
    s = _clean(text).strip()
    boxed = [b for b in find_boxed(s) if b.strip()]
    if boxed:
        s = boxed[-1]
    s = s.replace("**", "").replace("__", "").replace("`", "")
    if s.startswith("####"):
        s = s[4:]
    s = s.replace("\\(", " ").replace("\\)", " ").replace("\\[", " ").replace("\\]", " ")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "%").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _LATEX_THOUSANDS_RE.sub("", s).replace("{,}", ",")
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
    # a percentage keeps its sign: "12%" equals both "12" and "0.12" (see answers_equivalent)
    percent = "%" if unit and unit.lower() in ("%", "percent") else ""
    return _format_decimal(-d if m.group("sign") == "-" else d) + percent


def _canonical_time(s: str) -> str | None:
    """"h:mm" (+ " am"/" pm" when stated) for a time of day, else None. "5:30 PM" -> "5:30 pm"."""
    m = _TIME_RE.match(s)
    if not m:
        return None
    hour, minute, meridiem = m.group(1), m.group(2), m.group(3)
    if meridiem:
        h = int(hour)
        return f"{h}:{minute} {meridiem.lower()}m" if 1 <= h <= 12 else None
    return f"{hour}:{minute}" if int(hour) <= 24 else None


def _time_value(canonical: str | None) -> tuple[int, bool] | None:
    """(minutes after midnight, whether that reading is certain) of a canonical time, else None.

    "5:30" could be morning or evening; "5:30 pm", "17:30" and "05:30" (a leading zero is 24-hour
    notation) are certain.
    """
    if canonical is None or ":" not in canonical:
        return None
    m = _TIME_RE.match(canonical)
    if not m:
        return None
    h, minute, meridiem = int(m.group(1)), int(m.group(2)), m.group(3)
    if meridiem:
        return (h % 12 + (12 if meridiem.lower() == "p" else 0)) * 60 + minute, True
    certain = h == 0 or h > 12 or m.group(1).startswith("0")
    return (h % 24) * 60 + minute, certain


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
    value = _canonical_number(s) or _canonical_time(s)
    if value is not None:
        return value
    if "=" in s:  # "x = 5", "2+3=5": the value is what follows the last "="
        tail = s.rsplit("=", 1)[1].rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT)
        value = (_canonical_number(tail) or _canonical_time(tail)) if tail else None
        if value is not None:
            return value
        m = _ASSIGNMENT_RE.match(s)
        if m:
            s = m.group(1)
    if "\\" not in s:  # LaTeX keeps its case: \Delta is not \delta
        s = s.lower()
    s = " ".join(s.split()).rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT)
    m = _CHOICE_RE.match(s)
    if m:
        return m.group(1)
    return s or None


_CANON_NUM_RE = re.compile(r"^-?\d+(?:\.\d+)?(?:/\d+)?%?$")


def numeric_value(canonical: str | None) -> Fraction | None:
    """Exact value of a canonical numeric answer ("3/4", "-0.5", "12", "12%" -> 12); None for
    non-numbers. A percentage gives its number: whether "12%" is 12 or 0.12 is the caller's choice."""
    if canonical is None or len(canonical) > _MAX_NUMBER_CHARS or not _CANON_NUM_RE.match(canonical):
        return None
    canonical = canonical.rstrip("%")
    if "/" in canonical:
        num, den = canonical.split("/")
        return Fraction(int(num), int(den)) if int(den) else None
    return Fraction(Decimal(canonical))


def answer_key(canonical: str | None) -> tuple[str, str] | None:
    """Fast grouping key: numbers by exact value (so "0.75" and "3/4" vote together), certain
    times by their 24-hour reading, everything else by canonical string. A tuple, so no text can
    collide with a number. Equal keys imply `answers_equivalent`; the converse needs
    `equivalence_classes` ("\\sqrt{8}" and "2\\sqrt{2}" have different keys)."""
    if canonical is None:
        return None
    v = numeric_value(canonical)
    if v is not None:
        return ("number", _format_fraction(v))
    t = _time_value(canonical)
    if t is not None and t[1]:
        return ("time", f"{t[0] // 60:02d}:{t[0] % 60:02d}")
    return ("text", canonical)


# ---------------------------------------------------------------------------------------------
# Equivalence and grading (docs/METHODS.md §7)

# Words that may appear in a mathematical answer; any other run of two or more letters outside a
# LaTeX command makes the answer prose ("12 apples and 3 pears"), which math-verify would read as
# a product of single-letter symbols.
_MATH_WORDS = frozenset("sqrt pi sin cos tan cot sec csc log ln exp inf infty oo mod deg e i".split())
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_LETTERS_RE = re.compile(r"[A-Za-z]+")
_MATHY_RE = re.compile(r"[\d\\^_{}()\[\]=+*/√π<>|-]")
# Work bounds for sympy, whose own time limit (a SIGALRM) cannot run off the main thread: no
# towers of powers, no huge exponents or factorials, no long digit runs, shallow nesting.
_HUGE_RE = re.compile(r"\d{16,}|\^\s*\{?\s*[-+]?\d{4,}|\d{3,}\s*!|!\s*!")
_DANGLING_EQUALS_RE = re.compile(r"^\s*=|=\s*$")
_MV_LOCK = threading.Lock()  # sympy and math-verify keep module-level caches; one caller at a time


def _looks_mathematical(canonical: str) -> bool:
    if not _MATHY_RE.search(canonical):
        return False
    return all(w.lower() in _MATH_WORDS for w in _WORD_RE.findall(canonical))


def _bounded(canonical: str, settings: GradeSettings) -> bool:
    if len(canonical) > settings.max_expression_chars or canonical.count("^") > 2 or _HUGE_RE.search(canonical):
        return False
    depth = deepest = 0
    for c in canonical:
        depth += c in "({["
        depth -= c in ")}]"
        deepest = max(deepest, depth)
    return deepest <= 8


class _QuietTimeoutNotice(logging.Filter):
    """math-verify warns once that its timeout is off; here that is intended (bounded above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


@functools.lru_cache(maxsize=1)
def _math_verify():
    import math_verify  # lazy: sympy and the LaTeX parser take most of a second to import

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_QuietTimeoutNotice())
    return math_verify


@functools.lru_cache(maxsize=4096)
def _mv_parse(canonical: str) -> tuple | None:
    """math-verify's parse of one canonical answer (as inline LaTeX), or None when it is not maths."""
    mv = _math_verify()
    text = canonical.replace("π", "\\pi ").replace("√", "\\sqrt ")
    with _MV_LOCK:
        parsed = mv.parse(f"${text}$", parsing_timeout=None)  # None: no signal, so any thread works
    if not parsed or isinstance(parsed[0], str):
        return None
    return tuple(parsed)


@functools.lru_cache(maxsize=16384)
def _mv_equal(gold: str, target: str) -> bool:
    g, t = _mv_parse(gold), _mv_parse(target)
    if g is None or t is None:
        return False
    mv = _math_verify()
    with _MV_LOCK:
        return bool(mv.verify(list(g), list(t), timeout_seconds=None))


@functools.lru_cache(maxsize=16)
def _tolerances(settings: GradeSettings) -> tuple[Fraction, Fraction]:
    return Fraction(settings.rel_tol), Fraction(settings.abs_tol)


def _numbers_equal(a: Fraction, b: Fraction, settings: GradeSettings) -> bool:
    if a == b:
        return True
    # exact arithmetic: floats would overflow on huge values and blur tiny ones
    rel, absolute = _tolerances(settings)
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), absolute)


def _has_variable(canonical: str) -> bool:
    """A letter that is neither a LaTeX command, a function/constant name, nor e or i: "12x"."""
    bare = _LATEX_COMMAND_RE.sub(" ", canonical)
    return any(w.lower() not in _MATH_WORDS for w in _LETTERS_RE.findall(bare))


def _times_equal(a: tuple[int, bool], b: tuple[int, bool]) -> bool:
    if a[1] and b[1]:
        return a[0] == b[0]
    return a[0] % 720 == b[0] % 720  # one side did not say am or pm: the clock reading decides


def _equivalent_canonical(ca: str, cb: str, pct_a: bool, pct_b: bool, settings: GradeSettings) -> bool:
    if ca == cb:
        return True
    va, vb = numeric_value(ca), numeric_value(cb)
    if va is not None and vb is not None:  # the fast path: most answers are plain numbers
        if _numbers_equal(va, vb, settings):
            return True
        # "12%" against "0.12": a percentage may be written as a fraction on the other side
        return (pct_a and not pct_b and _numbers_equal(va / 100, vb, settings)) or (
            pct_b and not pct_a and _numbers_equal(va, vb / 100, settings))
    ta, tb = _time_value(ca), _time_value(cb)
    if ta is not None or tb is not None:
        return ta is not None and tb is not None and _times_equal(ta, tb)
    if not settings.math_verify:
        return False
    if not (_looks_mathematical(ca) and _looks_mathematical(cb)):
        return False
    if not (_bounded(ca, settings) and _bounded(cb, settings)):
        return False
    if (va is not None and _has_variable(cb)) or (vb is not None and _has_variable(ca)):
        return False  # "12x" is not a number: no need to ask sympy
    if _DANGLING_EQUALS_RE.search(ca) or _DANGLING_EQUALS_RE.search(cb):
        return False  # "9 + 8 =" is an unfinished sum; math-verify would read its last term, 8
    return _mv_equal(ca, cb)


def answers_equivalent(reference: str | None, answer: str | None, settings: GradeSettings = DEFAULT_GRADE) -> bool:
    """Whether two answers are the same answer (docs/METHODS.md §7). Raw or canonical strings.

    Order: canonical strings equal; both numbers -> exact values within the tolerance (a
    percentage on one side may also equal the other divided by 100); either a time of day -> both
    times with the same clock reading; both look mathematical and are within the size bounds ->
    math-verify (fractions, roots, pi, sets, intervals, simple algebra); anything else -> False.
    `reference` plays math-verify's "gold" role (its comparison is not quite symmetric). Never
    raises and never uses signals, so it is safe in any thread.
    """
    if reference is None or answer is None:
        return False
    ca, cb = canonical_answer(reference), canonical_answer(answer)
    if ca is None or cb is None:
        return False
    return _equivalent_cached(ca, cb, ca.endswith("%"), cb.endswith("%"), settings)


@functools.lru_cache(maxsize=16384)  # votes and outcome efficiency compare the same pairs again
def _equivalent_cached(ca: str, cb: str, pct_a: bool, pct_b: bool, settings: GradeSettings) -> bool:
    try:
        return _equivalent_canonical(ca, cb, pct_a, pct_b, settings)
    except (ArithmeticError, ValueError, TypeError, RecursionError, MemoryError):
        return False  # a comparison that cannot be made is not a match


def equivalence_classes(
    answers: Sequence[str | None], settings: GradeSettings = DEFAULT_GRADE
) -> list[int | None]:
    """Per answer, the index of its equivalence class (0, 1, ... in order of first appearance);
    None for a missing or empty answer. Two answers share a class when `answers_equivalent` holds
    between the later one and the class's first member, the same test `grade` applies, so votes
    group answers exactly as they are graded. Equal `answer_key`s are matched without comparing.
    """
    out: list[int | None] = []
    leaders: list[str] = []  # canonical first member of each class
    by_key: dict[tuple[str, str], int] = {}
    for raw in answers:
        canon = canonical_answer(raw) if raw is not None else None
        if canon is None:
            out.append(None)
            continue
        key = answer_key(canon)
        cls = by_key.get(key)
        if cls is None:
            cls = next((i for i, lead in enumerate(leaders) if answers_equivalent(lead, raw, settings)), None)
            if cls is None:
                cls = len(leaders)
                leaders.append(canon)
            by_key[key] = cls
        out.append(cls)
    return out


def grade(
    extracted: str | None, reference: str | None, settings: GradeSettings = DEFAULT_GRADE
) -> bool | None:
    """True/False against the reference by `answers_equivalent`; None when there is no reference
    to grade against; False when there is a reference but no answer."""
    ref = canonical_answer(reference) if reference is not None else None
    if ref is None:
        return None
    if extracted is None or canonical_answer(extracted) is None:
        return False
    return answers_equivalent(reference, extracted, settings)


def grade_trace(
    stop_reason: str | None,
    extracted: str | None,
    reference: str | None,
    settings: GradeSettings = DEFAULT_GRADE,
    meta: dict | None = None,
) -> bool | None:
    """The grade of a whole trace, the one rule every save path uses (docs/METHODS.md §7): None
    (ungraded) unless the trace finished normally (`analysis.records.finished_normally`: not
    stopped, not failed, not marked partial in `meta`), else `grade(extracted, reference)`."""
    if not finished_normally(stop_reason, meta):
        return None
    return grade(extracted, reference, settings)


def stored_grade(record: "TraceRecord") -> bool | None:
    """The grade a record is stored with: None when it did not finish normally; an imported trace
    without a verdict is graded against its reference like a generated one; otherwise the record's
    own grade (generated traces were graded by `grade_trace` when built; a ThinkScope file keeps
    its verdicts)."""
    if not finished_normally(record.stop_reason, record.meta):
        return None
    if record.correct is None and record.stop_reason == "imported":
        return grade(record.extracted_answer, record.reference_answer)
    return None if record.correct is None else bool(record.correct)


def ungraded_reason(stop_reason: str | None, reference: str | None, meta: dict | None = None) -> str | None:
    """Why a trace has no grade, in words for a page or the CLI; None when it is graded."""
    if not finished_normally(stop_reason, meta):
        why = "partial" if stop_reason in GRADED_STOP_REASONS else (stop_reason or "unknown")
        return f"not finished ({why})"
    if canonical_answer(reference) is None:
        return "no reference answer"
    return None


# ---------------------------------------------------------------------------------------------
# Final-answer extraction (docs/METHODS.md §7)

_SENTENCE_END_RE = re.compile(r"[.;!?](?:\s|$)")
_NEXT_LINE_RE = re.compile(r"\n\s*(\S[^\n]*)")
_VALUE_LEAD_RE = re.compile(r"(?:\s|[*_`:]|\\\(|\\\[|\$|\bis\b|=)*")  # markdown/math openers before a value
# A leading number counts as the answer when a delimiter follows it, not more words or operators.
_LEAD_END_RE = re.compile(r"\s*(?:$|[,.;!?)\]*_`$]|\\\)|\\\]|\s(?:then|and|so|because|since|as|which)\b)")
# A check restates numbers after the result ("17. Check: 17 - 8 = 9"); the fallback stops there.
_CHECK_RE = re.compile(
    r"\b(?:let(?:'s|\s+me|\s+us)\s+)?(?:double[- ]?)?(?:check|verify|verification|checking|verifying)\b",
    re.IGNORECASE,
)
_ANSWER_PHRASE_RE = re.compile(
    r"\banswer\s+(?:is|=|would\s+be|should\s+be|will\s+be)\s*[*_]*\s*:?", re.IGNORECASE
)


@functools.lru_cache(maxsize=256)
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


def _leading_number(text: str, alone: bool) -> str | None:
    """The canonical number (or time) that `text` opens with, unless it starts an expression
    ("3 + 4 = 7", "2\\sqrt{2}" -> None). With `alone`, only when a delimiter or a joining word
    follows it ("12.", "4, then he had 5 sheep" -> "4"; "3 apples plus 2" -> None)."""
    start = _VALUE_LEAD_RE.match(text).end()
    m = _NUMBER_RE.match(text, start)
    if m is None or _CONTINUES_RE.match(text, m.end()) or (alone and not _LEAD_END_RE.match(text, m.end())):
        return None
    return canonical_answer(m.group(0))


def _marker_value(value: str) -> str | None:
    """The answer stated after a marker. One number or expression is the answer; a number that
    opens a longer value is the answer ("4, then ...", "42 because ..."); a sentence gives its last number ("The
    train arrives at 5:30 pm" -> "5:30 pm"); a text without digits is a text answer ("Paris")."""
    canon = canonical_answer(value)
    if canon is None:
        return None
    if numeric_value(canon) is not None or _time_value(canon) is not None or _looks_mathematical(canon):
        return canon
    lead = _leading_number(value, alone=False)
    if lead is not None:
        return lead
    if not re.search(r"\d", canon):
        return canon
    return _last_number(value, cut_checks=False) or canon


def _markers_for(settings: ExtractionSettings, fmt: "ReasoningFormat | None") -> tuple[str, ...]:
    """The settings' markers, with the format's own answer marker ranked just after "final answer"."""
    markers = settings.markers
    if fmt is None or fmt.kind != "answer_marker":
        return markers
    own = fmt.answer_marker.strip()
    if own.lower() in (m.lower() for m in markers):
        return markers
    finals = [m for m in markers if m.lower().startswith("final answer")]
    rest = [m for m in markers if m not in finals]
    return (*finals, own, *rest)


def _from_markers(text: str, markers: tuple[str, ...], settings: ExtractionSettings) -> str | None:
    for marker in markers:
        for m in reversed(list(_marker_regex(marker).finditer(text))):
            value = _value_after(text, m.end())
            # "####" doubles as a markdown heading; only a number after it is a GSM8K-style answer.
            if marker.strip() == "####":
                got = _leading_number(value, alone=False) or canonical_answer(value)
                got = got if numeric_value(got) is not None else None
            else:
                got = _marker_value(value)
            if got is not None:
                return got
    if settings.answer_phrase:
        for m in reversed(list(_ANSWER_PHRASE_RE.finditer(text))):
            got = _marker_value(_value_after(text, m.end()))
            if got is not None:
                return got
    return None


def _last_number(text: str, cut_checks: bool = True) -> str | None:
    if cut_checks:
        check = _CHECK_RE.search(text)
        if check is not None and _NUMBER_RE.search(text, 0, check.start()):
            text = text[: check.start()]
    for m in reversed(list(_NUMBER_RE.finditer(text))):
        value = canonical_answer(m.group(0))
        if value is not None:
            return value
    return None


def extract_answer(
    answer_text: str,
    thinking_text: str = "",
    settings: ExtractionSettings = DEFAULT_EXTRACTION,
    fmt: "ReasoningFormat | None" = None,
) -> str | None:
    """The model's final answer in canonical form, or None (docs/METHODS.md §7).

    Markup and HTML are blanked first (a trailing `<img ... alert(2)>` states no answer). Then, in
    the answer part and after it in the thinking part: the last non-empty \\boxed{}, then the
    markers in rank order ("Final Answer:", "final answer is", the format's answer marker,
    "Answer:", "####"; last occurrence of each), then "the answer is X". With an answer-marker
    `fmt` the answer part is what followed that marker, so it is read as a marker's value. Only
    when nothing marks an answer: the answer part's opening number when it stands alone ("12.",
    "4, then ..."), else the last number of the answer part before any check ("so 17. Let me
    check: 17 - 8 = 9" -> 17), then the same in the thinking part. The answer part wins because
    the thinking may try answers it later rejects.
    """
    answer = _clean(answer_text or "")
    thinking = _clean(thinking_text or "")
    if fmt is not None:
        settings = extraction_for(fmt.answer_format, settings)
    markers = _markers_for(settings, fmt)
    if fmt is not None and fmt.kind == "answer_marker" and answer.strip():
        answer = f"{fmt.answer_marker.strip()} {answer}"
    for part in (answer, thinking):
        for content in reversed(find_boxed(part)):
            value = canonical_answer(content)
            if value is not None:
                return value
        value = _from_markers(part, markers, settings)
        if value is not None:
            return value
    if not settings.last_number_fallback:
        return None
    lead = _leading_number(answer.lstrip(), alone=True)
    if lead is not None:
        return lead
    for part in (answer, thinking):
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
    text = _clean(text or "")
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
