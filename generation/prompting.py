"""Turning a user's question into model input, in the reasoning format the model speaks."""
from __future__ import annotations

import dataclasses

from analysis.reasoning import HARMONY_CLOSE, HARMONY_OPEN, ReasoningFormat

STEP_BY_STEP_SYSTEM_PROMPT = (
    "You are a careful problem solver. Think through the problem step by step, "
    "then give the final answer on its own line in the form '{marker} <answer>'."
)


def template_text(tokenizer) -> str:
    """The tokenizer's chat template as text ("" without one; the default of a named set)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # named templates: "default" is the one apply_chat_template uses
        template = template.get("default") or next(iter(template.values()), "")
    return template if isinstance(template, str) else ""


def detect_format(tokenizer) -> ReasoningFormat:
    """The reasoning format the tokenizer's chat template speaks.

    - gpt-oss harmony (the template writes `<|channel|>` and an analysis channel): thinking is the
      analysis channel, the answer the final one.
    - think tags when the tokenizer knows `<think>`/`</think>` or the template writes `</think>`;
      pre-opened when rendering a prompt ends inside `<think>` (R1 distills); a Qwen3-style
      `enable_thinking` switch in the template is kept on (its default) and shown as editable.
    - otherwise an answer marker for a plain instruct model.
    """
    template = template_text(tokenizer)
    if "<|channel|>" in template and "analysis" in template:
        return ReasoningFormat("think_tags", HARMONY_OPEN, HARMONY_CLOSE, template="harmony")
    vocab = tokenizer.get_vocab()
    if ("<think>" in vocab and "</think>" in vocab) or "</think>" in template:
        switch = True if "enable_thinking" in template else None
        fmt = ReasoningFormat(kind="think_tags", enable_thinking=switch)
        preopened = _template_preopens_think(tokenizer, fmt)
        family = "qwen3" if switch else "r1" if preopened else ""
        return dataclasses.replace(fmt, starts_in_thinking=preopened, template=family)
    return ReasoningFormat(kind="answer_marker")


def _template_preopens_think(tokenizer, fmt: ReasoningFormat) -> bool:
    rendered = render_prompt(tokenizer, "1+1?", fmt)
    return rendered.rstrip().endswith(fmt.open_tag)


def chat_messages(question: str, fmt: ReasoningFormat) -> list[dict]:
    """The chat for `question`: plain instruct models get the step-by-step system prompt first, and a
    prompt set's system prompt (`fmt.system_prompt`) follows it."""
    system = []
    if fmt.kind == "answer_marker":
        system.append(STEP_BY_STEP_SYSTEM_PROMPT.format(marker=fmt.answer_marker))
    if fmt.system_prompt.strip():
        system.append(fmt.system_prompt.strip())
    messages = [{"role": "system", "content": "\n".join(system)}] if system else []
    messages.append({"role": "user", "content": question})
    return messages


def render_prompt(tokenizer, question: str, fmt: ReasoningFormat) -> str:
    """The full prompt text for `question` (chat template when the model has one)."""
    messages = chat_messages(question, fmt)
    if tokenizer.chat_template:
        # Qwen3's switch is a template variable; templates without it ignore extra variables.
        extra = {} if fmt.enable_thinking is None else {"enable_thinking": fmt.enable_thinking}
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
    system = messages[0]["content"] + "\n\n" if messages[0]["role"] == "system" else ""
    return f"{system}Question: {question}\n"


def encode_prompt(tokenizer, question: str, fmt: ReasoningFormat) -> list[int]:
    if not question or not question.strip():
        raise ValueError("The prompt is empty: type a question first.")
    text = render_prompt(tokenizer, question, fmt)
    # The chat template already carries the special tokens it needs.
    return tokenizer(text, add_special_tokens=not tokenizer.chat_template)["input_ids"]
