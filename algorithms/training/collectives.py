"""Collectives among training workers: allgather / allreduce / broadcast of numpy arrays of any size.

A transport supplies one primitive, :meth:`Collectives.allgather_bytes`; everything else is built on
it. Arrays travel as ``.npy`` bytes (never pickle). Transports: :class:`LocalCollectives` (one worker),
:class:`ThreadGroup` (workers as threads of one process, for tests and local runs) and the Spark
barrier transport in ``spark_ml``.
"""

from __future__ import annotations

import io
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from ..artifact import write_npz

State = dict[str, np.ndarray]
T = TypeVar("T")


def array_to_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def array_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def state_to_bytes(state: State) -> bytes:
    buf = io.BytesIO()
    write_npz(buf, {k: np.asarray(v) for k, v in state.items()})
    return buf.getvalue()


def state_from_bytes(data: bytes) -> State:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Collectives(ABC):
    """Collective operations among ``world_size`` workers; every worker must make the same calls in order."""

    rank: int
    world_size: int

    @abstractmethod
    def allgather_bytes(self, data: bytes) -> list[bytes]:
        """Every worker's ``data``, indexed by rank."""

    def barrier(self) -> None:
        self.allgather_bytes(b"")

    def allgather(self, array: np.ndarray) -> list[np.ndarray]:
        return [array_from_bytes(b) for b in self.allgather_bytes(array_to_bytes(array))]

    def allreduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        parts = self.allgather(np.asarray(array))
        if op == "sum":
            return np.sum(parts, axis=0, dtype=np.result_type(*parts))
        if op == "max":
            return np.max(parts, axis=0)
        if op == "min":
            return np.min(parts, axis=0)
        raise ValueError(f"unknown reduction {op!r}; use sum, max or min")

    def broadcast(self, array: np.ndarray | None, root: int = 0) -> np.ndarray:
        payload = array_to_bytes(array) if self.rank == root else b""
        return array_from_bytes(self.allgather_bytes(payload)[root])

    def allgather_state(self, state: State) -> list[State]:
        return [state_from_bytes(b) for b in self.allgather_bytes(state_to_bytes(state))]

    def broadcast_state(self, state: State | None, root: int = 0) -> State:
        payload = state_to_bytes(state) if self.rank == root else b""
        return state_from_bytes(self.allgather_bytes(payload)[root])

    def broadcast_object_json(self, obj, root: int = 0):
        import json

        payload = json.dumps(obj).encode() if self.rank == root else b""
        return json.loads(self.allgather_bytes(payload)[root].decode())


class LocalCollectives(Collectives):
    """The single-worker case."""

    rank = 0
    world_size = 1

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        return [bytes(data)]


class ThreadGroup:
    """In-process transport: ``group.member(rank)`` gives each worker thread its Collectives."""

    def __init__(self, world_size: int, timeout: float | None = 600.0):
        self.world_size = world_size
        self._barrier = threading.Barrier(world_size, timeout=timeout)
        self._slots: list[bytes | None] = [None] * world_size
        self._result: list[bytes] = []

    def member(self, rank: int) -> Collectives:
        return _ThreadMember(self, rank)

    def run(self, target: Callable[[int, Collectives], T]) -> list[T]:
        """``target(rank, collectives)`` on one thread per rank; the results by rank. A worker that raises
        releases the others from the barrier at once, and its exception (not their BrokenBarrierError) is
        raised here."""
        results: list = [None] * self.world_size
        errors: list[BaseException] = []

        def work(rank: int) -> None:
            try:
                results[rank] = target(rank, self.member(rank))
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                self._barrier.abort()

        threads = [threading.Thread(target=work, args=(rank,)) for rank in range(self.world_size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
        return results

    def _exchange(self, rank: int, data: bytes) -> list[bytes]:
        self._slots[rank] = bytes(data)
        if self._barrier.wait() == 0:
            self._result = list(self._slots)
        self._barrier.wait()
        out = self._result
        self._barrier.wait()  # nobody writes the next round's slots before everyone has read this one
        return out


class _ThreadMember(Collectives):
    def __init__(self, group: ThreadGroup, rank: int):
        self._group = group
        self.rank = rank
        self.world_size = group.world_size

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        return self._group._exchange(self.rank, data)
