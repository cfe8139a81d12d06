"""Import / export page: upload a trace file into the database, download traces as JSONL or Parquet.

The logic functions (store_upload, export_jsonl_bytes, export_parquet_zip) take plain values and
are tested without a browser; the *_section functions draw the widgets.
"""
from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import streamlit as st

from storage.annotations import export_annotations_jsonl
from storage.config import StorageConfig
from storage.errors import StorageError
from storage.filters import CORRECT_CHOICES, TraceFilter
from storage.importers import FORMAT_LABELS, ImportResult, import_file
from storage.jsonl import export_jsonl
from storage.parquet_export import export_parquet, matching_trace_ids
from storage.traces import count_traces, list_models
from ui.resources import cached_trace
from ui.tables import md_text

_CHUNK = 1 << 20  # bytes copied at a time from the upload to a temporary file


@dataclass(frozen=True)
class ImportOutcome:
    """What the page shows after an import: a success with counts, or the error message."""

    result: ImportResult | None
    error: str | None
    file_name: str

    @property
    def message(self) -> str:
        if self.result is None:
            return self.error or "Import failed."
        return f"Imported {self.file_name} ({FORMAT_LABELS[self.result.format]}): {self.result.summary()}."


def store_upload(
    config: StorageConfig, upload: BinaryIO, file_name: str, fmt: str = "auto",
    progress: Callable[[float], None] | None = None, mapping: str = "", allow_duplicates: bool = False,
) -> ImportOutcome:
    """Copy an uploaded file to a temporary file (keeping its name for messages) and import it.

    mapping: records field names ("prompt=question,response=output"); allow_duplicates: store
    traces the database already holds again."""
    work = Path(tempfile.mkdtemp(prefix="thinkscope-upload-"))
    # Only the base name is kept: the browser's file name is untrusted.
    path = work / (Path(file_name).name or "upload")
    try:
        with open(path, "wb") as out:
            shutil.copyfileobj(upload, out, _CHUNK)
        report = (lambda done, total: progress(min(1.0, done / max(total, 1)))) if progress else None
        result = import_file(config, path, fmt, progress=report, mapping=mapping.strip() or None,
                             allow_duplicates=allow_duplicates)
    except (StorageError, OSError) as exc:
        return ImportOutcome(None, str(exc), path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cached_trace.clear()  # ids that did not exist before may exist now
    return ImportOutcome(result, None, path.name)


def _written_bytes(write: Callable[[Path], object], name: str) -> bytes:
    """What `write(path)` puts in a file, via a temporary directory that is always removed."""
    work = Path(tempfile.mkdtemp(prefix="thinkscope-export-"))
    try:
        write(work / name)
        return (work / name).read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_jsonl_bytes(config: StorageConfig, filt: TraceFilter) -> bytes:
    """The traces matching filt as ThinkScope JSONL."""
    return _written_bytes(lambda path: export_jsonl(config, path, matching_trace_ids(config, filt)), "traces.jsonl")


def export_annotations_bytes(config: StorageConfig) -> bytes:
    """Every annotation version as JSONL (storage.annotations.export_annotations_jsonl)."""
    return _written_bytes(lambda path: export_annotations_jsonl(config, path), "annotations.jsonl")


def export_parquet_zip(config: StorageConfig, filt: TraceFilter) -> bytes:
    """A zip holding traces.parquet and tokens.parquet for the traces matching filt."""
    work = Path(tempfile.mkdtemp(prefix="thinkscope-export-"))
    try:
        done = export_parquet(config, work, filt)
        buffer = io.BytesIO()
        # Parquet is already compressed: store, don't deflate again.
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for path in (done.traces_path, done.tokens_path):
                archive.write(path, path.name)
        return buffer.getvalue()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def import_section(config: StorageConfig) -> None:
    st.subheader("Import")
    st.caption(
        "ThinkScope JSONL, OpenAI chat completions (JSON or JSONL, with `reasoning_content` / `reasoning` "
        "and log-probabilities), raw text with `<think>` or `<thinking>` tags, Anthropic messages with "
        "thinking blocks, Open WebUI chat exports, and records (a prompt and a response with `<think>` "
        "tags, or thinking and answer fields, per row of JSON, JSONL, CSV or Parquet). One file is one "
        "transaction: a bad record stops the import, names its line and field, and nothing from the "
        "file is stored. Traces the database already holds are counted, not stored again."
    )
    upload = st.file_uploader("Trace file", type=None, key="import_file")
    fmt = st.selectbox("Format", list(FORMAT_LABELS), format_func=FORMAT_LABELS.get, key="import_format")
    c1, c2 = st.columns([3, 1.4])
    mapping = c1.text_input(
        "Field mapping (records)", key="import_mapping", placeholder="prompt=question,response=output",
        help="Only for records whose fields have other names: role=field, comma-separated. Roles: prompt, "
             "response, thinking, answer, reference, model.")
    duplicates = c2.checkbox("Allow duplicates", key="import_duplicates",
                             help="Store traces the database already holds again.")
    if st.button("Import", type="primary", disabled=upload is None, key="import_run"):
        bar = st.progress(0.0, text=f"Importing {upload.name}…")
        outcome = store_upload(config, upload, upload.name, fmt,
                               lambda frac: bar.progress(frac, text=f"Importing {upload.name}… {frac:.0%}"),
                               mapping=mapping, allow_duplicates=duplicates)
        bar.empty()
        st.session_state["import_outcome"] = outcome
    outcome: ImportOutcome | None = st.session_state.get("import_outcome")
    if outcome is not None:
        if outcome.result is None:
            st.error(md_text(outcome.message))  # it may quote the file: escaped, so it stays text
        else:
            st.success(outcome.message)
            st.page_link("pages/traces.py", label="Open them on the Traces page", icon=":material/table_rows:")


def export_section(config: StorageConfig) -> None:
    st.subheader("Export")
    try:
        models = list_models(config)
    except StorageError as exc:
        st.error(str(exc))
        return
    c1, c2, c3 = st.columns([2, 3, 1.3])
    chosen = c1.multiselect("Model", models, key="export_models")
    contains = c2.text_input("Prompt contains", key="export_prompt")
    correct = c3.selectbox("Correct", CORRECT_CHOICES, key="export_correct")
    filt = TraceFilter(models=tuple(chosen), prompt_contains=contains.strip(), correct=correct)
    total = count_traces(config, filt)
    st.caption(f"{total} traces selected (no filter: every trace).")
    if total == 0:
        st.info("Nothing to download: no trace matches these filters." if filt != TraceFilter() else
                "Nothing to download yet: the database has no traces. Generate or import some first.")
    d1, d2 = st.columns(2)
    d1.download_button("Download JSONL", lambda: export_jsonl_bytes(config, filt), file_name="thinkscope-traces.jsonl",
                       mime="application/x-ndjson", disabled=total == 0, icon=":material/download:", key="export_jsonl")
    d2.download_button("Download Parquet (zip)", lambda: export_parquet_zip(config, filt),
                       file_name="thinkscope-parquet.zip", mime="application/zip", disabled=total == 0,
                       icon=":material/download:", key="export_parquet")
    st.caption("Parquet: traces.parquet (one row per trace) and tokens.parquet (one row per token).")
    st.download_button("Download annotations (JSONL)", lambda: export_annotations_bytes(config),
                       file_name="thinkscope-annotations.jsonl", mime="application/x-ndjson",
                       icon=":material/download:", key="export_annotations",
                       help="Every review annotation version (verdict, notes, span labels, reviewer), oldest first.")
