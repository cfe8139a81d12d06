"""Prompt sets: GSM8K, MATH-500, AIME 2024/2025, any Hugging Face dataset, and local JSONL/CSV/Parquet.

One loader for every command and page that takes prompts (`cli.py run --prompts`, `cli.py sweep
--prompts`, ui/prompt_set_picker.py):

- `hf:ID[:CONFIG[:SPLIT]]` loads through the `datasets` library (`hf:openai/gsm8k:main:test`);
- a preset name alone (`gsm8k`, `math500`, `aime2024`, `aime2025`) loads that preset's hub set;
- a path ending in .jsonl/.ndjson, .json (an array of objects), .csv or .parquet is read here.

A preset carries where its set lives, which fields hold the problem and the reference, how the
reference is cleaned (GSM8K: the number after "####"), the instruction appended to each problem,
its system prompt, its answer format (\\boxed{} or a final number) and its grading (extraction
settings for analysis/answers.py, docs/METHODS.md §7). Without a preset, `field` / `answer_field`
name the fields; unset, the usual names are tried (prompt, question, problem, ...).

Hub ids and schemas of the presets (as published on the hub; the tests write files of the same shape):
- gsm8k: openai/gsm8k, config main, split test; question, answer ("...reasoning...\\n#### 72").
- math500: HuggingFaceH4/MATH-500, split test; problem, solution, answer (LaTeX), subject, level, unique_id.
- aime2024: HuggingFaceH4/aime_2024, split train; id, problem, solution, answer (string), url, year.
- aime2025: MathArena/aime_2025, split train; problem_idx, problem, answer (int64). Assumed from
  MathArena's other AIME sets (aime_2024_I, aime_2026: same three fields); `hf:ID --field
  --answer-field --preset aime2025` loads another copy (e.g. opencompass/AIME2025, field question).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from analysis.answers import ExtractionSettings, extract_answer, extraction_for, grade
from analysis.reasoning import ReasoningFormat
from storage.prompt_sets import PromptRow

# The fields tried when none is named: the same names the records importer knows.
_PROMPT_FIELDS = ("prompt", "question", "problem", "input", "instruction", "Problem", "Question")
_ANSWER_FIELDS = ("answer", "reference_answer", "reference", "gold", "ground_truth", "final_answer", "Answer")
# Source-row fields worth keeping with a stored prompt (where it came from, its difficulty).
_META_FIELDS = ("id", "ID", "unique_id", "problem_idx", "level", "subject", "year", "url")
_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
_BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class PromptSetError(ValueError):
    """A prompt set could not be loaded; the message says why and what to do. Nothing was stored."""


@dataclass(frozen=True)
class Preset:
    """A benchmark's source, schema, prompt and grading conventions."""

    name: str
    title: str
    hub_id: str
    config: str | None
    split: str
    prompt_field: str
    answer_field: str
    answer_format: str  # "boxed": \boxed{...}; "number": a final number
    instruction: str  # appended to each problem, after a blank line
    system_prompt: str  # added to the chat's system turn (generation/prompting.py chat_messages)
    after_hashes: bool = False  # the reference is the text after the last "####" (GSM8K)

    def __post_init__(self) -> None:
        if self.answer_format not in ("boxed", "number"):
            raise ValueError(f"answer_format must be 'boxed' or 'number', not {self.answer_format!r}")

    @property
    def source(self) -> str:
        return f"hf:{self.hub_id}:{self.config or ''}:{self.split}"

    @property
    def extraction(self) -> ExtractionSettings:
        """\\boxed{} answers: no last-number fallback (a stray number is not a boxed answer)."""
        return extraction_for(self.answer_format)

    def apply(self, fmt: ReasoningFormat) -> ReasoningFormat:
        """`fmt` with this preset's system prompt and answer format: every trace generated with it
        (streamed, batched, remote) is extracted and graded the preset's way, and its stored
        settings say so (docs/METHODS.md §7)."""
        return dataclasses.replace(fmt, system_prompt=self.system_prompt, answer_format=self.answer_format)

    def reference(self, raw: object) -> str | None:
        if raw is None:
            return None
        text = str(raw).strip()
        if self.after_hashes:
            if "####" not in text:
                return None
            text = text.rsplit("####", 1)[1].strip().replace(",", "")
        return text or None

    def grade_response(self, answer_text: str, thinking_text: str, reference: str | None) -> bool | None:
        """The preset's grading of one response: its extraction, then equivalence (docs/METHODS.md §7)."""
        return grade(extract_answer(answer_text, thinking_text, self.extraction), reference)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("gsm8k", "GSM8K (grade-school math, final number)", "openai/gsm8k", "main", "test", "question",
               "answer", "number",
               "Please reason step by step, and give the final answer as a single number on the last line.",
               "You solve grade-school math word problems. The final answer is a single number.",
               after_hashes=True),
        Preset("math500", "MATH-500 (competition math, \\boxed{})", "HuggingFaceH4/MATH-500", None, "test", "problem",
               "answer", "boxed", _BOXED_INSTRUCTION,
               "You solve competition mathematics problems. Put the final answer within \\boxed{}."),
        Preset("aime2024", "AIME 2024 (integer answers 0-999, \\boxed{})", "HuggingFaceH4/aime_2024", None, "train",
               "problem", "answer", "boxed", _BOXED_INSTRUCTION,
               "You solve AIME problems; each answer is an integer from 0 to 999. Put it within \\boxed{}."),
        Preset("aime2025", "AIME 2025 (integer answers 0-999, \\boxed{})", "MathArena/aime_2025", None, "train",
               "problem", "answer", "boxed", _BOXED_INSTRUCTION,
               "You solve AIME problems; each answer is an integer from 0 to 999. Put it within \\boxed{}."),
    )
}


