"""Shared input widgets: model picker, sampling settings, reasoning-format settings."""
from __future__ import annotations

import streamlit as st

from analysis.reasoning import ReasoningFormat
from generation.backends import Backend
from generation.backends.openai_config import DEFAULT_API_KEY_ENV, OpenAIConfig, RemoteError
from generation.decoding import SamplingConfig
from generation.models import DTYPE_CHOICES, EMBEDDED_MODEL, LoadedModel, ModelLoadError
from generation.prompting import detect_format
from ui.resources import cached_model, cached_server_backend

_OTHER = "Other (Hugging Face id or local directory)…"
_BACKENDS = {"local": "Local model (transformers)", "openai": "OpenAI-compatible server (vLLM, SGLang, …)"}


def model_picker() -> tuple[str | None, bool]:
    """(model name or None when the user has not typed one yet, trust_remote_code)."""
    choice = st.selectbox("Model", [EMBEDDED_MODEL, _OTHER], key="model_choice")
    if choice == EMBEDDED_MODEL:
        return EMBEDDED_MODEL, False
    name = st.text_input("Model id or directory", key="model_other", placeholder="Qwen/Qwen3-0.6B or /models/my-model")
    trust = st.checkbox(
        "Trust remote code", key="trust_remote_code", help="Runs Python code shipped with the model. Only for authors you trust."
    )
    return (name.strip() or None), trust


def device_settings() -> tuple[str, str]:
    """(device, dtype) for a local model; "auto" picks a GPU when there is one (generation/models.py)."""
    left, right = st.columns(2)
    device = left.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="model_device",
                            help="auto: a CUDA GPU, else Apple MPS, else the CPU. A device this machine lacks is refused.")
    dtype = right.selectbox("Precision", list(DTYPE_CHOICES), key="model_dtype",
                            help="auto: bfloat16 on GPUs that support it, float32 on the CPU.")
    return device, dtype


def sampling_settings() -> SamplingConfig | None:
    """The sampling settings, or None (with an error shown) when they are invalid."""
    c1, c2, c3, c4, c5 = st.columns(5)
    temperature = c1.number_input("Temperature", 0.0, 2.0, 0.7, 0.1, key="temperature", help="0 = greedy")
    top_p = c2.number_input("Top-p", 0.05, 1.0, 0.95, 0.05, key="top_p")
    max_thinking = c3.number_input(
        "Max thinking tokens", 1, 32768, 256, 32, key="max_thinking",
        help="When thinking reaches this, its end is forced and the model answers (s1 budget forcing).",
    )
    max_answer = c4.number_input("Max answer tokens", 1, 8192, 96, 16, key="max_answer")
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, 1, key="seed")
    try:
        return SamplingConfig(float(temperature), float(top_p), int(max_thinking), int(max_answer), int(seed))
    except ValueError as exc:
        st.error(str(exc))
        return None


def format_settings(detected: ReasoningFormat, model_key: str) -> ReasoningFormat | None:
    """Where thinking ends and the answer starts: detected per model, editable by the user."""
    kinds = ["answer_marker", "think_tags"]
    with st.expander(f"Thinking / answer split: {detected.describe()}"):
        kind = st.radio(
            "Format", kinds, index=kinds.index(detected.kind), horizontal=True, key=f"fmt_kind::{model_key}",
            format_func={"answer_marker": "Answer marker (plain instruct model)", "think_tags": "<think> tags"}.get,
        )
        if kind == "answer_marker":
            marker = st.text_input("Answer marker", detected.answer_marker, key=f"fmt_marker::{model_key}")
            values = dict(kind=kind, answer_marker=marker)
        else:
            c1, c2 = st.columns(2)
            open_tag = c1.text_input("Opening tag", detected.open_tag, key=f"fmt_open::{model_key}")
            close_tag = c2.text_input("Closing tag", detected.close_tag, key=f"fmt_close::{model_key}")
            preopened = st.checkbox(
                "Chat template pre-opens the thinking block", detected.starts_in_thinking, key=f"fmt_pre::{model_key}"
            )
            values = dict(kind=kind, open_tag=open_tag, close_tag=close_tag, starts_in_thinking=preopened,
                          template=detected.template)
            if detected.enable_thinking is not None:  # Qwen3-style switch in the chat template
                values["enable_thinking"] = st.checkbox("Thinking on (the template's enable_thinking)",
                                                        detected.enable_thinking, key=f"fmt_think::{model_key}")
    try:
        return ReasoningFormat(**values)
    except ValueError as exc:
        st.error(str(exc))
        return None


def server_settings() -> OpenAIConfig | None:
    """Where the server is; None (with a message) until the settings are complete and valid."""
    c1, c2 = st.columns(2)
    url = c1.text_input("Base URL", key="server_url", placeholder="http://gpu-box:8000/v1")
    model = c2.text_input("Model name", key="server_model", placeholder="empty: the first model the server lists")
    c3, c4, c5 = st.columns(3)
    key_env = c3.text_input(
        "API key variable", DEFAULT_API_KEY_ENV, key="server_key_env",
        help="The NAME of the environment variable that holds the key, set where ThinkScope runs. "
             "The key itself is never asked for, shown or stored.",
    )
    concurrency = c4.number_input("Concurrent requests", 1, 256, 4, key="server_concurrency",
                                  help="Samples of strategies and sweeps in flight at once.")
    template = c5.text_input(
        "Template tokenizer (optional)", key="server_template", placeholder="Qwen/Qwen3-0.6B or a directory",
        help="A local copy of the served model's tokenizer. Its chat template renders prompts for "
             "/v1/completions, so generations can be continued: budget forcing then works through the server.",
    )
    if not url.strip():
        st.info("Type the server's base URL, e.g. http://localhost:8000/v1.")
        return None
    try:
        return OpenAIConfig(url.strip(), model, key_env.strip(), int(concurrency), template=template.strip() or None)
    except ValueError as exc:
        st.error(str(exc))
        return None


def _server_backend() -> Backend:
    config = server_settings()
    if config is None:
        st.stop()
    try:
        backend = cached_server_backend(config)
    except (RemoteError, ModelLoadError) as exc:
        st.error(str(exc))
        st.stop()
    caps = backend.capabilities
    st.caption(f"Model **{backend.name}** · log-probabilities when the server sends them · budget forcing "
               f"{'through /v1/completions' if caps.budget_forcing else 'unavailable (no template tokenizer)'} · "
               "self-certainty, DeepConf and step search need the local backend")
    return backend


def model_and_format() -> tuple[LoadedModel | Backend, ReasoningFormat | None]:
    """The picked model (or server backend), ready (or the page stops with a message), and its
    editable reasoning format."""
    kind = st.radio("Backend", list(_BACKENDS), format_func=_BACKENDS.get, horizontal=True, key="backend_kind")
    if kind == "openai":
        backend = _server_backend()
        return backend, format_settings(backend.default_format(), model_key=f"server::{backend.name}")
    name, trust = model_picker()
    if name is None:
        st.info("Type a Hugging Face model id or a local model directory.")
        st.stop()
    device, dtype = device_settings()
    try:
        loaded = cached_model(name, trust, device, dtype)
    except ModelLoadError as exc:
        st.error(str(exc))
        st.stop()
    return loaded, format_settings(detect_format(loaded.tokenizer), model_key=name)
