"""The router's client connections, driven read by read: bodies into slots, pipelining, no runaway resources."""

from __future__ import annotations

import asyncio

import pytest

from algorithms.serving import handoff as instance_side
from spark_ml.endpoints.handoff import SlotArena
from spark_ml.endpoints.proxy import HEAD_BUFFER, DownstreamConnection


class Transport:
    def __init__(self):
        self.out: list[bytes] = []
        self.paused = False

    def write(self, data):
        self.out.append(bytes(data))

    def writelines(self, parts):
        self.out.append(b"".join(parts))

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def close(self):
        pass


def receive(conn: DownstreamConnection, wire: bytes, read: int = HEAD_BUFFER) -> None:
    """Deliver ``wire`` as the event loop would: into the protocol's buffers, at most ``read`` bytes a time."""
    at = 0
    while at < len(wire):
        buffer = conn.get_buffer(-1)
        n = min(len(buffer), read, len(wire) - at)
        buffer[:n] = wire[at : at + n]
        at += n
        conn.buffer_updated(n)


def bodies(transport: Transport) -> list[bytes]:
    return [answer.split(b"\r\n\r\n", 1)[1] for answer in transport.out]


def post(body: bytes) -> bytes:
    return b"POST /invocations HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.skipif(not instance_side.AVAILABLE, reason="memfd is a Linux feature")
def test_a_long_body_is_received_into_a_slot_and_a_short_one_takes_none():
    arena = SlotArena(1 << 20)
    got = []

    def handler(conn, request):
        got.append((request.slot, request.size, bytes(request.slot.mapping[: request.size]) if request.slot
                    else b"".join(request.chunks)))
        request.slot = None  # the test keeps it
        conn.reply(200, b"ok")
        conn.done()

    conn = DownstreamConnection(handler, 1 << 20, arena)
    conn.connection_made(Transport())
    long_body = bytes(range(256)) * 1000  # 256 KB: the head buffer takes 64 KiB a read
    receive(conn, post(long_body) + post(b"1,2,3\n"), read=50_000)
    (slot, size, body), (none, short_size, short) = got
    assert slot is not None and size == len(long_body) and body == long_body
    assert none is None and short == b"1,2,3\n" and arena.live == 1


@pytest.mark.skipif(not instance_side.AVAILABLE, reason="memfd is a Linux feature")
def test_pipelined_requests_wait_in_order_without_slots_or_recursion():
    arena = SlotArena(1 << 20)
    loop = asyncio.new_event_loop()
    pending = []

    def handler(conn, request):
        if request.method == b"POST":  # answered later, as a forwarded request is
            pending.append((conn, b"".join(request.chunks)))
        else:
            conn.reply(200, request.url)
            conn.done()

    transport = Transport()
    conn = DownstreamConnection(handler, 1 << 20, arena)
    conn.connection_made(transport)
    pings = b"".join(b"GET /ping%d HTTP/1.1\r\n\r\n" % k for k in range(2000))
    receive(conn, post(b"slow") + pings + post(b"last"))
    assert transport.paused and len(conn.waiting) == 2001 and arena.live == 0  # queued, holding nothing
    conn_, body = pending.pop(0)
    conn_.reply(200, body)
    conn_.done()  # answers the 2,000 pings at once, then waits for the last POST
    conn_, body = pending.pop(0)
    conn_.reply(200, body)
    conn_.done()
    assert bodies(transport) == [b"slow"] + [b"/ping%d" % k for k in range(2000)] + [b"last"]
    assert not transport.paused and not conn.busy
    loop.close()


@pytest.mark.skipif(not instance_side.AVAILABLE, reason="memfd is a Linux feature")
def test_a_lost_connection_returns_the_slot_of_a_body_half_received():
    arena = SlotArena(1 << 20)
    conn = DownstreamConnection(lambda *_: pytest.fail("incomplete"), 1 << 20, arena)
    conn.connection_made(Transport())
    receive(conn, post(b"x" * 200_000)[:100_000])
    assert conn.direct is not None and arena.live == 1
    conn.connection_lost(None)
    assert arena.idle and arena.live == 1 and conn.direct is None
