"""Collectives between worker processes through files in a shared folder: for tests of code that needs real
processes (torch.distributed allows one group per process) without a Spark barrier stage."""

from __future__ import annotations

import os
import time

from algorithms.training.collectives import Collectives


class FileCollectives(Collectives):
    def __init__(self, folder: str, rank: int, world_size: int, timeout: float = 120.0):
        self.folder, self.rank, self.world_size, self.timeout = folder, rank, world_size, timeout
        self._round = 0

    def _path(self, round_: int, rank: int) -> str:
        return os.path.join(self.folder, f"{round_:06d}-{rank}")

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        mine = self._path(self._round, self.rank)
        with open(mine + ".tmp", "wb") as f:
            f.write(data)
        os.replace(mine + ".tmp", mine)
        deadline = time.monotonic() + self.timeout
        out = []
        for rank in range(self.world_size):
            path = self._path(self._round, rank)
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {rank} did not reach collective round {self._round}")
                time.sleep(0.002)
            with open(path, "rb") as f:
                out.append(f.read())
        self._round += 1
        return out
