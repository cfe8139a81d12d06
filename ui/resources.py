"""The one home of every `st.cache_*` in the app: models, storage config and immutable trace data."""
from __future__ import annotations

import streamlit as st

from generation.models import LoadedModel, ModelSpec, load_model
from storage.config import StorageConfig
from storage.traces import StoredTrace, get_trace


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def cached_model(name: str, trust_remote_code: bool = False) -> LoadedModel:
    # Two entries: the embedded model plus one other, so switching back and forth stays fast
    # without holding every model a user ever tried in memory.
    return load_model(ModelSpec(name=name, trust_remote_code=trust_remote_code))


@st.cache_resource
def storage_config() -> StorageConfig:
    return StorageConfig.from_env()


@st.cache_data(max_entries=64, show_spinner=False)
def cached_trace(config: StorageConfig, trace_id: int) -> StoredTrace | None:
    # Stored traces never change, so caching by (database, id) is safe.
    return get_trace(config, trace_id)
