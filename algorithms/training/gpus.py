"""Which GPUs a worker may use, and choosing its device."""

from __future__ import annotations

import os
import shutil
import subprocess


def visible_gpu_addresses() -> list[str]:
    """GPU ordinals this process can see (honours ``CUDA_VISIBLE_DEVICES``); empty on machines without GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [a.strip() for a in visible.split(",") if a.strip() and a.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def assign_local_gpus(rank: int, per_worker: int, available: list[str]) -> list[str]:
    """The GPUs of worker ``rank`` when Spark gives tasks no GPU addresses (local mode): by rank, as the peers do."""
    need = (rank + 1) * per_worker
    if need > len(available):
        raise RuntimeError(f"worker {rank} needs GPUs {rank * per_worker}..{need - 1} but this host has "
                           f"{len(available)} ({', '.join(available) or 'none'})")
    return available[rank * per_worker : need]
