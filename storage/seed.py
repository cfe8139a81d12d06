"""Seeding a brand-new database with the sample traces, right after its first migration.

Beside the migrations rather than inside the connection: it builds on the import code
(storage/ingest.py), which itself opens no connection, so connection.py can call it on the first
open of a file without the import cycle connection <-> jsonl it used to have.
"""
from __future__ import annotations

import logging

import duckdb

from storage.config import StorageConfig
from storage.errors import StorageError
from storage.ingest import import_into

log = logging.getLogger(__name__)


def seed_new_database(con: duckdb.DuckDBPyConnection, config: StorageConfig) -> int:
    """Import config.seed_path (ThinkScope JSONL) on `con`; returns how many traces were stored.

    A missing seed file means an empty database; a broken one is logged and also leaves the
    database empty (one transaction), because a bad sample must not keep the app from starting.
    """
    seed = config.seed_path
    if seed is None or not seed.is_file():
        return 0
    try:
        ids = import_into(con, seed, note="sample data")
    except (StorageError, duckdb.Error) as exc:
        log.warning("could not seed %s from %s: %s", config.db_path, seed, exc)
        return 0
    log.info("seeded %s with %d traces from %s", config.db_path, len(ids), seed)
    return len(ids)
