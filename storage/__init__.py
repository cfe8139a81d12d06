"""Persistence of traces in one DuckDB file: schema migrations, queries, import (own JSONL and
other tools' formats, storage/importers/) and export (JSONL, Parquet).

Never imports streamlit, generation or ui; project imports come from analysis only (records, reasoning).
"""
from storage.config import StorageConfig
from storage.connection import connect, transaction
from storage.errors import ConfigError, MigrationError, StorageError, TraceImportError
from storage.filters import CORRECT_CHOICES, TraceFilter
from storage.jsonl import export_jsonl, import_jsonl
from storage.importers import FORMATS as IMPORT_FORMATS, ImportResult, detect_format, import_file
from storage.parquet_export import ParquetExport, export_parquet
from storage.migrate import apply_migrations
from storage.runs import (
    Selection,
    SweepCell,
    get_run_metrics,
    list_runs,
    list_selections,
    save_run_metrics,
    save_strategy_run,
    save_sweep_traces,
    sweep_cells,
)
from storage.traces import (
    LIST_COLUMNS,
    StoredTrace,
    count_traces,
    create_run,
    get_tokens,
    get_trace,
    list_models,
    list_traces,
    save_trace,
    save_traces,
)

__all__ = [
    "CORRECT_CHOICES",
    "LIST_COLUMNS",
    "ConfigError",
    "MigrationError",
    "StorageConfig",
    "StorageError",
    "StoredTrace",
    "TraceFilter",
    "TraceImportError",
    "apply_migrations",
    "connect",
    "count_traces",
    "create_run",
    "export_jsonl",
    "get_tokens",
    "get_trace",
    "import_jsonl",
    "list_models",
    "list_traces",
    "save_trace",
    "save_traces",
    "transaction",
    "IMPORT_FORMATS",
    "ImportResult",
    "ParquetExport",
    "detect_format",
    "export_parquet",
    "import_file",
    "Selection",
    "SweepCell",
    "get_run_metrics",
    "list_runs",
    "list_selections",
    "save_run_metrics",
    "save_strategy_run",
    "save_sweep_traces",
    "sweep_cells",
]
