"""Open WebUI chat exports: assistant messages with `<details type="reasoning">` blocks.

Accepted shapes: the export file (a JSON array of {"id", "title", "chat": {...}}), one such
object, or a bare chat {"models", "messages" | "history"}. The reasoning block looks like

    <details type="reasoning" done="true" duration="12">
    <summary>Thought for 12 seconds</summary>
    > first line of reasoning          (newer versions HTML-escape this: "&gt; ...")
    </details>
    answer text
"""
from __future__ import annotations

import html
import re
from typing import Any

from storage.importers.common import Where, get, imported, need_object, unix_time
from storage.jsonl_decode import ParsedLine, _kind

NAME = "openwebui"
MARK = '<details type="reasoning"'
# Blocks are found by plain searches that each move forward (split_details): a regex with a lazy
# body, `<details type="reasoning"…>(.*?)</details>`, rescans the rest of the message for every
# opening without a closing tag, which is quadratic (336 KB of openings took 91 s).
_OPEN = re.compile(r'<details\s+type="reasoning"')
_CLOSE = "</details>"
_SUMMARY = re.compile(r"^\s*<summary>.*?</summary>\s*", re.DOTALL)
_DURATION = re.compile(r'duration="(\d+(?:\.\d+)?)"')


def convert(at: Where, obj: Any) -> list[ParsedLine]:
    obj = need_object(at, obj, None)
    chat, field = (obj["chat"], "chat") if isinstance(obj.get("chat"), dict) else (obj, "")
    prefix = f"{field}." if field else ""
    messages, mfield = _messages(at, chat, prefix)
    models = chat.get("models") if isinstance(chat.get("models"), list) else []
    default_model = next((m for m in models if isinstance(m, str)), None) or get(at, chat, "model", f"{prefix}model", str)
    out, prompt = [], None
    for i, message in enumerate(messages):
        where = f"{mfield}[{i}]"
        message = need_object(at, message, where)
        role = get(at, message, "role", f"{where}.role", str, optional=False)
        content = get(at, message, "content", f"{where}.content", str) or ""
        if role == "user":
            prompt = content
        elif role == "assistant":
            thinking, answer, duration = split_details(content)
            meta = {"chat_id": obj.get("id"), "chat_title": obj.get("title") or chat.get("title"), "message_id": message.get("id")}
            if duration is not None:
                meta["thinking_duration_s"] = duration
            model = get(at, message, "model", f"{where}.model", str) or default_model
            created = unix_time(at, message.get("timestamp"), f"{where}.timestamp")
            out.append(imported(at, NAME, prompt=prompt, model=model, thinking=thinking, answer=answer,
                                created_at=created, meta=meta))
    if not out:
        at.fail(mfield, "holds no assistant message")
    return out


def _messages(at: Where, chat: dict, prefix: str) -> tuple[list, str]:
    """The chat's messages in order: the list if present, else the history's current branch."""
    if isinstance(chat.get("messages"), list) and chat["messages"]:
        return chat["messages"], f"{prefix}messages"
    history = chat.get("history")
    if not isinstance(history, dict) or not isinstance(history.get("messages"), dict):
        at.fail(f"{prefix}messages", f"must be a list of messages (or history.messages an object), got {_kind(chat.get('messages'))}")
    by_id, branch, current, seen = history["messages"], [], history.get("currentId"), set()
    while isinstance(current, str) and current in by_id and current not in seen:
        seen.add(current)
        branch.append(by_id[current])
        current = by_id[current].get("parentId") if isinstance(by_id[current], dict) else None
    return branch[::-1], f"{prefix}history.messages"


def split_details(content: str) -> tuple[str, str, float | None]:
    """(thinking, answer, thinking duration in s) of one assistant message, in linear time.

    A block is an opening `<details type="reasoning" …>`, its body and the first `</details>`
    after it (with the whitespace that follows); the answer is the text outside the blocks. An
    opening without a closing tag is answer text, as is everything after it: once no `</details>`
    follows, no later opening can close either, so the scan stops.
    """
    thoughts, duration, answer = [], None, []
    pos = 0
    while True:
        opening = _OPEN.search(content, pos)
        if opening is None:
            break
        tag_end = content.find(">", opening.end())
        close = content.find(_CLOSE, tag_end) if tag_end >= 0 else -1
        if close < 0:
            break
        found = _DURATION.search(content, opening.end(), tag_end)
        if found:
            duration = (duration or 0.0) + float(found.group(1))
        body = content[tag_end + 1 : close]
        summary = _SUMMARY.match(body)  # bounded by the body: the bodies add up to the message
        thoughts.append(_unquote(body[summary.end():] if summary else body))
        answer.append(content[pos : opening.start()])
        pos = close + len(_CLOSE)
        while pos < len(content) and content[pos].isspace():
            pos += 1
    answer.append(content[pos:])
    return "\n\n".join(t for t in thoughts if t), "".join(answer).strip(), duration


def _unquote(body: str) -> str:
    lines = body.strip("\n").split("\n")
    if any(line.startswith("&gt;") for line in lines):  # newer versions escape the quoted body
        lines = [html.unescape(line) for line in lines]
    return "\n".join(line[2:] if line.startswith("> ") else line[1:] if line.startswith(">") else line for line in lines).strip()


def looks_like(obj: dict) -> bool:
    chat = obj.get("chat") if isinstance(obj.get("chat"), dict) else obj
    if isinstance(chat.get("history"), dict):
        return True
    messages = chat.get("messages")
    return isinstance(messages, list) and any(
        isinstance(m, dict) and isinstance(m.get("content"), str) and MARK in m["content"] for m in messages
    )
