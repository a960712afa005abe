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
import logging
import mmap
import os
import socket
import struct
import weakref

import orjson

from algorithms.serving.handoff import (
    FORGET,
    FORGET_MESSAGE,
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

log = logging.getLogger("spark_ml.endpoints.router")

MAX_IDLE_SLOTS = 16
MAX_LIVE_SLOTS = 256  # per router worker; beyond it bodies are collected in memory and go over HTTP
KEEP_BYTES = 1 << 20  # an idle slot keeps at most this much of each area in memory
MAX_META_BYTES = MAX_MESSAGE - REQUEST_MESSAGE.size  # one message; the router's 431 keeps headers far below


def page_multiple(size: int) -> int:
    return -(-max(size, 1) // mmap.PAGESIZE) * mmap.PAGESIZE


class Slot:
    __slots__ = ("id", "fd", "mapping", "request_bytes", "used", "arena")

    def __init__(self, slot_id: int, request_bytes: int, arena: SlotArena):
        self.id = slot_id
        self.request_bytes = page_multiple(request_bytes)  # page-aligned areas (madvise needs it)
        self.fd = make_slot_fd(2 * self.request_bytes)
        self.mapping = mmap.mmap(self.fd, 2 * self.request_bytes)
        self.used = 0  # the most bytes written into either area since the last trim
        self.arena = arena

    def fill(self, chunks: list[bytes]) -> int:
        at = 0
        for chunk in chunks:
            self.mapping[at : at + len(chunk)] = chunk
            at += len(chunk)
        self.used = max(self.used, at)
        return at

    def response(self, size: int) -> bytes:
        if size > self.request_bytes:
            raise ValueError(f"the instance says {size} answer bytes; the response area holds {self.request_bytes}")
        self.used = max(self.used, size)
        return self.mapping[self.request_bytes : self.request_bytes + size]

    def trim(self) -> None:
        """Give back the memory of both areas beyond their first :data:`KEEP_BYTES` (a large body passed)."""
        if self.used > KEEP_BYTES and self.request_bytes > KEEP_BYTES:
            for start in (0, self.request_bytes):
                self.mapping.madvise(mmap.MADV_REMOVE, start + KEEP_BYTES, self.request_bytes - KEEP_BYTES)
        self.used = 0

    def copy(self, size: int) -> Slot:
        """A fresh slot holding this one's request (a retry, when an instance may still write into this one)."""
        fresh = self.arena.acquire(size)
        fresh.mapping[:size] = self.mapping[:size]
        fresh.used = size
        return fresh

    def close(self) -> None:
        self.arena.closed(self)
        with contextlib.suppress(BufferError):  # a read into it is still on the stack: unmapped when it ends
            self.mapping.close()
        os.close(self.fd)


class SlotArena:
    """One router worker's slots; pages are only used where bodies were written (memfds are sparse)."""

    def __init__(self, request_bytes: int):
        self.request_bytes = page_multiple(request_bytes)
        self.idle: list[Slot] = []
        self.live = 0
        self.ids = itertools.count(1)
        self.channels: weakref.WeakSet[HandoffChannel] = weakref.WeakSet()  # told when a slot is closed

    @property
    def full(self) -> bool:
        return self.live >= MAX_LIVE_SLOTS and not self.idle

    def acquire(self, min_bytes: int = 0) -> Slot:
        """An idle slot, or a new one; one of its own size when ``min_bytes`` exceeds the arena's (a body received
        before the payload limit was lowered), closed again when released."""
        if min_bytes > self.request_bytes:
            size = min_bytes
        elif self.idle:
            return self.idle.pop()
        else:
            size = self.request_bytes
        self.live += 1
        return Slot(next(self.ids), size, self)

    def release(self, slot: Slot) -> None:
        if slot.request_bytes == self.request_bytes and len(self.idle) < MAX_IDLE_SLOTS:
            slot.trim()
            self.idle.append(slot)
        else:
            slot.close()

    def closed(self, slot: Slot) -> None:
        self.live -= 1
        for channel in list(self.channels):
            channel.forget(slot.id)

    def resize(self, request_bytes: int) -> None:
        """A new payload limit: slots of the old size are closed as they come back."""
        request_bytes = page_multiple(request_bytes)
        if request_bytes != self.request_bytes:
            self.request_bytes = request_bytes
            idle, self.idle = self.idle, []
            for slot in idle:
                slot.close()


class HandoffChannel:
    """One router worker's connection to one instance; requests in flight by id."""

    def __init__(self, name: str, arena: SlotArena, pid: int | None = None):
        self.name = name
        self.arena = arena
        self.pid = pid  # the instance's process: whoever answers on the socket must be it
        arena.channels.add(self)
        self.sock: socket.socket | None = None
        self.outbox: Outbox | None = None
        self.loop = None
        self.known: set[int] = set()  # slot ids this instance has mapped
        self.pending: dict[int, tuple] = {}  # request id -> (slot, callback or None when abandoned)
        self.ids = itertools.count(1)
        self.retiring = False  # no longer routed to: close once nothing is in flight

    def _connect(self, loop) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)  # a full backlog must not block the event loop
        try:
            sock.connect("\0" + self.name)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError as exc:
            sock.close()
            raise UpstreamError(f"cannot reach the instance's handoff socket: {exc}") from None
        pid, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid() or (self.pid is not None and pid != self.pid):
            sock.close()  # someone else took the name: it must not see bodies or slots
            raise UpstreamError(f"the handoff socket is held by process {pid} (uid {uid}), not the instance")
        self.sock, self.loop, self.known = sock, loop, set()
        self.outbox = Outbox(loop, sock, self._lost)
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, loop, slot: Slot, size: int, content_type: bytes | None, accept: bytes | None, callback) -> int:
        """Hand the body in ``slot`` over; ``callback(response, error)`` follows. Raises UpstreamError."""
        if self.sock is None:
            self._connect(loop)
        request_id = next(self.ids)
        meta = orjson.dumps([_text(content_type), _text(accept)])
        if len(meta) > MAX_META_BYTES:
            raise ValueError(f"Content-Type and Accept take {len(meta)} bytes; one message holds {MAX_META_BYTES}")
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

    def forget(self, slot_id: int) -> None:
        """The router closed this slot: the instance unmaps it too."""
        if slot_id in self.known:
            self.known.discard(slot_id)
            if self.sock is not None:
                try:
                    self.outbox.send(FORGET_MESSAGE.pack(FORGET, slot_id))
                except OSError as exc:
                    self._lost(exc)

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
            except (ValueError, OSError, struct.error) as exc:  # a broken reply: treat the instance as gone
                self._lost(exc)
                return
            finally:
                for fd in fds:
                    os.close(fd)

    def _reply(self, data: bytes, fds: list[int]) -> None:
        _, request_id, status, size, in_fd = REPLY_MESSAGE.unpack_from(data)
        slot, callback = self.pending.get(request_id, (None, None))
        if slot is None:
            return
        if callback is not None:
            if in_fd and len(fds) != 1:
                raise ValueError(f"the answer to request {request_id} should come in a memfd and did not")
            response = Response()
            response.status = status
            response.content_type = data[REPLY_MESSAGE.size :]
            response.chunks = [_read_fd(fds[0], size) if in_fd else slot.response(size)]
        del self.pending[request_id]
        if callback is None:  # its request timed out: the slot is free again now
            self.arena.release(slot)
        else:
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
                continue
            try:
                callback(None, error)
            except Exception:  # noqa: BLE001 - one caller's bug must not strand the others
                log.exception("a request's failover failed")

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
    """Read (not map: the instance could shrink the file under a mapping) an answer passed in a memfd."""
    parts, at = [], 0
    while at < size:
        part = os.pread(fd, min(size - at, 1 << 24), at)
        if not part:
            raise ValueError(f"the answer's memfd holds {at} bytes; the instance said {size}")
        parts.append(part)
        at += len(part)
    return b"".join(parts)


__all__ = ["HandoffChannel", "Slot", "SlotArena"]
