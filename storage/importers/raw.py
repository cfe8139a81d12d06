"""Raw model output as text: one trace per file, split at `<think>` / `<thinking>` tags.

Output that starts inside thinking (the template pre-opened the tag) has a closing tag but no
opening one; text without any tag is all answer. The prompt is not in such a file.
"""
from __future__ import annotations

from analysis.reasoning import split_tagged_text
from storage.importers.common import Where, check_text, imported
from storage.jsonl_decode import ParsedLine

NAME = "raw"


def convert(at: Where, text: str) -> list[ParsedLine]:
    check_text(at, "text", text)
    if not text.strip():
        at.fail(None, "the file holds no text")
    thinking, answer, fmt = split_tagged_text(text)
    return [imported(at, NAME, prompt=None, model=None, thinking=thinking, answer=answer, fmt=fmt, raw_text=text,
                     meta={"tag": fmt.open_tag if (thinking or fmt.close_tag in text) else None})]
