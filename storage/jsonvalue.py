"""Turning the free-form `settings` / `meta` dicts into JSON text that DuckDB accepts."""
from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np

from storage.errors import StorageError


def dumps_object(value: dict, what: str) -> str:
    """Compact JSON for a settings/meta dict; key order is kept so exports round-trip exactly."""
    if not isinstance(value, dict):
        raise StorageError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"{what} cannot be stored as JSON: {exc}") from exc


def _plain(value: Any) -> Any:
    # Generation code naturally puts numpy scalars, tuples and NaN into these dicts; JSON has no
    # NaN, so an unknown number is stored as null rather than failing the whole save.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, PurePath):
        return str(value)
    return value
