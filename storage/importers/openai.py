"""OpenAI-style chat completions: response objects, request/response pairs, message lists.

Accepted shapes (one per JSONL line or per item of a JSON array):
- a response: {"model", "created", "choices": [{"message": {"content", "reasoning_content" |
  "reasoning"}, "logprobs": {"content": [{"token", "logprob", "top_logprobs"}]}, "finish_reason"}]}
  (legacy completions with choices[].text too); one trace per choice; a top-level "messages"
  beside "choices" (the request, logged with its response) gives the prompt: its last user turn;
- {"request": {"model", "messages", ...}, "response": {...}}; the Batch API's
  {"custom_id", "response": {"body": {...}}} is the same with the body unwrapped;
- {"model"?, "messages": [...]}: one trace per assistant message, prompted by the user message
  before it.
Servers name the reasoning field `reasoning_content` (DeepSeek, vLLM) or `reasoning` (OpenRouter,
Ollama); without either, `<think>` tags in the content are split.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from analysis.reasoning import ReasoningFormat, split_tagged_text, token_phases
from analysis.records import ANSWER, THINKING, TokenColumns
from storage.content import FLOAT32_MAX
from storage.importers.common import Where, check_text, get, imported, last_user_text, need_object, number, unix_time
from storage.jsonl_decode import ParsedLine, _kind

NAME = "openai"
_SETTINGS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "n", "reasoning_effort")


def convert(at: Where, obj: Any) -> list[ParsedLine]:
    obj = need_object(at, obj, None)
    if "request" in obj or "response" in obj:
        request = get(at, obj, "request", "request", dict) or {}
        response = get(at, obj, "response", "response", dict, optional=False)
        body = response.get("body")
        if isinstance(body, dict):  # Batch API output
            response, field = body, "response.body"
        else:
            field = "response"
        prompt = last_user_text(at, request.get("messages"), "request.messages", _content)
        return from_response(at, response, field, prompt, request)
    if "choices" in obj:
        # Some tools log the request's messages beside the response: the prompt is the last user turn.
        prompt = last_user_text(at, obj.get("messages"), "messages", _content)
        return from_response(at, obj, "", prompt, {})
    if "messages" in obj:
        return from_messages(at, obj)
    at.fail(None, "is not an OpenAI chat completion: expected 'choices', 'messages' or 'request'/'response'")


def from_response(at: Where, response: dict, field: str, prompt: str | None, request: dict) -> list[ParsedLine]:
    prefix = f"{field}." if field else ""
    choices = get(at, response, "choices", f"{prefix}choices", list, optional=False)
    model = get(at, response, "model", f"{prefix}model", str) or get(at, request, "model", "request.model", str)
    created = unix_time(at, response.get("created"), f"{prefix}created")
    settings = {k: request[k] for k in _SETTINGS if isinstance(request.get(k), (int, float, str))}
    out = []
    for i, choice in enumerate(choices):
        where = f"{prefix}choices[{i}]"
        choice = need_object(at, choice, where)
        message = get(at, choice, "message", f"{where}.message", dict)
        if message is not None:
            content = _content(at, message.get("content"), f"{where}.message.content")
            reasoning, rfield = _reasoning(at, message, f"{where}.message")
        else:  # legacy completions
            content = get(at, choice, "text", f"{where}.text", str, optional=False)
            reasoning, rfield = None, None
        logprobs = get(at, choice, "logprobs", f"{where}.logprobs", dict)
        meta = {"finish_reason": choice.get("finish_reason"), "response_id": response.get("id")}
        if isinstance(response.get("usage"), dict):
            meta["usage"] = response["usage"]
        out.append(_trace(at, prompt, model, content, reasoning, rfield, logprobs, f"{where}.logprobs",
                          created, settings, meta))
    return out


def from_messages(at: Where, obj: dict) -> list[ParsedLine]:
    messages = get(at, obj, "messages", "messages", list, optional=False)
    model = get(at, obj, "model", "model", str)
    out = []
    prompt: str | None = None
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        message = need_object(at, message, where)
        role = get(at, message, "role", f"{where}.role", str, optional=False)
        if role == "user":
            prompt = _content(at, message.get("content"), f"{where}.content")
        elif role == "assistant":
            content = _content(at, message.get("content"), f"{where}.content")
            reasoning, rfield = _reasoning(at, message, where)
            logprobs = get(at, message, "logprobs", f"{where}.logprobs", dict)
            msg_model = get(at, message, "model", f"{where}.model", str) or model
            out.append(_trace(at, prompt, msg_model, content, reasoning, rfield, logprobs, f"{where}.logprobs",
                              None, {}, {"message_index": i}))
    if not out:
        at.fail("messages", "holds no assistant message")
    return out


def _content(at: Where, value: Any, field: str) -> str:
    """Message content: a string, null, or a list of parts ({"type": "text", "text"})."""
    if value is None:
        return ""
    if isinstance(value, str):
        return check_text(at, field, value)
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            part = need_object(at, part, f"{field}[{i}]")
            if part.get("type") in ("text", "output_text", "input_text"):
                texts.append(get(at, part, "text", f"{field}[{i}].text", str, optional=False))
        return check_text(at, field, "".join(texts))
    at.fail(field, f"must be a string or a list of parts, got {_kind(value)}")


def _reasoning(at: Where, message: dict, where: str) -> tuple[str | None, str | None]:
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if value is not None:
            if isinstance(value, dict):  # some servers nest it: {"content": "..."} / {"text": "..."}
                value = value.get("content", value.get("text"))
            if not isinstance(value, str):
                at.fail(f"{where}.{key}", f"must be a string, got {_kind(value)}")
            return check_text(at, f"{where}.{key}", value), key
    return None, None


def _trace(at, prompt, model, content, reasoning, rfield, logprobs, lp_field, created, settings, meta) -> ParsedLine:
    if reasoning is not None:
        thinking, answer, fmt = reasoning.strip(), content.strip(), ReasoningFormat("think_tags")
        raw = None
        meta = {**meta, "reasoning_field": rfield}
    else:
        thinking, answer, fmt = split_tagged_text(content)
        raw = content
    tokens = None
    if logprobs is not None and logprobs.get("content") is not None:
        tokens = logprob_tokens(at, logprobs["content"], lp_field + ".content", reasoning, fmt)
        meta = {**meta, "token_source": "logprobs"}
    return imported(at, NAME, prompt=prompt, model=model, thinking=thinking, answer=answer, tokens=tokens,
                    fmt=fmt, raw_text=raw, created_at=created, settings=settings, meta=meta)


def logprob_tokens(at: Where, items: Any, field: str, reasoning: str | None, fmt: ReasoningFormat) -> TokenColumns:
    """logprobs.content[] as token columns; ids are unknown (-1), entropy unknown (NaN).

    K is the smallest number of alternatives any token has (TokenColumns needs one K per trace).
    When the reasoning came in its own field and the log-probabilities cover only the content,
    the reasoning is kept as word pieces without log p, so the thinking still shows.
    """
    if not isinstance(items, list):
        at.fail(field, f"must be a list, got {_kind(items)}")
    texts, logprobs, tops = [], [], []
    for i, item in enumerate(items):
        item = need_object(at, item, f"{field}[{i}]")
        texts.append(get(at, item, "token", f"{field}[{i}].token", str, optional=False))
        logprobs.append(_number(at, item.get("logprob"), f"{field}[{i}].logprob"))
        alts = get(at, item, "top_logprobs", f"{field}[{i}].top_logprobs", list) or []
        row = []
        for j, alt in enumerate(alts):
            alt = need_object(at, alt, f"{field}[{i}].top_logprobs[{j}]")
            row.append((get(at, alt, "token", f"{field}[{i}].top_logprobs[{j}].token", str, optional=False),
                        _number(at, alt.get("logprob"), f"{field}[{i}].top_logprobs[{j}].logprob")))
        tops.append(row)
    k = min((len(r) for r in tops), default=0)
    joined = "".join(texts)
    if reasoning is None:
        phase = token_phases(texts, fmt) if texts else np.zeros(0, np.int8)
    elif reasoning and joined.startswith(reasoning):  # the server logged reasoning tokens too
        starts = np.cumsum([0] + [len(t) for t in texts[:-1]])
        phase = np.where(starts < len(reasoning), THINKING, ANSWER).astype(np.int8)
    else:
        pieces = re.findall(r"\s*\S+", reasoning) if reasoning.strip() else []
        if pieces:
            pieces[-1] += "\n\n"
        texts = pieces + texts
        logprobs = [float("nan")] * len(pieces) + logprobs
        tops = [[("", float("nan"))] * k] * len(pieces) + tops
        phase = np.array([THINKING] * len(pieces) + [ANSWER] * (len(texts) - len(pieces)), np.int8)
    n = len(texts)
    return TokenColumns(
        token_id=np.full(n, -1, np.int64),
        text=texts,
        logprob=np.asarray(logprobs, np.float32).reshape(n),
        entropy=np.full(n, np.nan, np.float32),
        top_ids=np.full((n, k), -1, np.int64),
        top_texts=[[t for t, _ in row[:k]] for row in tops],
        top_logprobs=np.array([[lp for _, lp in row[:k]] for row in tops], np.float32).reshape(n, k),
        phase=np.asarray(phase, np.int8),
    )


def _number(at: Where, value: Any, field: str) -> float:
    """A log-probability: null is unknown (NaN); NaN, ±Infinity and what float32 cannot hold are
    refused (storage/content.py's number rule)."""
    if value is None:
        return float("nan")
    return number(at, value, field, -FLOAT32_MAX, FLOAT32_MAX)


def looks_like(obj: dict) -> bool:
    inner = obj.get("response")
    if isinstance(inner, dict) and isinstance(inner.get("body"), dict):
        inner = inner["body"]
    return (
        "choices" in obj
        or str(obj.get("object", "")).startswith(("chat.completion", "text_completion"))
        or (isinstance(inner, dict) and "choices" in inner)
        or isinstance(obj.get("messages"), list)
    )
