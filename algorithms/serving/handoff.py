"""Invocations handed over by the endpoint router through shared memory, beside the HTTP port.

Measured on the 2-core box, a router that relays each 1,000-row request over loopback HTTP spent ~0.2 ms of
CPU per request (a third of what the instance itself spent), most of it copying the body through the
kernel twice and parsing the instance's answer; the endpoint then served ~70% of what bare instances did.
So the router talks to the instances it started over a Unix ``SOCK_SEQPACKET`` socket instead: it writes
the request body into a *slot*, a sealed ``memfd`` shared with the instance (sent once, with
``SCM_RIGHTS``), and sends a small message naming the slot; the instance decodes from the slot, writes its
answer into the slot's response area, and replies with a small message. The router keeps the client's
connection, the request (to retry it elsewhere if this instance dies) and every HTTP concern.

The socket lives in the abstract namespace (no path length limit, nothing to clean up) and accepts only
processes of this user (``SO_PEERCRED``), which is what the loopback HTTP port allows too. Slots must be
sealed against shrinking, so a peer cannot make a read fault.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import socket
import struct
from collections import deque

import orjson

from .content import RECORDIO_PROTOBUF, accept_parameters, request_media_type
from .errors import RequestError

log = logging.getLogger("algorithms.serving.handoff")

ENV = "SPARK_ML_HANDOFF"  # the socket's name, given by the supervisor (not in argv: /proc/<pid>/cmdline is public)
AVAILABLE = hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and hasattr(fcntl, "F_GET_SEALS")

SLOT, REQUEST, REPLY, FORGET = 1, 2, 3, 4
SLOT_MESSAGE = struct.Struct("!BIQQ")  # kind, slot id, request area bytes, slot bytes; the memfd rides along
FORGET_MESSAGE = struct.Struct("!BI")  # kind, slot id: the router closed it, unmap it
REQUEST_MESSAGE = struct.Struct("!BQIQ")  # kind, request id, slot id, body bytes; then JSON [content type, accept]
REPLY_MESSAGE = struct.Struct("!BQHQB")  # kind, request id, status, body bytes, 1 if the body is in an fd sent along
MAX_MESSAGE = 64 * 1024
MAX_SLOTS = 4096  # mapped per router connection; the router keeps far fewer (it says which it closed)


def make_slot_fd(size: int, name: str = "spark-ml-slot") -> int:
    """A memfd of ``size`` bytes that can no longer shrink (what :func:`map_slot` requires)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


def map_slot(fd: int, size: int) -> mmap.mmap:
    """Map a peer's slot, after checking it cannot shrink under us and really is ``size`` bytes."""
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    if not seals & fcntl.F_SEAL_SHRINK or os.fstat(fd).st_size < size:
        raise ValueError("the slot is not sealed against shrinking or is smaller than declared")
    return mmap.mmap(fd, size)


class Outbox:
    """Messages to a non-blocking SEQPACKET socket, queued while the peer's buffer is full."""

    def __init__(self, loop, sock: socket.socket, on_error):
        self.loop, self.sock, self.on_error = loop, sock, on_error
        self.queue: deque[tuple[bytes, list[int]]] = deque()
        self.writing = False

    def send(self, message: bytes, fds: list[int] | None = None) -> None:
        if not self.queue:
            try:
                self._send_one(message, fds)
                return
            except BlockingIOError:
                pass
        self.queue.append((message, [os.dup(fd) for fd in fds or ()]))  # the caller closes its own
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.sock.fileno(), self._flush)

    def _send_one(self, message: bytes, fds: list[int] | None) -> None:
        if fds:
            socket.send_fds(self.sock, [message], fds)
        else:
            self.sock.send(message)

    def _flush(self) -> None:
        try:
            while self.queue:
                message, fds = self.queue[0]
                self._send_one(message, fds)
                self.queue.popleft()
                for fd in fds:
                    os.close(fd)
        except BlockingIOError:
            return
        except OSError as exc:
            self.stop()
            self.on_error(exc)
            return
        self.stop()

    def stop(self) -> None:
        while self.queue:
            for fd in self.queue.popleft()[1]:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.writing:
            self.writing = False
            with contextlib.suppress(Exception):
                self.loop.remove_writer(self.sock.fileno())


class HandoffServer:
    """The instance's end: answers handed-over invocations with ``app`` (an :class:`~.app.InferenceApp`)."""

    def __init__(self, app, name: str):
        self.app = app
        self.name = name
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind("\0" + name)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.loop = None
        self.peers: set[_Peer] = set()

    def start(self, loop) -> None:
        self.loop = loop
        loop.add_reader(self.listener.fileno(), self._accept)

    def close(self) -> None:
        if self.loop is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.listener.fileno())
        self.listener.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            conn.close()  # another user's process
            return
        conn.setblocking(False)
        self.peers.add(_Peer(self, conn))


