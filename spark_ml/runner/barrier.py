"""Collectives among a barrier stage's workers: they meet once (see :mod:`.rendezvous`), then talk TCP.

A barrier sync costs about a second (Spark waits for its reply in one-second sleeps), so it is used at most
once, to exchange listening addresses and a shared secret, and not at all when the driver's monitor is
reachable. After that every worker keeps a connection to every other and collectives are frames over those
sockets: a kind byte, a length, a payload. Sends run on threads while the worker receives, so large exchanges
cannot deadlock on full socket buffers.

Two frame kinds end the conversation: ``F`` (this worker failed: the others raise :class:`PeerFailed` and stop
using collectives) and ``E`` (this worker finished). A peer that vanishes (closed connection) is a failure too.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

from algorithms.training.collectives import Collectives

from .rendezvous import OK, Meeting, meet, report_result

DATA, FAILED, ENDED, LOST = b"D", b"F", b"E", b"L"
_HEADER = struct.Struct("!cQ")
_HELLO = struct.Struct("!I32s")
CONNECT_TIMEOUT = 120.0


class PeerFailed(RuntimeError):
    """Another worker failed; this one stops without further collective calls."""

    def __init__(self, rank: int, reason: str, lost: bool = False):
        super().__init__(f"worker {rank} failed: {reason}")
        self.rank = rank
        self.reason = reason
        self.lost = lost  # the peer vanished (crashed, killed, executor lost) rather than reporting a failure


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, 8 << 20))
        if k == 0:
            raise ConnectionError("connection closed")
        got += k
    return buf


class BarrierCollectives(Collectives):
    def __init__(self, context, host: str | None = None, monitor_url: str | None = None,
                 monitor_token: str | None = None):
        self._monitor_url, self._monitor_token = monitor_url, monitor_token
        self.rank = context.partitionId()
        infos = context.getTaskInfos()
        self.world_size = len(infos)
        self.closed = False
        self.met_via: str | None = None  # how the workers exchanged addresses: "driver" or "allGather"
        self._meeting: Meeting | None = None
        self._send: dict[int, socket.socket] = {}
        self._recv: dict[int, socket.socket] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.world_size - 1), thread_name_prefix="collective")
        host = host or infos[self.rank].address.rsplit(":", 1)[0].strip("[]")
        if self.world_size > 1:
            self._connect(context, host)
        elif monitor_url:  # nobody to meet, but the driver learns of the attempt (see rendezvous.py)
            self._meeting = meet(context, host, 0, monitor_url, monitor_token)
            self.met_via = self._meeting.place

    def report(self, result: dict) -> None:
        """Hand this worker's successful result in at the driver, when the workers met there."""
        if self._meeting is not None and self._meeting.place == "driver" and result.get("status") == OK:
            report_result(self._monitor_url, self._monitor_token, self._meeting, self.rank, result)

    # setup ------------------------------------------------------------------------------------------------
    def _connect(self, context, host: str) -> None:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(self.world_size)
        port = listener.getsockname()[1]
        try:
            meeting = self._meeting = meet(context, host, port, self._monitor_url, self._monitor_token)
        except BaseException:
            listener.close()
            raise
        self.met_via = meeting.place
        peers, key = meeting.peers, meeting.secret
        accepted: dict[int, socket.socket] = {}
        errors: list[BaseException] = []

        def accept_all() -> None:
            listener.settimeout(CONNECT_TIMEOUT)
            try:
                while len(accepted) < self.world_size - 1:
                    conn, _ = listener.accept()
                    conn.settimeout(CONNECT_TIMEOUT)
                    rank, mac = _HELLO.unpack(bytes(_recv_exact(conn, _HELLO.size)))
                    if rank >= self.world_size or not hmac.compare_digest(mac, _mac(key, rank)):
                        conn.close()  # not one of ours
                        continue
                    conn.settimeout(None)
                    accepted[rank] = conn
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        acceptor = threading.Thread(target=accept_all, daemon=True)
        acceptor.start()
        try:
            for rank, peer in enumerate(peers):
                if rank == self.rank:
                    continue
                sock = socket.create_connection((peer["host"], peer["port"]), timeout=CONNECT_TIMEOUT)
                self._send[rank] = sock
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(_HELLO.pack(self.rank, _mac(key, self.rank)))
                sock.settimeout(None)
        except OSError as exc:
            errors.append(exc)
            with contextlib.suppress(OSError):  # wakes the acceptor: a reused Python worker keeps nothing open
                listener.shutdown(socket.SHUT_RDWR)
        acceptor.join()
        listener.close()
        self._recv = accepted
        if errors or len(accepted) != self.world_size - 1:
            self._close()
            raise ConnectionError(f"worker {self.rank} could not connect to every other worker: "
                                  f"{errors[0] if errors else 'missing peers'}")

    # frames -----------------------------------------------------------------------------------------------
    def _exchange(self, kind: bytes, payload: bytes) -> list[tuple[bytes, bytes]]:
        """Send one frame to every peer and read one from each; index = rank (own frame included)."""
        if self.closed:
            raise RuntimeError("collectives are closed: a worker failed or finished")
        frame = _HEADER.pack(kind, len(payload))
        sends = [self._pool.submit(_send_frame, sock, frame, payload) for sock in self._send.values()]
        out: list[tuple[bytes, bytes]] = [(kind, payload)] * self.world_size
        for rank, sock in self._recv.items():
            try:
                got_kind, length = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
                out[rank] = (got_kind, _recv_exact(sock, length))
            except (ConnectionError, OSError) as exc:
                out[rank] = (LOST, f"connection lost ({exc})".encode())
        for future in sends:
            with contextlib.suppress(ConnectionError, OSError):  # the receiving side reports a lost peer
                future.result()
        return out

    def _check(self, frames: list[tuple[bytes, bytes]]) -> None:
        _raise_lost(frames, self)
        for rank, (kind, body) in enumerate(frames):
            if kind == FAILED:
                self._close()
                raise PeerFailed(rank, body.decode(errors="replace"))
            if kind == ENDED:
                self._close()
                raise PeerFailed(rank, "finished while this worker still expected a collective operation "
                                       "(the workers ran different numbers of collective calls)")

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        if self.world_size == 1:
            return [bytes(data)]
        frames = self._exchange(DATA, bytes(data))
        self._check(frames)
        return [body for _, body in frames]

    def fail(self, reason: str) -> None:
        """Tell the others this worker failed (one frame, matching whatever collective they are in)."""
        if not self.closed and self.world_size > 1:
            try:
                self._exchange(FAILED, reason[:4000].encode())
            finally:
                self._close()

    def finish(self) -> None:
        """The last exchange of a successful worker; raises PeerFailed if another worker failed at the end."""
        if self.closed:
            return
        if self.world_size == 1:
            self.closed = True
            return
        frames = self._exchange(ENDED, b"")
        self._close()
        _raise_lost(frames, self)
        for rank, (kind, body) in enumerate(frames):
            if kind == FAILED:
                raise PeerFailed(rank, body.decode(errors="replace"))
            if kind == DATA:
                raise PeerFailed(rank, "was still in a collective operation when this worker finished "
                                       "(the workers ran different numbers of collective calls)")

    def _close(self) -> None:
        self.closed = True
        for sock in list(self._send.values()) + list(self._recv.values()):
            with contextlib.suppress(OSError):
                sock.close()
        self._pool.shutdown(wait=False)


def _raise_lost(frames: list[tuple[bytes, bytes]], collectives: BarrierCollectives) -> None:
    for rank, (kind, body) in enumerate(frames):
        if kind == LOST:
            collectives._close()
            raise PeerFailed(rank, body.decode(errors="replace"), lost=True)


def _mac(key: bytes, rank: int) -> bytes:
    return hmac.new(key, f"spark-ml-collective-{rank}".encode(), "sha256").digest()


def _send_frame(sock: socket.socket, header: bytes, payload: bytes) -> None:
    sock.sendall(header)
    if payload:
        sock.sendall(payload)
