"""Records: one flat object per trace, the commonest shape of trace files (JSONL, a JSON array, CSV
or Parquet rows), e.g. {"question": ..., "response": "<think>…</think> 42", "gold": "42"}.

Fields are found by name (the first present, in this order), or named with a mapping
(`--map prompt=question,response=output`, the Import page's mapping field):

    prompt     prompt | question | problem | input | instruction
    response   response | output | completion | generation | text   (split at <think> / <thinking>
               tags, also when the output starts inside thinking: the raw importer's splitter)
    thinking   thinking | reasoning | reasoning_content                 (then the answer is in
    answer     answer | final_answer | content                           answer, else in response)
    reference  reference_answer | reference | gold | ground_truth       (grades the trace on save)
    model      model | model_name

Every other field is kept in meta["fields"]. Values from CSV are strings; an empty CSV cell is
treated as absent.
"""
from __future__ import annotations

import base64
import math
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from analysis.reasoning import ReasoningFormat, split_tagged_text
from storage.importers.common import Where, check_text, imported, need_object
from storage.jsonl_decode import ParsedLine, _kind

NAME = "records"
ROLES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "question", "problem", "input", "instruction"),
    "response": ("response", "output", "completion", "generation", "text"),
    "thinking": ("thinking", "reasoning", "reasoning_content"),
    "answer": ("answer", "final_answer", "content"),
    "reference": ("reference_answer", "reference", "gold", "ground_truth"),
    "model": ("model", "model_name"),
}
Mapping = dict[str, str]  # role -> the file's field name


def parse_mapping(text: str | None) -> Mapping:
    """`prompt=question,response=output` as {"prompt": "question", "response": "output"}.

    Raises ValueError with a message for people (unknown role, missing '=', a role given twice).
    """
    mapping: Mapping = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        role, sep, field = (s.strip() for s in part.partition("="))
        if not sep or not role or not field:
            raise ValueError(f"mapping {part!r} must look like role=field, e.g. prompt=question")
        if role not in ROLES:
            raise ValueError(f"mapping {part!r}: unknown role {role!r}; roles are {', '.join(ROLES)}")
        if role in mapping:
            raise ValueError(f"mapping names the role {role!r} twice")
        mapping[role] = field
    return mapping


def convert(at: Where, obj: Any, mapping: Mapping | None = None) -> list[ParsedLine]:
    obj = need_object(at, obj, None)
    mapping = mapping or {}
    used: set[str] = set()

    def value(role: str) -> tuple[str | None, str | None]:
        """(field name, text) of a role, or (None, None) when the record has none."""
        if role in mapping:
            field = mapping[role]
            if _absent(obj.get(field)):
                at.fail(field, f"is missing (the mapping reads {role} from it)")
            candidates: tuple[str, ...] = (field,)
        else:
            candidates = ROLES[role]
        for field in candidates:
            raw = obj.get(field)
            if _absent(raw):
                continue
            used.add(field)
            if role == "reference" and isinstance(raw, (int, float)) and not isinstance(raw, bool):
                if isinstance(raw, float) and not math.isfinite(raw):
                    at.fail(field, "must be a finite number or a string")
                raw = str(raw)  # {"gold": 42}
            if not isinstance(raw, str):
                at.fail(field, f"must be a string, got {_kind(raw)}")
            return field, check_text(at, field, raw)
        return None, None

    _, prompt = value("prompt")
    _, reference = value("reference")
    _, model = value("model")
    response_field, response = value("response")
    thinking_field, thinking = value("thinking")
    answer_field, answer = value("answer")
    meta: dict = {}
    if thinking is not None:  # separate thinking: the answer is in answer, else in response
        fmt = ReasoningFormat("think_tags")
        answer = answer if answer is not None else response if response is not None else ""
        thinking, answer, raw = thinking.strip(), answer.strip(), None
        meta["thinking_field"] = thinking_field
    elif response is not None:
        thinking, answer, fmt = split_tagged_text(response)
        raw = response
        meta["response_field"] = response_field
    elif answer is not None:
        thinking, answer, fmt, raw = "", answer.strip(), ReasoningFormat("think_tags"), None
    else:
        names = " | ".join(ROLES["response"] + ROLES["thinking"] + ROLES["answer"])
        keys = ", ".join(list(obj)[:8]) or "none"
        at.fail(None, f"has no output field (one of {names}; fields here: {keys}); "
                      "name it with a mapping such as response=FIELD")
    others = {str(k): _jsonable(at, str(k), v) for k, v in obj.items() if k not in used and not _absent(v)}
    if others:
        meta["fields"] = others
    return [imported(at, NAME, prompt=prompt, model=model, thinking=thinking, answer=answer, fmt=fmt,
                     raw_text=raw, meta=meta, reference=reference)]


def looks_like(obj: dict) -> bool:
    """A flat record: a prompt next to an output, or separate thinking and answer fields."""
    def has(role: str) -> bool:
        return any(isinstance(obj.get(k), str) for k in ROLES[role])

    return (has("prompt") and (has("response") or has("thinking") or has("answer"))) or (
        has("thinking") and (has("answer") or has("response")))


def looks_like_header(fields: list[str]) -> bool:
    """A CSV header naming a records file's columns."""
    return looks_like({name.strip(): "" for name in fields})


def _absent(value: Any) -> bool:
    return value is None  # (CSV readers drop empty cells before a row gets here)


def _jsonable(at: Where, field: str, value: Any) -> Any:
    """A Parquet/JSON value as something JSON can hold (Parquet gives dates, decimals, bytes)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(at, f"{field}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(at, f"{field}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    at.fail(field, f"has a value JSON cannot hold ({type(value).__name__})")
