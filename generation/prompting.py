"""Turning a user's question into model input, in the reasoning format the model speaks."""
from __future__ import annotations

from analysis.reasoning import ReasoningFormat

STEP_BY_STEP_SYSTEM_PROMPT = (
    "You are a careful problem solver. Think through the problem step by step, "
    "then give the final answer on its own line in the form '{marker} <answer>'."
)


def detect_format(tokenizer) -> ReasoningFormat:
    """Think tags when the tokenizer knows `<think>`/`</think>`, else an answer marker."""
    vocab = tokenizer.get_vocab()
    template = tokenizer.chat_template or ""
    if ("<think>" in vocab and "</think>" in vocab) or "</think>" in template:
        return ReasoningFormat(kind="think_tags", starts_in_thinking=_template_preopens_think(tokenizer))
    return ReasoningFormat(kind="answer_marker")


def _template_preopens_think(tokenizer) -> bool:
    rendered = render_prompt(tokenizer, "1+1?", ReasoningFormat(kind="think_tags"))
    return rendered.rstrip().endswith("<think>")


def chat_messages(question: str, fmt: ReasoningFormat) -> list[dict]:
    """The chat for `question`: plain instruct models get the step-by-step system prompt first."""
    messages = []
    if fmt.kind == "answer_marker":
        messages.append({"role": "system", "content": STEP_BY_STEP_SYSTEM_PROMPT.format(marker=fmt.answer_marker)})
    messages.append({"role": "user", "content": question})
    return messages


def render_prompt(tokenizer, question: str, fmt: ReasoningFormat) -> str:
    """The full prompt text for `question` (chat template when the model has one)."""
    messages = chat_messages(question, fmt)
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = messages[0]["content"] + "\n\n" if fmt.kind == "answer_marker" else ""
    return f"{system}Question: {question}\n"


def encode_prompt(tokenizer, question: str, fmt: ReasoningFormat) -> list[int]:
    if not question or not question.strip():
        raise ValueError("The prompt is empty: type a question first.")
    text = render_prompt(tokenizer, question, fmt)
    # The chat template already carries the special tokens it needs.
    return tokenizer(text, add_special_tokens=not tokenizer.chat_template)["input_ids"]
