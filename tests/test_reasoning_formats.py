"""Reasoning formats detected from the chat template text alone: Qwen3's enable_thinking switch, R1
distills that pre-open <think>, gpt-oss harmony channels, and a plain instruct model (no downloads:
representative template snippets on an in-memory byte-level tokenizer)."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.reasoning import (
    HARMONY_CLOSE, HARMONY_OPEN, PhaseTracker, ReasoningFormat, split_reasoning, token_phases,
)
from analysis.records import ANSWER, THINKING
from generation.prompting import chat_messages, detect_format, render_prompt
from tests.tiny_models import byte_tokenizer

# Abridged from Qwen3's tokenizer_config.json: chatml turns, the think-history split, and the switch.
QWEN3 = (
    "{%- for message in messages %}"
    "{%- set content = message.content %}"
    "{%- if message.role == 'assistant' and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
# Abridged from DeepSeek-R1-Distill-Qwen: the generation prompt opens <think> itself.
R1 = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)
# Abridged from gpt-oss: harmony system header naming the channels, then <|start|>assistant.
HARMONY = (
    "{{- '<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\\n"
    "Reasoning: medium\\n\\n# Valid channels: analysis, commentary, final. Channel must be included for "
    "every message.<|end|>' }}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' %}{{- '<|start|>developer<|message|># Instructions\\n\\n' + message.content + '<|end|>' }}"
    "{%- elif message.role == 'user' %}{{- '<|start|>user<|message|>' + message.content + '<|end|>' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|end|>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}"
)
# SmolLM2-style chatml without any thinking markup.
PLAIN = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizer(template: str, think_tokens: bool):
    tok = byte_tokenizer(("<think>", "</think>") if think_tokens else ())
    tok.chat_template = template
    return tok


def _phases_agree(pieces: list[str], fmt: ReasoningFormat) -> np.ndarray:
    """token_phases and the streaming PhaseTracker give the same phases."""
    offline = token_phases(pieces, fmt)
    tracker = PhaseTracker(fmt)
    streamed = [tracker.feed(p) for p in pieces]
    # The tracker marks the delimiter-completing token THINKING and switches after it, as token_phases does.
    assert list(offline) == streamed
    return offline


def test_qwen3_switch_is_detected_and_honoured():
    tok = _tokenizer(QWEN3, think_tokens=True)
    fmt = detect_format(tok)
    assert (fmt.kind, fmt.enable_thinking, fmt.starts_in_thinking, fmt.template) == ("think_tags", True, False, "qwen3")
    assert render_prompt(tok, "1+1?", fmt).endswith("<|im_start|>assistant\n")
    off = ReasoningFormat(**{**fmt.to_dict(), "enable_thinking": False})
    assert render_prompt(tok, "1+1?", off).endswith("<think>\n\n</think>\n\n")
    assert "switched off" in off.describe()
    # With thinking off, every output token is answer (also a stray tag later on).
    pieces = ["The", " answer", " is", " 2", ".", "</think>", " ok"]
    assert set(_phases_agree(pieces, off)) == {ANSWER}
    assert split_reasoning("".join(pieces), off) == ("", "The answer is 2.</think> ok")
    # On: ordinary think tags.
    on_pieces = ["<think>", "1+1", " is 2", "</think>", "\n\n2"]
    assert list(_phases_agree(on_pieces, fmt)) == [THINKING] * 4 + [ANSWER]
    assert split_reasoning("".join(on_pieces), fmt) == ("1+1 is 2", "2")


def test_r1_distill_preopens_think():
    tok = _tokenizer(R1, think_tokens=True)
    fmt = detect_format(tok)
    assert (fmt.kind, fmt.starts_in_thinking, fmt.enable_thinking, fmt.template) == ("think_tags", True, None, "r1")
    assert render_prompt(tok, "1+1?", fmt).endswith("<｜Assistant｜><think>\n")
    pieces = ["Okay", ", 1+1", " = 2", ".\n", "</think>", "\n\n", "**2**"]
    assert list(_phases_agree(pieces, fmt)) == [THINKING] * 5 + [ANSWER] * 2
    assert split_reasoning("".join(pieces), fmt) == ("Okay, 1+1 = 2.", "**2**")
    # Cut off inside thinking: all thinking, no answer (pre-opened, so no opening tag in the output).
    assert split_reasoning("Okay, let me think", fmt) == ("Okay, let me think", "")


def test_harmony_channels_split_analysis_from_final():
    tok = _tokenizer(HARMONY, think_tokens=False)
    fmt = detect_format(tok)
    assert (fmt.kind, fmt.open_tag, fmt.close_tag, fmt.template) == ("think_tags", HARMONY_OPEN, HARMONY_CLOSE,
                                                                      "harmony")
    assert "analysis channel" in fmt.describe()
    assert render_prompt(tok, "1+1?", fmt).endswith("<|start|>user<|message|>1+1?<|end|><|start|>assistant")
    pieces = ["<|channel|>", "analysis", "<|message|>", "User asks 1+1.", " That is 2.", "<|end|>", "<|start|>",
              "assistant", "<|channel|>", "final", "<|message|>", "2"]
    phases = _phases_agree(pieces, fmt)
    assert list(phases) == [THINKING] * 11 + [ANSWER]
    assert split_reasoning("".join(pieces), fmt) == ("User asks 1+1. That is 2.", "2")
    # The budget-forcing text closes the analysis channel and opens the final one.
    assert HARMONY_CLOSE in fmt.forced_end_text


def test_plain_instruct_model_gets_an_answer_marker():
    tok = _tokenizer(PLAIN, think_tokens=False)
    fmt = detect_format(tok)
    assert fmt == ReasoningFormat("answer_marker")
    assert "Answer:" in render_prompt(tok, "1+1?", fmt)  # the step-by-step system prompt names the marker


def test_tokens_alone_mean_think_tags():
    """A tokenizer that knows <think> but whose template never writes it still thinks in tags."""
    fmt = detect_format(_tokenizer(PLAIN, think_tokens=True))
    assert (fmt.kind, fmt.starts_in_thinking, fmt.enable_thinking, fmt.template) == ("think_tags", False, None, "")


def test_preset_system_prompt_reaches_the_chat():
    fmt = ReasoningFormat("think_tags", system_prompt="Put the final answer within \\boxed{}.")
    assert chat_messages("Q?", fmt)[0] == {"role": "system", "content": "Put the final answer within \\boxed{}."}
    marker = ReasoningFormat("answer_marker", system_prompt="Answers are integers.")
    system = chat_messages("Q?", marker)[0]["content"]
    assert "Answer: <answer>" in system and system.endswith("Answers are integers.")
    assert "Answers are integers." in render_prompt(_tokenizer(QWEN3, True), "Q?", marker)


@pytest.mark.parametrize("fmt", [
    ReasoningFormat("answer_marker"),
    ReasoningFormat("think_tags", starts_in_thinking=True),
    ReasoningFormat("think_tags", enable_thinking=False, template="qwen3", system_prompt="S"),
    ReasoningFormat("think_tags", HARMONY_OPEN, HARMONY_CLOSE, template="harmony"),
])
def test_format_round_trips_through_its_dict(fmt):
    assert ReasoningFormat(**fmt.to_dict()) == fmt


def test_older_stored_formats_keep_their_keys():
    """Traces stored before the new fields existed: the same five keys, nothing added."""
    assert set(ReasoningFormat("think_tags").to_dict()) == {"kind", "open_tag", "close_tag", "answer_marker",
                                                            "starts_in_thinking"}
    with pytest.raises(ValueError, match="enable_thinking"):
        ReasoningFormat("think_tags", enable_thinking="yes")
    with pytest.raises(ValueError, match="template family"):
        ReasoningFormat("think_tags", template="llama")
