"""The router's end of the shared-memory handoff to its own instances (see algorithms/serving/handoff.py).

A router worker owns an arena of slots (sealed memfds: a request area of the endpoint's payload limit, and a
response area as large). A request's body is copied into a free slot once; the slot goes to whichever
instance is chosen, and to the next one if that instance dies. A slot is reused only when no instance can
still write into it: after its answer arrived, or, for a timed-out request, once the late answer arrives or
its connection is gone. Instances someone else runs (``url`` models) are not reached this way, only by HTTP.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import socket

import orjson

from algorithms.serving.handoff import (
    MAX_MESSAGE,
    REPLY_MESSAGE,
    REQUEST,
    REQUEST_MESSAGE,
    SLOT,
    SLOT_MESSAGE,
    Outbox,
    make_slot_fd,
)

from .proxy import Response, UpstreamError

MAX_IDLE_SLOTS = 16
KEEP_BYTES = 1 << 20  # an idle slot keeps at most this much of each area in memory


class Slot:
    __slots__ = ("id", "fd", "mapping", "request_bytes")

    def __init__(self, slot_id: int, request_bytes: int):
        self.id = slot_id
        self.request_bytes = request_bytes
        self.fd = make_slot_fd(2 * request_bytes)
        self.mapping = mmap.mmap(self.fd, 2 * request_bytes)

    def fill(self, chunks: list[bytes]) -> int:
        at = 0
        for chunk in chunks:
            self.mapping[at : at + len(chunk)] = chunk
            at += len(chunk)
        return at

    def response(self, size: int) -> bytes:
        return self.mapping[self.request_bytes : self.request_bytes + size]

    def trim(self) -> None:
        """Give back the memory of both areas beyond their first :data:`KEEP_BYTES` (a large body passed)."""
        for start in (0, self.request_bytes):
            if self.request_bytes > KEEP_BYTES:
                self.mapping.madvise(mmap.MADV_REMOVE, start + KEEP_BYTES, self.request_bytes - KEEP_BYTES)

    def copy(self, size: int, arena: SlotArena) -> Slot:
        """A fresh slot holding this one's request (a retry, when an instance may still write into this one)."""
        fresh = arena.acquire()
        fresh.mapping[:size] = self.mapping[:size]
        return fresh

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a read into it is still on the stack: unmapped when it ends
            self.mapping.close()
        os.close(self.fd)


class SlotArena:
    """One router worker's slots; pages are only used where bodies were written (memfds are sparse)."""

    def __init__(self, request_bytes: int):
        self.request_bytes = request_bytes
        self.idle: list[Slot] = []
        self.ids = itertools.count(1)

    def acquire(self) -> Slot:
        return self.idle.pop() if self.idle else Slot(next(self.ids), self.request_bytes)

    def release(self, slot: Slot, used: int = 0) -> None:
        """``used``: the most bytes written into either area; beyond :data:`KEEP_BYTES` the pages are freed."""
        if slot.request_bytes == self.request_bytes and len(self.idle) < MAX_IDLE_SLOTS:
            if used > KEEP_BYTES:
                slot.trim()
            self.idle.append(slot)
        else:
            slot.close()

    def resize(self, request_bytes: int) -> None:
        """A new payload limit: slots of the old size are closed as they come back."""
        if request_bytes != self.request_bytes:
            self.request_bytes = request_bytes
            for slot in self.idle:
                slot.close()
            self.idle.clear()


class HandoffChannel:
    """One router worker's connection to one instance; requests in flight by id."""

    def __init__(self, name: str, arena: SlotArena):
        self.name = name
        self.arena = arena
        self.sock: socket.socket | None = None
        self.outbox: Outbox | None = None
        self.loop = None
        self.known: set[int] = set()  # slot ids this instance has mapped
        self.pending: dict[int, tuple] = {}  # request id -> (slot, callback or None when abandoned)
        self.ids = itertools.count(1)
        self.retiring = False  # no longer routed to: close once nothing is in flight

    def _connect(self, loop) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect("\0" + self.name)
        except OSError as exc:
            sock.close()
            raise UpstreamError(f"cannot reach the instance's handoff socket: {exc}") from None
        sock.setblocking(False)
        self.sock, self.loop, self.known = sock, loop, set()
        self.outbox = Outbox(loop, sock, self._lost)
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, loop, slot: Slot, size: int, content_type: bytes | None, accept: bytes | None, callback) -> int:
        """Hand the body in ``slot`` over; ``callback(response, error)`` follows. Raises UpstreamError."""
        if self.sock is None:
            self._connect(loop)
        request_id = next(self.ids)
        meta = orjson.dumps([_text(content_type), _text(accept)])
        try:
            if slot.id not in self.known:
                self.outbox.send(SLOT_MESSAGE.pack(SLOT, slot.id, slot.request_bytes, 2 * slot.request_bytes),
                                 [slot.fd])
                self.known.add(slot.id)
            self.outbox.send(REQUEST_MESSAGE.pack(REQUEST, request_id, slot.id, size) + meta)
        except OSError as exc:  # the instance went away: nothing of this request reached it
            self._lost(exc)
            raise UpstreamError(f"cannot hand the request over: {exc}") from None
        self.pending[request_id] = (slot, callback)
        return request_id

    def abandon(self, request_id: int) -> None:
        """Timed out: the caller no longer waits; the slot comes back when the instance is done with it."""
        entry = self.pending.get(request_id)
        if entry is not None:
            self.pending[request_id] = (entry[0], None)

    def _readable(self) -> None:
        while self.sock is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(exc)
                return
            if not data:
                self._lost(None)
                return
            try:
                self._reply(data, fds)
            finally:
                for fd in fds:
                    os.close(fd)

    def _reply(self, data: bytes, fds: list[int]) -> None:
        _, request_id, status, size, in_fd = REPLY_MESSAGE.unpack_from(data)
        slot, callback = self.pending.pop(request_id, (None, None))
        if slot is None:
            return
        if callback is None:  # its request timed out: the slot is free again now
            self.arena.release(slot)
        else:
            response = Response()
            response.status = status
            response.content_type = data[REPLY_MESSAGE.size :]
            response.chunks = [_read_fd(fds[0], size) if in_fd else slot.response(size)]
            callback(response, None)
        if self.retiring and not self.pending:
            self.close()

    def _lost(self, exc) -> None:
        """The instance is gone (or broke the protocol): fail what is in flight. Its slots must not be reused
        (the instance may still write into them): the callers copy their requests out and close them."""
        pending, self.pending = self.pending, {}
        self._drop_socket()
        error = UpstreamError("the instance's handoff connection closed" + (f": {exc}" if exc else ""))
        for slot, callback in pending.values():
            if callback is None:
                slot.close()
            else:
                callback(None, error)

    def _drop_socket(self) -> None:
        if self.sock is not None:
            self.outbox.stop()
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def retire(self) -> None:
        """Removed from the routing table: finish what is in flight, then close."""
        self.retiring = True
        if not self.pending:
            self.close()

    def close(self) -> None:
        self._drop_socket()
        for slot, _ in self.pending.values():
            slot.close()
        self.pending.clear()


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _read_fd(fd: int, size: int) -> bytes:
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapping:
        return mapping[:size]


__all__ = ["HandoffChannel", "Slot", "SlotArena"]
