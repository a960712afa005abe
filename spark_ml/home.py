"""``SPARK_ML_HOME`` (default ``~/.spark_ml``): the SQLite registry and the default model store."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def home_dir() -> Path:
    path = Path(os.environ.get("SPARK_ML_HOME") or Path.home() / ".spark_ml").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def registry_path() -> Path:
    return home_dir() / "registry.db"


def default_model_store() -> str:
    return str(home_dir() / "models")


def connect(path: Path | None = None) -> sqlite3.Connection:
    """A connection to the registry; WAL mode so a CLI can read while a training driver writes."""
    conn = sqlite3.connect(str(path or registry_path()), timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn
