"""An endpoint's front door: one of N router worker processes sharing the port through SO_REUSEPORT.

Per request: check the bearer token and the size limit, pick the variant (``X-Target-Variant`` or
weighted random), pick the instance with the fewest outstanding requests, forward over a pooled
keep-alive connection, retry on another instance when a connection fails, answer 504 on timeout,
and name the variant that answered in ``X-Invoked-Production-Variant``. Several workers keep the
router from being a single-process bottleneck; each balances its own share of the connections. The
HTTP plumbing is in :mod:`.proxy`; instances the endpoint started get their requests through shared
memory (:mod:`.handoff`), other servers over HTTP.

Run by the supervisor as ``python -m spark_ml.endpoints.router``; never imports pyspark.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import signal
import sys
import time
from urllib.parse import urlsplit

import orjson

from algorithms.serving.handoff import AVAILABLE as HANDOFF

from .handoff import HandoffChannel, SlotArena
from .proxy import DownstreamConnection, UpstreamError, UpstreamPool, exchange, request_bytes
from .routes import Balancer, NoVariant, RoutingTable

log = logging.getLogger("spark_ml.endpoints.router")

CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
FORWARDED = (b"content-type", b"accept", CUSTOM_ATTRIBUTES)
DEFAULT_MAX_PAYLOAD = 6 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 3
MAX_NEGOTIATION_HEADER = 4096


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


class Router:
    """One router worker: routing state, upstream pools and the request handler."""

    def __init__(
        self,
        endpoint: str,
        routes_path: str,
        status_dir: str,
        token: str | None,
        multiproc_dir: str | None = None,
    ):
        from .metrics import RouterMetrics

        self.endpoint = endpoint
        self.routes_path = routes_path
        self.status_dir = status_dir
        self.expected_auth = f"Bearer {token}".encode() if token else None
        self.multiproc_dir = multiproc_dir
        self.pools: dict[str, UpstreamPool] = {}
        self.channels: dict[str, HandoffChannel] = {}  # instances reached through shared memory
        self.table = RoutingTable.read(routes_path)
        self.balancer = Balancer(self.table)
        self._apply_settings()
        self.arena = SlotArena(self.max_payload) if HANDOFF else None
        self._load_pools()
        self.metrics = RouterMetrics(endpoint)
        self.connections: set[DownstreamConnection] = set()
        self.port: int | None = None
        self._mtime = self._routes_mtime()

    def _apply_settings(self) -> None:
        s = self.table.settings
        self.max_payload = int(s.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD))
        self.timeout = float(s.get("timeout", DEFAULT_TIMEOUT))
        self.attempts = int(s.get("max_attempts", DEFAULT_ATTEMPTS))
        if getattr(self, "arena", None) is not None:
            self.arena.resize(self.max_payload)

    def _load_pools(self) -> None:
        live = {}
        for variant in self.table.variants:
            for inst in variant.instances:
                pool = self.pools.get(inst.instance_id)
                if pool is None:
                    parts = urlsplit(inst.url)
                    pool = UpstreamPool(parts.hostname, parts.port or 80)
                live[inst.instance_id] = pool
        for instance_id, pool in self.pools.items():
            if instance_id not in live:
                pool.close()
        self.pools = live
        channels = {}
        if self.arena is not None:
            for variant in self.table.variants:
                for inst in variant.instances:
                    if inst.handoff:
                        channel = self.channels.get(inst.instance_id)
                        if channel is None or channel.name != inst.handoff:
                            channel = HandoffChannel(inst.handoff, self.arena, inst.pid)
                        channels[inst.instance_id] = channel
        for instance_id, channel in self.channels.items():
            if channels.get(instance_id) is not channel:
                channel.retire()
        self.channels = channels

    # routing table -------------------------------------------------------------------------------
    def acknowledge(self) -> None:
        from algorithms.serving.server import write_json_atomic

        write_json_atomic(
            os.path.join(self.status_dir, f"{os.getpid()}.json"),
            {"pid": os.getpid(), "port": self.port, "generation": self.table.generation},
        )

    def reload(self) -> None:
        try:
            table = RoutingTable.read(self.routes_path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read the routing table %s: %s", self.routes_path, exc)
            return
        self._mtime = self._routes_mtime()
        if table.generation > self.table.generation:
            self.table = table
            self.balancer.load(table)
            self._load_pools()
            self._apply_settings()
            for conn in self.connections:
                conn.max_body = self.max_payload
        self.acknowledge()

    def _routes_mtime(self) -> int:
        try:
            return os.stat(self.routes_path).st_mtime_ns
        except OSError:
            return 0

    async def poll_routes(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._routes_mtime() != self._mtime:
                self.reload()

    # requests ------------------------------------------------------------------------------------
    def connection(self) -> DownstreamConnection:
        conn = _TrackedConnection(self.handle, self.max_payload, self.connections, self.arena)
        return conn

    def handle(self, conn: DownstreamConnection, request) -> None:
        """Answer a request (now, or from a callback later); every path ends with ``conn.done()``."""
        try:
            self._route(conn, request)
        finally:
            if request.slot is not None:  # answered without forwarding: the body's slot is free again
                self.arena.release(request.slot)
                request.slot = None

    def _route(self, conn: DownstreamConnection, request) -> None:
        path = request.url.split(b"?", 1)[0]
        close = not request.keep_alive
        if path == b"/invocations":
            if request.method != b"POST":
                conn.reply(405, _error("use POST /invocations"), close=close)
                conn.done()
            else:
                self.invoke(conn, request)
            return
        if path == b"/ping":
            ok = bool(self.balancer.weighted)
            conn.reply(
                200 if ok else 503, b"" if ok else b"no instance is serving", b"text/plain", close=close
            )
        elif path in (b"/metrics", b"/metadata"):
            if not self._authorized(request):
                conn.reply(
                    401,
                    _error("missing or wrong bearer token (send Authorization: Bearer <token>)"),
                    extra=[(b"www-authenticate", b"Bearer")],
                    close=close,
                )
            elif path == b"/metrics":
                conn.reply(
                    200, self._render_metrics(), b"text/plain; version=0.0.4; charset=utf-8", close=close
                )
            else:
                asyncio.ensure_future(self._answer_metadata(conn, close))
                return
        else:
            conn.reply(
                404,
                _error(
                    f"no route {path.decode('latin-1')}; endpoints answer /invocations, /ping, "
                    "/metrics, /metadata"
                ),
                close=close,
            )
        conn.done()

    def _authorized(self, request) -> bool:
        if self.expected_auth is None:
            return True
        given = request.headers.get(b"authorization")
        return given is not None and hmac.compare_digest(given, self.expected_auth)

    def invoke(self, conn: DownstreamConnection, request) -> None:
        started = time.perf_counter()
        close = not request.keep_alive
        status, message = 0, ""
        if not self._authorized(request):
            status, message = 401, "missing or wrong bearer token (send Authorization: Bearer <token>)"
        elif any(len(request.headers.get(h, b"")) > MAX_NEGOTIATION_HEADER for h in (b"content-type", b"accept")):
            status, message = 431, f"Content-Type and Accept may take at most {MAX_NEGOTIATION_HEADER} bytes each"
        elif request.too_large:
            status, message = (
                413,
                f"the body exceeds {self.max_payload} bytes, the most this endpoint accepts",
            )
            close = True
        else:
            target = request.headers.get(b"x-target-variant") or request.headers.get(
                b"x-amzn-sagemaker-target-variant"
            )
            try:
                variant = self.balancer.variant(target.decode() if target else None)
            except NoVariant as exc:
                status, message = (400 if target else 503), str(exc)
        if status:
            counters = self.metrics.of("-")
            (counters[1] if status < 500 else counters[2]).inc()
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else None
            conn.reply(status, _error(message), extra=extra, close=close)
            conn.done()
            return
        Forward(self, conn, variant, request, started, close).attempt()

    async def _answer_metadata(self, conn: DownstreamConnection, close: bool) -> None:
        try:
            conn.reply(200, await self._metadata(), close=close)
            conn.done()
        except Exception as exc:
            conn.fail(exc)

    def _render_metrics(self) -> bytes:
        from .metrics import TableCollector, render

        return render(self.multiproc_dir, [TableCollector(self.endpoint, self.table)])

    async def _metadata(self) -> bytes:
        result = {}
        for variant in self.table.variants:
            inst = self.balancer.instance(variant)
            pool = self.pools.get(inst.instance_id) if inst else None
            if pool is None:
                result[variant.name] = {"error": "no instance"}
                continue
            try:
                response = await exchange(pool, b"GET", b"/metadata", [], [], 0, self.timeout)
                result[variant.name] = (
                    orjson.loads(b"".join(response.chunks))
                    if response.status == 200
                    else {"error": f"the instance answered {response.status} to /metadata"}
                )
            except (UpstreamError, TimeoutError, ValueError) as exc:
                result[variant.name] = {"error": f"{type(exc).__name__}: {exc}"}
        return orjson.dumps({"endpoint": self.endpoint, "variants": result})


class Forward:
    """One request on its way to an instance of a variant: attempts, retries, timeout, reply, metrics.

    Callback-driven (no task or future per request): the request goes to the chosen instance right away, through
    shared memory when the endpoint started that instance (see :mod:`.handoff`), else over a pooled HTTP
    connection, and the answer is relayed from a callback.
    """

    __slots__ = (
        "router",
        "conn",
        "variant",
        "request",
        "payload",
        "slot",
        "channel",
        "request_id",
        "started",
        "close",
        "tried",
        "attempts",
        "model_seconds",
        "problem",
        "inst",
        "pool",
        "upstream",
        "timer",
        "t0",
        "counters",
    )

    def __init__(self, router: Router, conn: DownstreamConnection, variant, request, started: float, close: bool):
        self.router, self.conn, self.variant, self.request = router, conn, variant, request
        self.started, self.close = started, close
        self.payload: bytes | None = None  # the HTTP form, built when an instance is reached over HTTP
        self.slot, request.slot = request.slot, None  # the body, when it was received into shared memory
        self.channel = None
        self.request_id = 0
        self.tried: set[str] = set()
        self.attempts = 0
        self.model_seconds = 0.0
        self.problem = "the variant has no instance"
        self.counters = router.metrics.of(variant.name)
        self.counters[0].inc()
        self.upstream = self.timer = None

    def attempt(self) -> None:
        router = self.router
        while self.attempts < router.attempts:
            inst = router.balancer.instance(self.variant, self.tried)
            if inst is None:
                if not self.variant.instances:
                    break
                self.tried.clear()  # every instance failed once: try again from the least busy
                inst = router.balancer.instance(self.variant, self.tried)
            if self.attempts:
                self.counters[3].inc()
            self.attempts += 1
            self.tried.add(inst.instance_id)
            self.inst = inst
            channel = router.channels.get(inst.instance_id)
            if channel is not None and (self.slot is not None or not router.arena.full):
                self._hand_over(channel)
                return
            pool = router.pools.get(inst.instance_id)
            if pool is None:
                continue
            self.pool, self.channel = pool, None
            upstream = pool.idle_connection()
            if upstream is None:
                asyncio.ensure_future(self._connect())
            else:
                self._send(upstream)
            return
        self.finish(503, _error(f"no instance of variant {self.variant.name} could answer ({self.problem})"))

    def _hand_over(self, channel: HandoffChannel) -> None:
        self.channel = channel
        if self.slot is None:
            self.slot = self.router.arena.acquire(self.request.size)
            self.slot.fill(self.request.chunks)
        self._track()
        headers = self.request.headers
        try:
            self.request_id = channel.send(asyncio.get_running_loop(), self.slot, self.request.size,
                                           headers.get(b"content-type"), headers.get(b"accept"), self._answered)
        except UpstreamError as exc:  # not sent: the slot is still ours
            self._release(False)
            self._failed(exc)

    async def _connect(self) -> None:
        self.t0 = time.perf_counter()
        try:
            upstream = await self.pool.acquire()
        except UpstreamError as exc:
            self._failed(exc)
            return
        self._send(upstream)

    def _track(self) -> None:
        outstanding = self.router.balancer.outstanding
        outstanding[self.inst.instance_id] = outstanding.get(self.inst.instance_id, 0) + 1
        self.t0 = time.perf_counter()
        self.timer = asyncio.get_running_loop().call_later(self.router.timeout, self._timed_out)

    def _send(self, upstream) -> None:
        self._track()
        self.upstream = upstream
        if self.payload is None:
            request = self.request
            headers = [(k, request.headers[k]) for k in FORWARDED if k in request.headers]
            body = [self.slot.mapping[: request.size]] if self.slot is not None else request.chunks
            self.payload = request_bytes(b"POST", b"/invocations", headers, body, request.size)
        upstream.send(self.payload, self._answered)

    def _release(self, reusable: bool) -> None:
        self.timer.cancel()
        self.router.balancer.outstanding[self.inst.instance_id] -= 1
        if self.channel is None:
            self.pool.release(self.upstream, reusable)
        self.model_seconds += time.perf_counter() - self.t0

    def _answered(self, response, error) -> None:
        try:
            if error is not None:
                self._release(False)
                if self.channel is not None:  # the instance may still write into the slot: retry from a copy
                    old, self.slot = self.slot, self.slot.copy(self.request.size)
                    old.close()
                self._failed(error)
                return
            self._release(response.keep_alive)
            self._free_slot()
            self.finish(response.status, response.chunks, response.content_type, response.custom_attributes)
        except Exception as exc:  # a router bug: the client still gets an answer
            self.slot = None
            self.conn.fail(exc)

    def _free_slot(self) -> None:
        if self.slot is not None:
            slot, self.slot = self.slot, None
            self.router.arena.release(slot)

    def _failed(self, error) -> None:
        self.router.balancer.eject(self.inst)
        self.problem = f"instance {self.inst.instance_id} failed: {error}"
        self.attempt()

    def _timed_out(self) -> None:
        if self.channel is not None:
            self.channel.abandon(self.request_id)  # the slot returns once the instance lets go of it
            self.slot = None
        else:
            self.upstream.abandon()
        self.router.balancer.outstanding[self.inst.instance_id] -= 1
        self.model_seconds += time.perf_counter() - self.t0
        self.finish(
            504, _error(f"variant {self.variant.name} did not answer within {self.router.timeout:g} s")
        )

    def finish(
        self, status: int, body, content_type: bytes = b"application/json", attributes: bytes = b""
    ) -> None:
        self._free_slot()
        name = self.variant.name.encode()
        reply = [(b"x-invoked-production-variant", name), (b"x-amzn-invoked-production-variant", name)]
        if attributes:
            reply.append((CUSTOM_ATTRIBUTES, attributes))
        self.conn.reply(status, body, content_type, reply, close=self.close)
        self.conn.done()
        if status >= 500:
            self.counters[2].inc()
        elif status >= 400:
            self.counters[1].inc()
        self.counters[4].observe(self.model_seconds)
        self.counters[5].observe(max(time.perf_counter() - self.started - self.model_seconds, 0.0))


class _TrackedConnection(DownstreamConnection):
    def __init__(self, handler, max_body, registry: set, arena=None):
        super().__init__(handler, max_body, arena)
        self.registry = registry

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.registry.add(self)

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self.registry.discard(self)


async def serve(router: Router, sock, parent_pid: int | None, grace: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    sock.listen(2048)
    server = await loop.create_server(router.connection, sock=sock)
    router.port = sock.getsockname()[1]
    router.acknowledge()
    poller = asyncio.ensure_future(router.poll_routes())

    async def watch_parent() -> None:
        while parent_pid is not None:
            await asyncio.sleep(0.5)
            if os.getppid() != parent_pid:
                log.warning("the supervisor (pid %d) is gone; shutting down", parent_pid)
                stop.set()
                return

    watcher = asyncio.ensure_future(watch_parent())
    await stop.wait()
    server.close()  # stop accepting; finish what is in flight, then close the connections
    deadline = time.monotonic() + grace
    while any(c.busy for c in router.connections) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for conn in list(router.connections):
        conn.transport.close()
    poller.cancel()
    watcher.cancel()
    for pool in router.pools.values():
        pool.close()
    for channel in router.channels.values():
        channel.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m spark_ml.endpoints.router")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--routes", required=True)
    p.add_argument("--status-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--parent-pid", type=int)
    p.add_argument("--graceful-timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    from algorithms.serving.server import bind, is_loopback, loop_factory

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = os.environ.get("SPARK_ML_ENDPOINT_TOKEN") or None
    if not is_loopback(args.host) and not token:
        print(f"refusing to bind {args.host} without a bearer token", file=sys.stderr)
        sys.exit(2)
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not multiproc:
        print("PROMETHEUS_MULTIPROC_DIR must be set", file=sys.stderr)
        sys.exit(2)
    router = Router(args.endpoint, args.routes, args.status_dir, token, multiproc)
    sock = bind(args.host, args.port, reuse_port=True)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(router, sock, args.parent_pid, args.graceful_timeout))


if __name__ == "__main__":
    main()
