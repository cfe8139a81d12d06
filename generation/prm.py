"""Process reward models: a probability per reasoning step, for step search and best-of-N
(docs/METHODS.md §10).

Two styles, told apart by the model's head (or chosen):
- "qwen" (Qwen2.5-Math-PRM): a token-classification model over the chat (system, question, the
  steps joined and ended by the separator `<extra_0>`); a step's score is the probability of the
  positive class (label 1) at its separator.
- "rlhflow" (RLHFlow PRMs): a causal LM over a conversation where the first user turn is the
  question and the first step, each later user turn one step, and each assistant turn "+"; a step's
  score is P("+") / (P("+") + P("-")) for the assistant token after that step's turn.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.records import TraceRecord
from analysis.steps import split_steps

STYLES = ("auto", "qwen", "rlhflow")
QWEN_SEPARATOR = "<extra_0>"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class PRMError(ValueError):
    """A PRM that cannot be loaded or used: the message says why."""


@dataclass(frozen=True)
class PRMConfig:
    path: str  # hub id or local directory
    style: str = "auto"
    device: str = "cpu"
    max_length_tokens: int = 4096  # longer inputs keep their end (the newest steps)
    trust_remote_code: bool = False  # Qwen2.5-Math-PRM ships its own model class

    def __post_init__(self) -> None:
        if not self.path or not self.path.strip():
            raise PRMError("the PRM path is empty: give a hub id or a directory, e.g. prm:Qwen/Qwen2.5-Math-PRM-7B")
        if self.style not in STYLES:
            raise PRMError(f"PRM style must be one of {', '.join(STYLES)}, not {self.style!r}")
        if self.max_length_tokens < 16:
            raise PRMError("max_length_tokens must be at least 16")

    @staticmethod
    def from_spec(spec: str, **kwargs) -> "PRMConfig":
        """`prm:<hub id or directory>` as typed on the CLI or in the app."""
        if not spec.startswith("prm:"):
            raise PRMError(f"a scorer is `self_certainty` or `prm:<hub id or directory>`, not {spec!r}")
        return PRMConfig(spec[4:].strip(), **kwargs)


class ProcessRewardModel:
    def __init__(self, config: PRMConfig, model, tokenizer, style: str):
        self.config, self.model, self.tokenizer, self.style = config, model, tokenizer, style
        self.name = f"prm:{config.path}"
        if style == "qwen":
            ids = tokenizer.convert_tokens_to_ids(QWEN_SEPARATOR)
            if ids is None or ids == tokenizer.unk_token_id:
                raise PRMError(f"{config.path}: a Qwen-style PRM needs the separator token {QWEN_SEPARATOR!r} "
                               "in its tokenizer")
            self.separator_id = int(ids)
        else:
            plus, minus = (tokenizer.encode(t, add_special_tokens=False) for t in ("+", "-"))
            if len(plus) != 1 or len(minus) != 1:
                raise PRMError(f"{config.path}: an RLHFlow-style PRM needs '+' and '-' to be single tokens")
            self.plus_id, self.minus_id = plus[0], minus[0]

    @torch.inference_mode()
    def score_steps(self, prompt: str, steps: Sequence[str]) -> list[float]:
        """One probability in [0, 1] per step, in order."""
        steps = [s.strip() for s in steps if s and s.strip()]
        if not steps:
            return []
        return self._qwen(prompt, steps) if self.style == "qwen" else self._rlhflow(prompt, steps)

    def _ids(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[:, -self.config.max_length_tokens:]
        return ids.to(self.model.device)

    def _chat(self, messages: list[dict], add_generation_prompt: bool) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + ("assistant: " if add_generation_prompt else "")

    def _qwen(self, prompt: str, steps: list[str]) -> list[float]:
        answer = QWEN_SEPARATOR.join(steps) + QWEN_SEPARATOR
        text = self._chat([{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": prompt},
                           {"role": "assistant", "content": answer}], add_generation_prompt=False)
        ids = self._ids(text)
        out = self.model(input_ids=ids)
        logits_t2 = (out.logits if hasattr(out, "logits") else out[0])[0].float()  # [tokens, 2]
        positions = (ids[0] == self.separator_id).nonzero().flatten()
        probs = torch.softmax(logits_t2[positions], dim=-1)[:, 1]
        scores = probs.tolist()
        # Separators cut off by max_length (the oldest steps) have no score: the newest are kept.
        return [math.nan] * (len(steps) - len(scores)) + scores[-len(steps):]

    def _rlhflow(self, prompt: str, steps: list[str]) -> list[float]:
        scores = []
        messages: list[dict] = []
        for k, step in enumerate(steps):
            messages.append({"role": "user", "content": f"{prompt} {step}" if k == 0 else step})
            ids = self._ids(self._chat(messages, add_generation_prompt=True))
            logits_v = self.model(input_ids=ids).logits[0, -1].float()
            pair = torch.softmax(logits_v[[self.plus_id, self.minus_id]], dim=-1)
            scores.append(float(pair[0]))
            messages.append({"role": "assistant", "content": "+"})
        return scores


def load_prm(config: PRMConfig) -> ProcessRewardModel:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

    local = Path(config.path).expanduser()
    where = str(local) if local.exists() else config.path
    try:
        model_config = AutoConfig.from_pretrained(where, trust_remote_code=config.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PRMError(f"cannot load the PRM {config.path!r}: {str(exc).splitlines()[0]}") from None
    archs = " ".join(model_config.architectures or [])
    style = config.style
    if style == "auto":
        style = "qwen" if ("TokenClassification" in archs or "ProcessRewardModel" in archs) else "rlhflow"
    try:
        if style == "rlhflow":
            model = AutoModelForCausalLM.from_pretrained(where, trust_remote_code=config.trust_remote_code)
        elif "TokenClassification" in archs:
            model = AutoModelForTokenClassification.from_pretrained(where)
        else:  # Qwen2ForProcessRewardModel: its own class, returns per-token logits first
            model = AutoModel.from_pretrained(where, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PRMError(f"cannot load the PRM {config.path!r} as a {style}-style PRM: {str(exc).splitlines()[0]}") from None
    model.to(config.device).eval()
    return ProcessRewardModel(config, model, tokenizer, style)


def record_steps(record: TraceRecord) -> list[str]:
    """A finished trace's reasoning as PRM steps: its thinking's steps (blank-line paragraphs, else
    sentences; analysis/steps.py), then the answer as the last step."""
    steps = [s.text for s in split_steps(record.thinking_text or "", "paragraph")]
    if len(steps) <= 1:
        steps = [s.text for s in split_steps(record.thinking_text or "", "sentence")]
    return steps + ([record.answer_text] if (record.answer_text or "").strip() else [])