@dataclass(frozen=True)
class PromptSource:
    """What to load: `spec` is `hf:ID[:CONFIG[:SPLIT]]`, a preset name, or a file path."""

    spec: str
    preset: str | None = None
    field: str | None = None  # the prompt's field (default: the preset's, else the usual names)
    answer_field: str | None = None  # the reference's field ("" for none)
    limit: int | None = None  # the first `limit` rows, in source order

    def __post_init__(self) -> None:
        if not self.spec or not self.spec.strip():
            raise PromptSetError("No prompts given: pass a file (JSONL, CSV, Parquet), hf:ID[:CONFIG[:SPLIT]] "
                                 f"or a preset ({', '.join(PRESETS)}).")
        if self.preset is not None and self.preset not in PRESETS:
            raise PromptSetError(f"Unknown preset {self.preset!r}; presets are {', '.join(PRESETS)}.")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise PromptSetError(f"--limit must be at least 1, got {self.limit}.")

    @property
    def kind(self) -> str:
        if self.spec.startswith("hf:"):
            return "hub"
        if self.spec in PRESETS:
            return "preset"
        return "file"


@dataclass(frozen=True)
class LoadedPromptSet:
    name: str  # a default name for storing it
    source: str  # "hf:openai/gsm8k:main:test" or "file:/abs/path.parquet"
    preset: Preset | None
    fields: dict  # {"prompt": field, "answer": field or None}
    rows: list[PromptRow] = field(default_factory=list)


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`hf:ID[:CONFIG[:SPLIT]]` as (id, config or None, split or None)."""
    parts = spec[3:].split(":")
    if len(parts) > 3 or not parts[0]:
        raise PromptSetError(f"{spec!r} must look like hf:ID[:CONFIG[:SPLIT]], e.g. hf:openai/gsm8k:main:test.")
    hub_id, config, split = (parts + [None, None])[:3]
    if not _HUB_ID.match(hub_id):
        raise PromptSetError(f"{hub_id!r} is not a Hugging Face dataset id (owner/name).")
    return hub_id, config or None, split or None


def load_prompt_set(source: PromptSource) -> LoadedPromptSet:
    """The rows of `source`, each with its prompt text and reference, or PromptSetError."""
    preset = PRESETS.get(source.preset) if source.preset else None
    if source.kind == "preset":
        preset = preset or PRESETS[source.spec]
        source = PromptSource(preset.source, preset.name, source.field, source.answer_field, source.limit)
    if source.kind == "hub":
        hub_id, config, split = parse_hub_spec(source.spec)
        if preset is None:  # hf:openai/gsm8k... is GSM8K: its preset applies unless another is named
            preset = next((p for p in PRESETS.values() if p.hub_id.lower() == hub_id.lower()), None)
        if preset is not None and preset.hub_id.lower() == hub_id.lower():
            config = config or preset.config
            split = split or preset.split
        split = split or "train"
        label = f"hf:{hub_id}:{config or ''}:{split}"
        records = [(f"row {i}", r) for i, r in enumerate(_hub_rows(hub_id, config, split, source.limit))]
        name = f"{preset.name if preset else hub_id.split('/')[-1]}-{split}"
    else:
        path = Path(source.spec).expanduser()
        records = _file_rows(path, source.limit)
        label = f"file:{path.resolve()}"
        name = path.stem
    if source.limit is not None:
        records = records[: source.limit]
    if not records:
        raise PromptSetError(f"{source.spec} holds no prompts.")
    prompt_field, answer_field = _fields(source, preset, records[0][1], source.spec)
    rows = [_row(where, rec, prompt_field, answer_field, preset, source.spec) for where, rec in records]
    return LoadedPromptSet(name, label, preset, {"prompt": prompt_field, "answer": answer_field}, rows)


def _fields(source: PromptSource, preset: Preset | None, first: dict, spec: str) -> tuple[str, str | None]:
    keys = list(first)
    if source.field:
        prompt_field = source.field
    elif preset is not None and preset.prompt_field in first:
        prompt_field = preset.prompt_field
    else:
        prompt_field = next((f for f in _PROMPT_FIELDS if f in first), None)
    if prompt_field is None or prompt_field not in first:
        wanted = f"no field {prompt_field!r}" if prompt_field else "no prompt field (prompt, question, problem, ...)"
        raise PromptSetError(f"{spec} has {wanted}; its fields are {', '.join(map(str, keys)) or 'none'}. "
                             "Name the prompt's field with --field NAME.")
    if source.answer_field == "":
        return prompt_field, None
    if source.answer_field:
        if source.answer_field not in first:
            raise PromptSetError(f"{spec} has no field {source.answer_field!r}; its fields are {', '.join(keys)}.")
        return prompt_field, source.answer_field
    if preset is not None and preset.answer_field in first:
        return prompt_field, preset.answer_field
    return prompt_field, next((f for f in _ANSWER_FIELDS if f in first and f != prompt_field), None)


def _row(where: str, rec: dict, prompt_field: str, answer_field: str | None, preset: Preset | None,
         spec: str) -> PromptRow:
    value = rec.get(prompt_field)
    if not isinstance(value, str) or not value.strip():
        raise PromptSetError(f"{spec}, {where}: each row needs a non-empty {prompt_field!r}.")
    prompt = value.strip()
    if preset is not None and preset.instruction:
        prompt = f"{prompt}\n\n{preset.instruction}"
    raw = rec.get(answer_field) if answer_field else None
    if preset is not None:
        reference = preset.reference(raw)
        if raw is not None and reference is None:
            raise PromptSetError(f"{spec}, {where}: the {preset.name} answer field {answer_field!r} holds no "
                                 f"answer{' after ####' if preset.after_hashes else ''}.")
    else:
        reference = None if raw is None or not str(raw).strip() else str(raw).strip()
    meta = {k: rec[k] for k in _META_FIELDS if k in rec and isinstance(rec[k], (str, int, float))}
    return PromptRow(prompt, reference, meta)


def _file_rows(path: Path, limit: int | None) -> list[tuple[str, dict]]:
    suffix = path.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        raise PromptSetError(f"{path}: unknown prompt file type {suffix or '(none)'!r}; use .jsonl, .json, .csv or "
                             f".parquet, hf:ID[:CONFIG[:SPLIT]], or a preset ({', '.join(PRESETS)}).")
    if not path.is_file():
        raise PromptSetError(f"{path}: no such file.")
    try:
        if suffix in (".jsonl", ".ndjson"):
            return _jsonl_rows(path, limit)
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise PromptSetError(f"{path}: a .json prompt file must hold an array of objects.")
            return [(f"record {i + 1}", r) for i, r in enumerate(data)]
        if suffix == ".csv":
            with path.open(encoding="utf-8-sig", newline="") as fh:
                return [(f"row {i + 2}", r) for i, r in enumerate(csv.DictReader(fh))]  # row 1 is the header
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if limit is not None:
            table = table.slice(0, limit)
        return [(f"row {i}", r) for i, r in enumerate(table.to_pylist())]
    except PromptSetError:
        raise
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"{path}: invalid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise PromptSetError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise PromptSetError(f"{path}: cannot read it: {exc}") from None


def _jsonl_rows(path: Path, limit: int | None) -> list[tuple[str, dict]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:  # exc names line 1: each line is parsed alone
                from storage.importers.source import describe_json_error

                raise PromptSetError(f"{path}, line {lineno}: invalid JSON ({describe_json_error(exc, line)})") from None
            if not isinstance(obj, dict):
                raise PromptSetError(f"{path}, line {lineno}: each line must be a JSON object with a prompt field.")
            rows.append((f"line {lineno}", obj))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _hub_rows(hub_id: str, config: str | None, split: str, limit: int | None) -> list[dict]:
    # The same probe as for models: without network datasets would retry for minutes.
    from generation.models import hub_offline

    if hub_offline():
        raise PromptSetError(
            f"Dataset {hub_id!r} cannot be loaded: the Hugging Face hub cannot be reached from this machine "
            "(or HF_HUB_OFFLINE=1). Where you have network, save it as a file, e.g. "
            f"`datasets.load_dataset({hub_id!r}{', ' + repr(config) if config else ''}, split={split!r})"
            ".to_parquet('set.parquet')`, and pass --prompts set.parquet (with --preset NAME if one applies)."
        )
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split if limit is None else f"{split}[:{limit}]")
    except Exception as exc:  # datasets raises many kinds (missing config, split, repo): say which set
        raise PromptSetError(f"Could not load {hub_id} (config {config or 'default'}, split {split}): {exc}") from exc
    return [dict(r) for r in ds]
