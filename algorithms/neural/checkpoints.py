"""Training checkpoints in a folder or URI that outlives a failed attempt, so a re-run resumes where it stopped.

A checkpoint is one ``torch.save`` file of plain containers and tensors (model and optimizer ``state_dict``s,
the trainer's counters), written under a fresh name and then named by ``latest.json``, which is replaced
atomically: a reader sees the previous checkpoint or the new one, never half of one. Loading uses
``torch.load(weights_only=True)``, so a checkpoint can hold nothing that runs code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
from typing import Any

from .. import fs as fsutil

LATEST = "latest.json"
KEEP = 2  # checkpoint files kept (the newest ones); older ones are deleted once a newer one is named


class CheckpointStore:
    """Checkpoints of one training job under ``location`` (a local folder or any pyarrow.fs URI)."""

    def __init__(self, location: str):
        self.location = location
        self.fs, self.root = fsutil.resolve(location)

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name) if fsutil.is_local(self.fs) else posixpath.join(self.root, name)

    def latest(self) -> dict[str, Any] | None:
        """The index of the newest checkpoint (``{"file", "epoch", "step", ...}``), or None."""
        path = self._path(LATEST)
        if not fsutil.exists(self.fs, path):
            return None
        return json.loads(fsutil.read_bytes(self.fs, path).decode())

    def save(self, state: dict[str, Any], number: int, info: dict[str, Any]) -> None:
        """Write checkpoint ``number`` (``state`` as ``torch.save`` writes it), make it the latest, then delete
        files older than the last :data:`KEEP`."""
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        name = f"checkpoint-{number:06d}.pt"
        fsutil.write_bytes_atomic(self.fs, self._path(name), buf.getvalue())
        previous = self.latest()
        history = [*(previous.get("history", []) if previous else []), name][-KEEP:]
        index = {**info, "file": name, "number": number, "history": history}
        fsutil.write_bytes_atomic(self.fs, self._path(LATEST), json.dumps(index).encode())
        for old in (previous.get("history", []) if previous else []):
            if old not in history:
                with contextlib.suppress(FileNotFoundError, OSError):
                    self.fs.delete_file(self._path(old))

    def load(self, index: dict[str, Any], map_location: Any = "cpu") -> dict[str, Any]:
        import torch

        data = fsutil.read_bytes(self.fs, self._path(index["file"]))
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)

    def clear(self) -> None:
        """Delete every checkpoint (after the job's model is published)."""
        fsutil.delete_dir_quietly(self.fs, self.root)
