"""Collectives over Spark's barrier: ``BarrierTaskContext.allGather`` carries bytes, chunked.

Every allGather round carries one string per worker: a kind letter and base64 data. Payloads larger than
a chunk take several rounds; all workers run the same number of rounds (the first round tells everyone
every payload's size). Two kinds end the conversation: ``F`` (this worker failed: the others raise
:class:`PeerFailed` and stop calling collectives) and ``E`` (this worker finished).
"""

from __future__ import annotations

import base64
import json

from algorithms.training.collectives import Collectives

DATA, FAILED, ENDED = "D", "F", "E"
DEFAULT_CHUNK = 8 << 20
MAX_ROUND_BYTES = 96 << 20  # stays under spark.rpc.message.maxSize (128 MiB) for the whole gathered round


class PeerFailed(RuntimeError):
    """Another worker failed; this one stops without further collective calls."""

    def __init__(self, rank: int, reason: str):
        super().__init__(f"worker {rank} failed: {reason}")
        self.rank = rank
        self.reason = reason


class BarrierCollectives(Collectives):
    def __init__(self, context, chunk_bytes: int | None = None):
        self._ctx = context
        self.rank = context.partitionId()
        self.world_size = len(context.getTaskInfos())
        per_worker = max(64 << 10, MAX_ROUND_BYTES // max(1, self.world_size) * 3 // 4)
        self.chunk_bytes = min(chunk_bytes or DEFAULT_CHUNK, per_worker)
        self.closed = False

    def _round(self, kind: str, data: bytes | str = b"") -> list[tuple[str, str]]:
        if self.closed:
            raise RuntimeError("collectives are closed: a worker failed or finished")
        text = data if isinstance(data, str) else base64.b64encode(data).decode("ascii")
        return [(m[:1], m[1:]) for m in self._ctx.allGather(kind + text)]

    def _check(self, messages: list[tuple[str, str]]) -> None:
        for rank, (kind, body) in enumerate(messages):
            if kind == FAILED:
                self.closed = True
                raise PeerFailed(rank, body)
            if kind == ENDED:
                self.closed = True
                raise PeerFailed(rank, "finished while this worker still expected a collective operation "
                                       "(the workers ran different numbers of collective calls)")

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        data = bytes(data)
        chunk = self.chunk_bytes
        head = json.dumps({"size": len(data)}).encode() + b"\n" + data[:chunk]
        messages = self._round(DATA, head)
        self._check(messages)
        parts: list[list[bytes]] = []
        sizes: list[int] = []
        for _, body in messages:
            raw = base64.b64decode(body)
            header, _, first = raw.partition(b"\n")
            sizes.append(int(json.loads(header)["size"]))
            parts.append([first])
        rounds = max((max(0, size - chunk) + chunk - 1) // chunk for size in sizes) if sizes else 0
        for r in range(1, rounds + 1):
            piece = data[r * chunk : (r + 1) * chunk]
            messages = self._round(DATA, piece)
            self._check(messages)
            for rank, (_, body) in enumerate(messages):
                if body:
                    parts[rank].append(base64.b64decode(body))
        out = [b"".join(p) for p in parts]
        for rank, (blob, size) in enumerate(zip(out, sizes, strict=True)):
            if len(blob) != size:
                raise RuntimeError(f"collective payload from worker {rank} arrived with {len(blob)} of {size} bytes")
        return out

    def fail(self, reason: str) -> None:
        """Tell the others this worker failed (one round, matching whatever collective they are in)."""
        if not self.closed:
            self.closed = True
            self._ctx.allGather(FAILED + reason[:4000])

    def finish(self) -> None:
        """The last round of a successful worker; raises PeerFailed if another worker failed at the end."""
        if self.closed:
            return
        messages = self._round(ENDED)
        self.closed = True
        for rank, (kind, body) in enumerate(messages):
            if kind == FAILED:
                raise PeerFailed(rank, body)
            if kind == DATA:
                raise PeerFailed(rank, "was still in a collective operation when this worker finished "
                                       "(the workers ran different numbers of collective calls)")
