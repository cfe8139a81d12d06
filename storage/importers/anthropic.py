"""Anthropic Messages API: `thinking` and `redacted_thinking` content blocks.

Accepted shapes: a response {"type": "message", "model", "content": [blocks], "stop_reason"};
{"request": {"model", "messages"}, "response": {...}}; a Message Batches result
{"custom_id", "result": {"type": "succeeded", "message": {...}}}; and {"model"?, "messages": [...]}
with one trace per assistant message. Redacted thinking is encrypted: it is kept as a marker in
the thinking text and counted in meta, its data is not stored.
"""
from __future__ import annotations

from typing import Any

from storage.importers.common import Where, check_text, get, imported, last_user_text, need_object
from storage.jsonl_decode import ParsedLine, _kind

NAME = "anthropic"
REDACTED_MARKER = "[redacted thinking]"
_SETTINGS = ("temperature", "top_p", "top_k", "max_tokens")


def convert(at: Where, obj: Any) -> list[ParsedLine]:
    obj = need_object(at, obj, None)
    if isinstance(obj.get("result"), dict):  # Message Batches results
        result = obj["result"]
        if result.get("type") != "succeeded":
            at.fail("result.type", f"is {result.get('type')!r}; only succeeded batch results hold a message")
        return [_message(at, get(at, result, "message", "result.message", dict, optional=False),
                         "result.message", None, {}, {"custom_id": obj.get("custom_id")})]
    if "request" in obj or "response" in obj:
        request = get(at, obj, "request", "request", dict) or {}
        response = get(at, obj, "response", "response", dict, optional=False)
        prompt = last_user_text(at, request.get("messages"), "request.messages", _text)
        return [_message(at, response, "response", prompt, request, {})]
    if obj.get("type") == "message" or ("content" in obj and obj.get("role") == "assistant"):
        return [_message(at, obj, "", None, {}, {})]
    if "messages" in obj:
        messages = get(at, obj, "messages", "messages", list, optional=False)
        out, prompt = [], None
        for i, message in enumerate(messages):
            message = need_object(at, message, f"messages[{i}]")
            role = get(at, message, "role", f"messages[{i}].role", str, optional=False)
            if role == "user":
                prompt = _text(at, message.get("content"), f"messages[{i}].content")
            elif role == "assistant":
                merged = {"model": obj.get("model"), **message}
                out.append(_message(at, merged, f"messages[{i}]", prompt, {}, {"message_index": i}))
        if not out:
            at.fail("messages", "holds no assistant message")
        return out
    at.fail(None, "is not an Anthropic message: expected 'content' blocks, 'messages' or 'request'/'response'")


def _message(at: Where, message: dict, field: str, prompt: str | None, request: dict, meta: dict) -> ParsedLine:
    prefix = f"{field}." if field else ""
    blocks = message.get("content")
    if isinstance(blocks, str):
        blocks = [{"type": "text", "text": blocks}]
    if not isinstance(blocks, list):
        at.fail(f"{prefix}content", f"must be a list of content blocks, got {_kind(blocks)}")
    thinking, answer, redacted = [], [], 0
    for i, block in enumerate(blocks):
        where = f"{prefix}content[{i}]"
        block = need_object(at, block, where)
        kind = get(at, block, "type", f"{where}.type", str, optional=False)
        if kind == "thinking":
            thinking.append(get(at, block, "thinking", f"{where}.thinking", str, optional=False))
        elif kind == "redacted_thinking":
            redacted += 1
            thinking.append(REDACTED_MARKER)
        elif kind == "text":
            answer.append(get(at, block, "text", f"{where}.text", str, optional=False))
    model = get(at, message, "model", f"{prefix}model", str) or get(at, request, "model", "request.model", str)
    settings = {k: request[k] for k in _SETTINGS if isinstance(request.get(k), (int, float))}
    if isinstance(request.get("thinking"), dict):
        settings["thinking"] = request["thinking"]
    meta = {**meta, "stop_reason": message.get("stop_reason"), "message_id": message.get("id")}
    if redacted:
        meta["redacted_thinking_blocks"] = redacted
    if isinstance(message.get("usage"), dict):
        meta["usage"] = message["usage"]
    return imported(at, NAME, prompt=prompt, model=model, thinking=check_text(at, f"{prefix}content", "\n\n".join(thinking)),
                    answer="".join(answer).strip(), settings=settings, meta=meta)


def _text(at: Where, content: Any, field: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return check_text(at, field, content)
    if not isinstance(content, list):
        at.fail(field, f"must be a string or a list of content blocks, got {_kind(content)}")
    parts = []
    for i, block in enumerate(content):
        block = need_object(at, block, f"{field}[{i}]")
        if block.get("type") == "text":
            parts.append(get(at, block, "text", f"{field}[{i}].text", str, optional=False))
    return check_text(at, field, "".join(parts))


def _has_thinking_blocks(value: Any) -> bool:
    return isinstance(value, list) and any(
        isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking") for b in value
    )


def looks_like(obj: dict) -> bool:
    if isinstance(obj.get("result"), dict) and "custom_id" in obj:
        return True
    inner = obj.get("response") if isinstance(obj.get("response"), dict) else obj
    if inner.get("type") == "message" and isinstance(inner.get("content"), list):
        return True
    messages = obj.get("messages")
    return _has_thinking_blocks(inner.get("content")) or (
        isinstance(messages, list) and any(isinstance(m, dict) and _has_thinking_blocks(m.get("content")) for m in messages)
    )
