"""The shared prompt-set picker: a stored set, or a new one loaded from a preset, the hub or a file.

Loading (the hub, a large Parquet file) runs only when the user presses *Load and store*; every
other rerun reads the stored set back from DuckDB. Pages call `prompt_set_picker()` and get the
prompts, the preset (system prompt and answer format) and a label for the runs' prompt source.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from generation.prompt_sets import PRESETS, Preset, PromptSetError, PromptSource, load_prompt_set
from storage.errors import StorageError
from storage.prompt_sets import PromptRow, get_prompt_set, list_prompt_sets, save_prompt_set
from ui.resources import storage_config

_NEW = "Load a new prompt set…"


def prompt_set_picker(key: str = "prompt_set") -> tuple[list[PromptRow], Preset | None, str] | None:
    """(prompts, preset or None, label) of the chosen stored set, or None while none is chosen."""
    config = storage_config()
    names = [info.name for info in list_prompt_sets(config)]
    pending = st.session_state.pop(f"{key}::pending", None)
    if pending in names:  # just stored: selected before the widget exists (Streamlit forbids it after)
        st.session_state[f"{key}::choice"] = pending
    choice = st.selectbox("Prompt set", names + [_NEW], key=f"{key}::choice")
    if choice == _NEW:
        _load_form(key)
        return None
    limit = st.number_input("Prompts (first N; 0 = all)", 0, 100_000, 0, key=f"{key}::limit")
    found = get_prompt_set(config, choice, int(limit) or None)
    if found is None:  # deleted by another session since the list was read
        st.warning(f"The prompt set {choice!r} is no longer stored.")
        return None
    info, rows = found
    preset = PRESETS.get(info.preset or "")
    st.caption(f"{len(rows)} of {info.n_items} prompts from {info.source}"
               + (f" · preset {preset.title}" if preset else " · no preset: answers graded by the default rules"))
    return rows, preset, f"set:{info.name}"


def _load_form(key: str) -> None:
    with st.form(f"{key}::load"):
        source = st.text_input("Source", placeholder="gsm8k, math500, aime2024, aime2025, hf:ID:CONFIG:SPLIT",
                               key=f"{key}::source", help="Or upload a JSONL, CSV or Parquet file below.")
        upload = st.file_uploader("…or a file", type=["jsonl", "json", "csv", "parquet"], key=f"{key}::file")
        c1, c2, c3 = st.columns(3)
        preset = c1.selectbox("Preset", ["(none)"] + list(PRESETS), key=f"{key}::preset")
        field = c2.text_input("Prompt field", key=f"{key}::field", placeholder="from the preset, or question…")
        answer_field = c3.text_input("Answer field", key=f"{key}::answer_field", placeholder="answer…")
        limit = st.number_input("Only the first N prompts (0 = all)", 0, 100_000, 0, key=f"{key}::load_limit")
        name = st.text_input("Store as", key=f"{key}::name", placeholder="default: e.g. gsm8k-test")
        if not st.form_submit_button("Load and store"):
            return
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec = source.strip()
            if upload is not None:
                spec = str(Path(tmp) / Path(upload.name).name)
                Path(spec).write_bytes(upload.getvalue())
            with st.spinner("Loading the prompt set…"):
                loaded = load_prompt_set(PromptSource(spec, None if preset == "(none)" else preset,
                                                      field.strip() or None, answer_field.strip() or None,
                                                      int(limit) or None))
        stored_name = name.strip() or loaded.name
        source_label = f"upload:{upload.name}" if upload is not None else loaded.source
        save_prompt_set(storage_config(), stored_name, source_label, loaded.rows,
                        loaded.preset.name if loaded.preset else None, loaded.fields)
    except (PromptSetError, StorageError) as exc:
        st.error(str(exc))
        return
    st.session_state[f"{key}::pending"] = stored_name
    st.rerun()
