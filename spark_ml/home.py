"""Where spark_ml keeps its state (``SPARK_ML_HOME``, default ``~/.spark_ml``) and the SQLite registry in it.

Every subsystem (job records, hosting) opens the same ``registry.db`` through :func:`connect` and
creates its own tables. Connections run in autocommit mode with WAL journaling, so readers (the CLI,
a status poll) never block the writer (an endpoint supervisor); :func:`transaction` groups writes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REGISTRY = "registry.db"


def home_dir() -> Path:
    """``$SPARK_ML_HOME`` or ``~/.spark_ml``, created private to the user on first use."""
    path = Path(os.environ.get("SPARK_ML_HOME") or Path.home() / ".spark_ml").expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def subdir(*parts: str) -> Path:
    """A folder under the home (``models``, ``endpoints/<name>``, …), created on first use."""
    path = home_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def connect(path: str | os.PathLike | None = None, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection to the registry (or ``path``): WAL mode, autocommit, rows readable by column name."""
    db = Path(path) if path is not None else home_dir() / REGISTRY
    fresh = not db.exists()
    conn = sqlite3.connect(db, timeout=timeout, isolation_level=None, check_same_thread=False)
    if fresh:
        os.chmod(db, 0o600)  # the registry may hold endpoint tokens
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): all of the writes or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def registry_path() -> Path:
    return home_dir() / REGISTRY


def local_model_store() -> str:
    """Where models go when nothing else is said and they stay on this machine: ``$SPARK_ML_HOME/models``.

    Not the estimators' default (:func:`spark_ml.estimators.locations.default_model_store`), which
    picks shared storage on a cluster and falls back to this.
    """
    return str(subdir("models"))


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (someone else's counts: it is not ours to judge)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
