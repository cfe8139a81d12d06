"""The one home of every `st.cache_*` in the app: models, storage config and immutable trace data."""
from __future__ import annotations

import streamlit as st

from generation.backends.openai_config import OpenAIConfig
from generation.embeddings import Embedder, load_embedder
from generation.models import LoadedModel, ModelSpec, load_model
from storage.config import StorageConfig
from storage.traces import StoredTrace, get_trace


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def cached_model(name: str, trust_remote_code: bool = False, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    # Two entries: the embedded model plus one other, so switching back and forth stays fast
    # without holding every model a user ever tried in memory.
    return load_model(ModelSpec(name=name, trust_remote_code=trust_remote_code, device=device, dtype=dtype))


@st.cache_resource(max_entries=1, show_spinner="Loading the sentence embedder…")
def cached_embedder(model_path: str | None = None) -> Embedder:
    # Step loops and answer clusters: all-MiniLM-L6-v2 on the CPU, loaded once per process.
    return load_embedder(model_path)


@st.cache_resource(max_entries=4, show_spinner="Connecting to the server…")
def cached_server_backend(config: OpenAIConfig):
    # One client per server settings: its connection pool is reused across reruns.
    from generation.backends.openai_compat import OpenAIBackend  # imports torch: only when a server is used

    return OpenAIBackend(config)


@st.cache_resource
def storage_config() -> StorageConfig:
    return StorageConfig.from_env()


@st.cache_data(max_entries=64, show_spinner=False)
def cached_trace(config: StorageConfig, trace_id: int) -> StoredTrace | None:
    # Stored traces never change, so caching by (database, id) is safe.
    return get_trace(config, trace_id)


@st.cache_data(max_entries=16, show_spinner="Solving the per-prompt oracle…")
def cached_oracle(accuracy_pb, cost_pb, n_bootstrap: int = 1000):
    # Keyed by the arrays themselves: a set sweep that gains cells gets a new entry, an unchanged one
    # is not solved again (the bootstrap re-solves the knapsack 1,000 times).
    from analysis.budget_oracle import OracleSettings, exact_frontier, lagrangian_frontier, tokens_saved

    return (exact_frontier(accuracy_pb, cost_pb), lagrangian_frontier(accuracy_pb, cost_pb),
            tokens_saved(accuracy_pb, cost_pb, OracleSettings(n_bootstrap=n_bootstrap)))


@st.cache_resource(max_entries=1, show_spinner="Loading the process reward model…")
def cached_prm(spec: str):
    # One PRM at a time (they are large); keyed by its prm:<path> spec.
    from generation.prm import PRMConfig, load_prm

    return load_prm(PRMConfig.from_spec(spec))