class _Peer:
    """One router worker's connection: its slots (mapped once) and its requests, answered in order."""

    def __init__(self, server: HandoffServer, conn: socket.socket):
        self.server, self.conn = server, conn
        self.slots: dict[int, tuple[mmap.mmap, int]] = {}  # id -> (mapping, request area bytes)
        self.closed = False
        self.outbox = Outbox(server.loop, conn, lambda exc: self.close())
        server.loop.add_reader(conn.fileno(), self._readable)

    def close(self) -> None:
        self.closed = True
        self.server.peers.discard(self)
        self.outbox.stop()
        with contextlib.suppress(Exception):
            self.server.loop.remove_reader(self.conn.fileno())
        self.conn.close()
        for mapping, _ in self.slots.values():
            _unmap(mapping)
        self.slots.clear()

    def _readable(self) -> None:
        for _ in range(64):  # then let the event loop serve HTTP too
            try:
                data, fds, flags, _ = socket.recv_fds(self.conn, MAX_MESSAGE, 2)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if not data or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):  # closed, or more than a router sends
                for fd in fds:
                    os.close(fd)
                self.close()
                return
            try:
                self._message(data, fds)
            except Exception as exc:  # noqa: BLE001 - a malformed message ends this connection, not the server
                log.warning("closing a handoff connection after a malformed message: %s", exc)
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self.close()
                return

    def _message(self, data: bytes, fds: list[int]) -> None:
        kind = data[0]
        if kind == SLOT:
            _, slot, request_bytes, size = SLOT_MESSAGE.unpack_from(data)
            if len(fds) != 1 or not 0 < request_bytes < size:
                raise ValueError("a slot message needs one memfd and a request area inside the slot")
            if len(self.slots) >= MAX_SLOTS and slot not in self.slots:
                raise ValueError(f"more than {MAX_SLOTS} slots mapped at once")
            try:
                mapping = map_slot(fds[0], size)
            finally:
                os.close(fds[0])
            old = self.slots.pop(slot, None)
            if old is not None:
                _unmap(old[0])
            self.slots[slot] = (mapping, request_bytes)
        elif kind == REQUEST:
            for fd in fds:
                os.close(fd)
            _, request_id, slot, length = REQUEST_MESSAGE.unpack_from(data)
            content_type, accept = orjson.loads(data[REQUEST_MESSAGE.size :])
            mapping, request_bytes = self.slots[slot]
            if length > request_bytes:
                raise ValueError(f"request {request_id} says {length} bytes; slot {slot} holds {request_bytes}")
            # recordIO-protobuf is decoded straight from the slot (numpy views, copied once into the batch);
            # text formats need bytes
            zero_copy = (content_type or "").split(";", 1)[0].strip().lower() == RECORDIO_PROTOBUF
            view = memoryview(mapping)[:length] if zero_copy else mapping[:length]
            # computed on the app's compute thread (the loop keeps answering /ping), replied to from the loop;
            # one compute thread answers in order, as the router expects
            loop, held = self.server.loop, view if zero_copy else None
            self.server.app.compute.submit(self.answer, (view, content_type, accept), lambda result, error: (
                loop.call_soon_threadsafe(self._answered, result, error, request_id, slot, mapping, request_bytes,
                                          held)))
        elif kind == FORGET:
            for fd in fds:
                os.close(fd)
            _, slot = FORGET_MESSAGE.unpack_from(data)
            old = self.slots.pop(slot, None)
            if old is not None:
                _unmap(old[0])
        else:
            raise ValueError(f"unknown message kind {kind}")

    def _answered(self, result, error: BaseException | None, request_id: int, slot: int, mapping: mmap.mmap,
                  request_bytes: int, view: memoryview | None) -> None:
        """On the loop, once the compute thread answered: the reply, unless nobody waits for it any more."""
        if view is not None:
            with contextlib.suppress(BufferError):  # nothing should hold it; if so, GC frees it
                view.release()
        if self.closed or self.slots.get(slot, (None,))[0] is not mapping:
            return  # the router went away or closed the slot
        if error is not None:  # answer() answers errors itself: this is a bug, and a 500
            log.error("a handed-over invocation failed: %s", error)
            result = (500, b"application/json", orjson.dumps({"error": "server error"}))
        status, ctype, body = result
        self.reply(request_id, mapping, request_bytes, status, ctype, body)

    def answer(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[int, bytes, bytes]:
        app = self.server.app
        try:
            media = request_media_type(content_type)
            chosen = app.negotiate(media, accept)
            return 200, chosen.encode(), app.answer(body, media, chosen, accept_parameters(accept, chosen))
        except RequestError as exc:
            return exc.status, b"application/json", orjson.dumps({"error": exc.message})
        except Exception as exc:  # noqa: BLE001 - a server bug answers 500, as over HTTP, and the server goes on
            log.exception("a handed-over invocation failed")
            return 500, b"application/json", orjson.dumps({"error": f"server error: {type(exc).__name__}"})

    def reply(self, request_id: int, mapping: mmap.mmap, request_bytes: int, status: int, ctype: bytes,
              body: bytes) -> None:
        fds: list[int] = []
        if len(body) <= len(mapping) - request_bytes:
            mapping[request_bytes : request_bytes + len(body)] = body
        else:  # larger than the response area: a memfd of its own, passed along
            fd = os.memfd_create("spark-ml-response", os.MFD_CLOEXEC)
            _write_all(fd, body)
            fds.append(fd)
        message = REPLY_MESSAGE.pack(REPLY, request_id, status, len(body), 1 if fds else 0) + ctype
        try:
            self.outbox.send(message, fds)
        finally:
            for fd in fds:
                os.close(fd)


def _unmap(mapping: mmap.mmap) -> None:
    with contextlib.suppress(BufferError):  # a view still alive somewhere: unmapped when it is collected
        mapping.close()


def _write_all(fd: int, body: bytes) -> None:
    view = memoryview(body)
    while view:
        view = view[os.write(fd, view) :]


__all__ = ["AVAILABLE", "ENV", "HandoffServer", "Outbox", "make_slot_fd", "map_slot"]
