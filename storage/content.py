"""What a stored trace may hold, shared by every entry point: size limits, the number rule, and a
content hash that makes imports idempotent.

Every way into the database (an imported file, a local or remote generation, a sweep, a
strategy run) ends in storage.writes.insert_traces, which passes each record through
fit_record(); the importers check the same limits earlier, so a refused import names its line
and field. Because the limits are the same everywhere, whatever the database holds can be
exported and read back by the importer (tests/test_import_hardening.py round-trips the extremes).

The number rule: the database holds finite numbers only. An imported file with NaN, ±Infinity or
a number outside what its column holds is refused at import, naming line and field (write null for
an unknown value). Numbers the app produces itself (a generation, a server's log-probabilities)
that are not finite are stored as unknown instead (NaN in token columns, exported as null; a
latency of 0), because a finished generation is never dropped. Exports write any non-finite
value they still find (an older database) as null, so an export never fails on stored data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import re

import numpy as np

from analysis.records import TokenColumns, TraceRecord

# Longest text field (characters) of a stored trace: prompt, thinking, answer, reference, and one
# token's text. Reasoning traces of 100k tokens are about 0.5 M characters; a field twenty times
# that is almost certainly not a trace, and refusing it keeps one bad record from filling memory.
MAX_FIELD_CHARS = 10_000_000
# Per-token values of one trace, T * (5 + 3K) for T tokens with K alternatives each (token_id,
# text, logprob, entropy, phase, and K ids, texts and log-probabilities): 5 M is 250k tokens with
# top-5 alternatives, 1 M tokens without. Parsing a JSON line costs ~100 bytes of memory per
# value, so this bounds what one imported line can take (bench/bench_import.py --case huge-line).
MAX_TOKEN_VALUES = 5_000_000
# JSON values in one imported line: the token values above plus room for meta and settings.
MAX_LINE_VALUES = 6_000_000
# Deepest nesting of settings / meta objects: JSON tools and DuckDB's JSON functions recurse.
MAX_JSON_DEPTH = 64
# Largest float32, the type of the per-token log-probability and entropy columns.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# latency_s is seconds of wall time: anything beyond ~31 years is not a latency.
MAX_LATENCY_S = 1e9
# Token ids: -1 = unknown (imported text), else an index into a vocabulary. The largest
# vocabularies are ~256k entries; 2^24 leaves room and refuses garbage such as 10^12.
MAX_TOKEN_ID = 2**24

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    """True when text holds a lone UTF-16 surrogate (JSON "\\ud800"): not storable as UTF-8."""
    return not text.isascii() and _SURROGATE.search(text) is not None  # isascii: a fast C scan


def token_values(tokens: TokenColumns) -> int:
    return len(tokens) * (5 + 3 * int(tokens.top_ids.shape[1]))


def fit_record(record: TraceRecord) -> TraceRecord:
    """The record as it can be stored: within the limits, finite numbers only.

    Imported records have been checked already (they come here unchanged). A generated record
    over a limit is cut to it and says so in meta["clipped"] (field -> original size), rather
    than being dropped; non-finite numbers become unknown (see the module docstring).
    """
    clipped: dict = {}
    changes: dict = {}
    for name in ("prompt", "thinking_text", "answer_text", "reference_answer", "extracted_answer"):
        value = getattr(record, name)
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            clipped[name] = len(value)
            changes[name] = value[:MAX_FIELD_CHARS]
    latency = record.latency_s
    if not isinstance(latency, (int, float)) or not math.isfinite(latency) or not 0 <= latency <= MAX_LATENCY_S:
        changes["latency_s"] = 0.0  # unknown, as for a file without one
    tokens = _fit_tokens(record.tokens, clipped)
    if tokens is not record.tokens:
        changes["tokens"] = tokens
    if clipped:
        changes["meta"] = {**record.meta, "clipped": clipped}
    return dataclasses.replace(record, **changes) if changes else record


def _fit_tokens(tokens: TokenColumns, clipped: dict) -> TokenColumns:
    n, k = len(tokens), int(tokens.top_ids.shape[1])
    keep = n
    if token_values(tokens) > MAX_TOKEN_VALUES:
        keep = MAX_TOKEN_VALUES // (5 + 3 * k)
        clipped["tokens"] = n
    cut = (lambda a: a[:keep]) if keep < n else (lambda a: a)
    logprob, entropy, top_lp = (_unknown_if_not_finite(cut(a)) for a in
                                (tokens.logprob, tokens.entropy, tokens.top_logprobs))
    texts = cut(tokens.text)
    if any(len(t) > MAX_FIELD_CHARS for t in texts):
        clipped["token_text"] = max(len(t) for t in texts)
        texts = [t[:MAX_FIELD_CHARS] for t in texts]
    if (keep == n and texts is tokens.text and logprob is tokens.logprob and entropy is tokens.entropy
            and top_lp is tokens.top_logprobs):
        return tokens
    return TokenColumns(
        token_id=cut(tokens.token_id), text=list(texts), logprob=logprob, entropy=entropy,
        top_ids=cut(tokens.top_ids), top_texts=cut(tokens.top_texts), top_logprobs=top_lp, phase=cut(tokens.phase),
    )


def _unknown_if_not_finite(values: np.ndarray) -> np.ndarray:
    # NaN (unknown) is allowed; ±inf (also float32 overflow of a huge value) becomes NaN.
    bad = np.isinf(values)
    if not bad.any():
        return values
    out = values.astype(np.float32, copy=True)
    out[bad] = np.nan
    return out


def content_hash(prompt: str, reference_answer: str | None, model: str, thinking: str, answer: str,
                 stop_reason: str) -> str:
    """sha256 identifying a trace by its content, for idempotent imports.

    The same function as CONTENT_HASH_SQL (migration 007 back-fills existing rows with it): each
    field as "N" (null) or "S<UTF-8 bytes>:<text>", joined by "|". Times, ids, meta and token
    rows are left out: they differ between formats and databases for the same trace.
    """
    parts = [prompt, reference_answer, model, thinking, answer, stop_reason]
    text = "|".join("N" if p is None else f"S{len(p.encode('utf-8'))}:{p}" for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_hash(record: TraceRecord) -> str:
    return content_hash(record.prompt, record.reference_answer, record.model, record.thinking_text,
                        record.answer_text, record.stop_reason)


def _sql_part(column: str) -> str:
    return f"CASE WHEN {column} IS NULL THEN 'N' ELSE 'S' || strlen({column}) || ':' || {column} END"


# content_hash in SQL over traces t JOIN prompts p (the same expression as migration 007).
CONTENT_HASH_SQL = "sha256(concat_ws('|', " + ", ".join(
    _sql_part(c) for c in ("p.text", "p.reference_answer", "t.model", "t.thinking_text", "t.answer_text",
                           "t.stop_reason")) + "))"
