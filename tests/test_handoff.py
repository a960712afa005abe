"""The shared-memory handoff between a router worker and a model server, both ends in one event loop."""

from __future__ import annotations

import asyncio
import mmap
import os
import socket
import threading
import uuid

import numpy as np
import orjson
import pytest
import scipy.sparse as sp
from serving_support import ToyLinearModel

from algorithms import tensor_codec
from algorithms.serving import handoff as instance_side
from algorithms.serving.app import InferenceApp
from algorithms.serving.content import choose_response_type, request_media_type
from spark_ml.endpoints.handoff import HandoffChannel, SlotArena
from spark_ml.endpoints.proxy import UpstreamError

pytestmark = pytest.mark.skipif(not instance_side.AVAILABLE, reason="memfd and SCM_RIGHTS are Linux features")

WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], np.float32)


class Loop:
    """An event loop on a thread, with a model server's handoff socket in it."""

    def __init__(self, model=None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = InferenceApp(model or ToyLinearModel(WEIGHTS, 0.25))
        self.name = f"spark-ml-test-{uuid.uuid4().hex}"
        self.server = instance_side.HandoffServer(self.app, self.name)
        self.call(lambda: self.server.start(self.loop))

    def call(self, fn, timeout: float = 10):
        done = threading.Event()
        box = {}

        def run():
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                box["error"] = exc
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(timeout), f"the event loop did not run a call within {timeout:g} s"
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def close(self):
        self.call(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def served():
    loop = Loop()
    yield loop
    loop.close()


def hand_over(loop: Loop, channel: HandoffChannel, arena: SlotArena, body: bytes, ctype: str, accept: str | None):
    """Send ``body`` through ``channel``; (status, content type, body) of the answer."""
    answered = threading.Event()
    box = {}

    def callback(response, error):
        box["response"], box["error"] = response, error
        answered.set()

    def send():
        slot = arena.acquire()
        slot.fill([body])
        box["slot"] = slot
        channel.send(loop.loop, slot, len(body), ctype.encode(), accept.encode() if accept else None, callback)

    loop.call(send)
    assert answered.wait(10)
    if box["error"] is not None:
        raise box["error"]
    response = box["response"]
    loop.call(lambda: arena.release(box["slot"]))
    return response.status, response.content_type, b"".join(response.chunks)


def over_http(app: InferenceApp, body: bytes, ctype: str, accept: str | None) -> bytes:
    return app.answer(body, request_media_type(ctype), choose_response_type(accept))


def test_answers_equal_the_http_paths_byte_for_byte(served):
    arena = SlotArena(64 * 1024)
    channel = HandoffChannel(served.name, arena)
    rows = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    csv = "\n".join(",".join(f"{v:.5g}" for v in row) for row in rows).encode() + b"\n"
    proto = tensor_codec.encode_dense(rows)
    cases = [(csv, "text/csv", None), (csv, "text/csv", "application/jsonlines"),
             (proto, "application/x-recordio-protobuf", "application/x-recordio-protobuf"),
             (tensor_codec.encode_sparse(sp.csr_matrix(rows[:5])), "application/x-recordio-protobuf", None),
             (tensor_codec.encode_dense(rows[:5], np.ones(5, np.float32)), "application/x-recordio-protobuf", None),
             (orjson.dumps({"instances": rows[:3].tolist()}), "application/json", "application/json")]
    for body, ctype, accept in cases:
        status, got_type, got = hand_over(served, channel, arena, body, ctype, accept)
        assert status == 200 and got == over_http(served.app, body, ctype, accept)
        assert got_type == choose_response_type(accept).encode()
    # bad requests answer 4xx naming the fault, and the connection keeps serving
    status, _, got = hand_over(served, channel, arena, b"1,2,3\n", "text/csv", None)
    assert status == 400 and b"CSV row 1 has 3 values; the model expects 4" in got
    status, _, got = hand_over(served, channel, arena, b"x", "image/png", None)
    assert status == 415 and b"image/png" in got
    assert hand_over(served, channel, arena, csv, "text/csv", None)[0] == 200
    assert len(arena.idle) == 1  # one slot, reused for every request
    served.call(channel.close)


def test_an_answer_larger_than_the_response_area_comes_in_its_own_memfd(served):
    arena = SlotArena(4096)
    channel = HandoffChannel(served.name, arena)
    body = b"1,2,3,4\n" * 500  # 4,000 bytes in, ~25 KB of JSON out
    status, _, got = hand_over(served, channel, arena, body, "text/csv", "application/json")
    assert status == 200 and len(got) > 4096 and got == over_http(served.app, body, "text/csv", "application/json")
    served.call(channel.close)


def raw_connection(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect("\0" + name)
    sock.settimeout(10)
    return sock


def test_an_unsealed_or_undersized_slot_ends_that_connection_only(served):
    fd = os.memfd_create("unsealed", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 8192)
    sock = raw_connection(served.name)
    socket.send_fds(sock, [instance_side.SLOT_MESSAGE.pack(instance_side.SLOT, 1, 4096, 8192)], [fd])
    assert sock.recv(100) == b""  # closed: a peer could shrink the file and fault the server
    os.close(fd)
    sealed = instance_side.make_slot_fd(4096)
    sock = raw_connection(served.name)
    socket.send_fds(sock, [instance_side.SLOT_MESSAGE.pack(instance_side.SLOT, 1, 4096, 8192)], [sealed])
    assert sock.recv(100) == b""  # says 8 KiB, holds 4
    os.close(sealed)
    sock = raw_connection(served.name)
    sock.send(b"\x09garbage")
    assert sock.recv(100) == b""
    arena = SlotArena(4096)  # and the server still answers others
    assert hand_over(served, HandoffChannel(served.name, arena), arena, b"1,2,3,4\n", "text/csv", None)[0] == 200


def test_a_request_in_flight_fails_over_when_the_instance_goes_away(served):
    arena = SlotArena(4096)
    channel = HandoffChannel(served.name, arena)
    answered = threading.Event()
    box = {}

    def callback(response, error):
        box["error"] = error
        answered.set()

    def send_then_lose():
        slot = arena.acquire()
        slot.fill([b"1,2,3,4\n"])
        box["slot"] = slot
        channel.send(served.loop, slot, 8, b"text/csv", None, callback)
        channel._lost(ConnectionResetError("killed"))  # as when the instance's process dies

    served.call(send_then_lose)
    assert answered.wait(10) and isinstance(box["error"], UpstreamError)
    assert arena.idle == []  # the slot is the caller's to copy from and close, never reused as is
    fresh = box["slot"].copy(8)
    assert fresh.mapping[:8] == b"1,2,3,4\n" and fresh is not box["slot"]


def test_a_timed_out_request_frees_its_slot_only_when_the_answer_arrives(served):
    arena = SlotArena(4096)
    channel = HandoffChannel(served.name, arena)
    got = threading.Event()
    served.call(lambda: channel.abandon(0))  # unknown ids are ignored

    original = channel._reply

    def reply(data, fds):
        original(data, fds)
        got.set()

    channel._reply = reply

    def send_and_abandon():
        slot = arena.acquire()
        slot.fill([b"1,2,3,4\n"])
        request_id = channel.send(served.loop, slot, 8, b"text/csv", None, lambda *_: pytest.fail("abandoned"))
        channel.abandon(request_id)

    served.call(send_and_abandon)
    assert got.wait(10)
    assert len(arena.idle) == 1  # back once the instance had answered


def test_nothing_listening_is_an_upstream_error():
    arena = SlotArena(4096)
    channel = HandoffChannel(f"spark-ml-nobody-{uuid.uuid4().hex}", arena)
    loop = asyncio.new_event_loop()
    try:
        slot = arena.acquire()
        with pytest.raises(UpstreamError, match="handoff socket"):
            channel.send(loop, slot, 0, b"text/csv", None, lambda *_: None)
    finally:
        loop.close()


def test_an_idle_slot_gives_back_the_memory_of_a_large_body():
    arena = SlotArena(int(1.1 * 1024 * 1024))  # a payload limit that is no multiple of the page size
    slot = arena.acquire()
    assert slot.request_bytes % mmap.PAGESIZE == 0 and slot.request_bytes >= 1.1 * 1024 * 1024
    slot.fill([b"x" * slot.request_bytes])
    slot.mapping[slot.request_bytes :] = b"y" * slot.request_bytes
    assert os.fstat(slot.fd).st_blocks * 512 >= 2 * slot.request_bytes
    arena.release(slot)
    assert arena.idle == [slot] and os.fstat(slot.fd).st_blocks * 512 <= 2 << 20
    assert slot.mapping[:3] == b"xxx"  # the first MiB of each area stays


def test_a_body_larger_than_a_lowered_limit_gets_a_slot_of_its_own():
    arena = SlotArena(1 << 20)
    big = arena.acquire(3 << 20)  # received before the limit went down to 1 MiB
    big.fill([b"z" * (3 << 20)])
    retry = big.copy(3 << 20)
    assert retry.request_bytes >= 3 << 20 and retry.mapping[: 3 << 20] == b"z" * (3 << 20)
    live = arena.live
    for slot in (big, retry):
        arena.release(slot)  # not the arena's size: closed, not kept
    assert arena.idle == [] and arena.live == live - 2
    arena.resize(2 << 20)
    assert arena.acquire().request_bytes == 2 << 20


def test_the_instance_unmaps_the_slots_the_router_closes(served):
    arena = SlotArena(4096)
    channel = HandoffChannel(served.name, arena)
    slots = [arena.acquire() for _ in range(3)]
    done = threading.Event()
    count = {"n": 0}

    def callback(response, error):
        count["n"] += 1
        if count["n"] == 3:
            done.set()

    def send_all():
        for slot in slots:
            slot.fill([b"1,2,3,4\n"])
            channel.send(served.loop, slot, 8, b"text/csv", None, callback)

    served.call(send_all)
    assert done.wait(10)
    (peer,) = served.call(lambda: list(served.server.peers))
    assert served.call(lambda: sorted(peer.slots)) == sorted(s.id for s in slots)
    served.call(lambda: [slot.close() for slot in slots[:2]])
    assert hand_over(served, channel, arena, b"1,2,3,4\n", "text/csv", None)[0] == 200  # after the forgets
    assert slots[2].id in served.call(lambda: set(peer.slots))
    assert not {s.id for s in slots[:2]} & served.call(lambda: set(peer.slots))


def test_the_router_only_talks_to_the_instance_process(served):
    arena = SlotArena(4096)
    impostor = HandoffChannel(served.name, arena, pid=os.getpid() + 1)  # the instance is this process
    with pytest.raises(UpstreamError, match="held by process"):
        served.call(lambda: impostor.send(served.loop, arena.acquire(), 0, b"text/csv", None, lambda *_: None))
    genuine = HandoffChannel(served.name, arena, pid=os.getpid())
    assert hand_over(served, genuine, arena, b"1,2,3,4\n", "text/csv", None)[0] == 200


def test_a_malformed_reply_fails_the_request_over_instead_of_stranding_it():
    name = f"spark-ml-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + name)
    listener.listen(1)
    loop = Loop()  # only for its event loop
    arena = SlotArena(4096)
    channel = HandoffChannel(name, arena)
    answered = threading.Event()
    box = {}

    def callback(response, error):
        box["error"] = error
        answered.set()

    try:
        slot = arena.acquire()
        loop.call(lambda: channel.send(loop.loop, slot, 0, b"text/csv", None, callback))
        conn, _ = listener.accept()
        conn.recv(100), conn.recv(100)  # the slot, then the request (id 1)
        # the answer is said to come in a memfd, and none is attached
        conn.send(instance_side.REPLY_MESSAGE.pack(instance_side.REPLY, 1, 200, 10, 1) + b"text/csv")
        assert answered.wait(10) and isinstance(box["error"], UpstreamError)
        conn.close()
    finally:
        listener.close()
        loop.close()


def test_a_server_bug_answers_500_and_the_connection_serves_on(served, monkeypatch):
    arena = SlotArena(4096)
    channel = HandoffChannel(served.name, arena)
    monkeypatch.setattr(served.app, "answer", lambda *a: (_ for _ in ()).throw(KeyError("bug")))
    status, _, got = hand_over(served, channel, arena, b"1,2,3,4\n", "text/csv", None)
    assert status == 500 and b"KeyError" in got
    monkeypatch.undo()
    assert hand_over(served, channel, arena, b"1,2,3,4\n", "text/csv", None)[0] == 200


def test_the_loop_serves_on_while_a_handed_over_request_computes():
    """The instance's loop (HTTP /ping, further handoff messages) keeps running while predict works."""
    entered, gate = threading.Event(), threading.Event()

    class Gated(ToyLinearModel):
        def predict(self, batch):
            entered.set()
            assert gate.wait(20), "the gate was never opened"
            return super().predict(batch)

    served = Loop(Gated(WEIGHTS, 0.25))
    opener = threading.Timer(15, gate.set)  # a loop blocked by predict gets unstuck, and the test fails below
    opener.start()
    try:
        arena = SlotArena(4096)
        channel = HandoffChannel(served.name, arena)
        answered = threading.Event()
        box = {}

        def send():
            slot = arena.acquire()
            slot.fill([b"1,2,3,4\n"])
            channel.send(served.loop, slot, 8, b"text/csv", None, lambda r, e: (box.update(r=r, e=e), answered.set()))

        served.call(send)
        assert entered.wait(10), "the request never reached the model"
        assert served.call(lambda: not answered.is_set(), timeout=5)  # the loop ran while predict waited
        gate.set()
        assert answered.wait(10) and box["e"] is None and box["r"].status == 200
        want = over_http(served.app, b"1,2,3,4\n", "text/csv", None)
        assert b"".join(box["r"].chunks) == want
    finally:
        opener.cancel()
        gate.set()
        served.close()
