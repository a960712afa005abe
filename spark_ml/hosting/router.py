"""An endpoint's front door: one of N router worker processes sharing the port through SO_REUSEPORT.

Per request: check the bearer token and the size limit, pick the variant (``X-Target-Variant`` or
weighted random), pick the instance with the fewest outstanding requests, forward over a pooled
keep-alive connection, retry on another instance when a connection fails, answer 504 on timeout,
and name the variant that answered in ``X-Invoked-Production-Variant``. Several workers keep the
router from being a single-process bottleneck; each balances its own share of the connections. The
HTTP plumbing is in :mod:`.proxy` (bodies pass through without being copied into Python objects).

Run by the supervisor as ``python -m spark_ml.hosting.router``; never imports pyspark.
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

from .proxy import DownstreamConnection, UpstreamError, UpstreamPool, exchange
from .routes import Balancer, NoVariant, RoutingTable

log = logging.getLogger("spark_ml.hosting.router")

CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
FORWARDED = (b"content-type", b"accept", CUSTOM_ATTRIBUTES)
DEFAULT_MAX_PAYLOAD = 6 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 3


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


class Router:
    """One router worker: routing state, upstream pools and the request handler."""

    def __init__(self, endpoint: str, routes_path: str, status_dir: str, token: str | None,
                 multiproc_dir: str | None = None):
        from .metrics import RouterMetrics

        self.endpoint = endpoint
        self.routes_path = routes_path
        self.status_dir = status_dir
        self.expected_auth = f"Bearer {token}".encode() if token else None
        self.multiproc_dir = multiproc_dir
        self.pools: dict[str, UpstreamPool] = {}
        self.table = RoutingTable.read(routes_path)
        self.balancer = Balancer(self.table)
        self._load_pools()
        self._apply_settings()
        self.metrics = RouterMetrics(endpoint)
        self.connections: set[DownstreamConnection] = set()
        self.port: int | None = None
        self._mtime = self._routes_mtime()

    def _apply_settings(self) -> None:
        s = self.table.settings
        self.max_payload = int(s.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD))
        self.timeout = float(s.get("timeout", DEFAULT_TIMEOUT))
        self.attempts = int(s.get("max_attempts", DEFAULT_ATTEMPTS))

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

    # routing table -------------------------------------------------------------------------------
    def acknowledge(self) -> None:
        from algorithms.serving.server import write_json_atomic

        write_json_atomic(os.path.join(self.status_dir, f"{os.getpid()}.json"),
                          {"pid": os.getpid(), "port": self.port, "generation": self.table.generation})

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
        conn = _TrackedConnection(self.handle, self.max_payload, self.connections)
        return conn

    async def handle(self, conn: DownstreamConnection, request) -> None:
        path = request.url.split(b"?", 1)[0]
        close = not request.keep_alive
        if path == b"/invocations":
            if request.method != b"POST":
                conn.reply(405, _error("use POST /invocations"), close=close)
            else:
                await self.invoke(conn, request)
        elif path == b"/ping":
            ok = bool(self.balancer.weighted)
            conn.reply(200 if ok else 503, b"" if ok else b"no instance is serving", b"text/plain", close=close)
        elif path in (b"/metrics", b"/metadata"):
            if not self._authorized(request):
                conn.reply(401, _error("missing or wrong bearer token (send Authorization: Bearer <token>)"),
                           extra=[(b"www-authenticate", b"Bearer")], close=close)
            elif path == b"/metrics":
                conn.reply(200, self._render_metrics(), b"text/plain; version=0.0.4; charset=utf-8", close=close)
            else:
                conn.reply(200, await self._metadata(), close=close)
        else:
            conn.reply(404, _error(f"no route {path.decode('latin-1')}; endpoints answer /invocations, /ping, "
                                   "/metrics, /metadata"), close=close)

    def _authorized(self, request) -> bool:
        if self.expected_auth is None:
            return True
        given = request.headers.get(b"authorization")
        return given is not None and hmac.compare_digest(given, self.expected_auth)

    async def invoke(self, conn: DownstreamConnection, request) -> None:
        started = time.perf_counter()
        close = not request.keep_alive
        status, message = 0, ""
        if not self._authorized(request):
            status, message = 401, "missing or wrong bearer token (send Authorization: Bearer <token>)"
        elif request.too_large:
            status, message = 413, f"the body exceeds {self.max_payload} bytes, the most this endpoint accepts"
            close = True
        else:
            target = request.headers.get(b"x-target-variant") or request.headers.get(b"x-amzn-sagemaker-target-variant")
            try:
                variant = self.balancer.variant(target.decode() if target else None)
            except NoVariant as exc:
                status, message = (400 if target else 503), str(exc)
        if status:
            counters = self.metrics.of("-")
            (counters[1] if status < 500 else counters[2]).inc()
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else None
            conn.reply(status, _error(message), extra=extra, close=close)
            return
        invocations, errors_4xx, errors_5xx, retries, model_latency, overhead = self.metrics.of(variant.name)
        invocations.inc()
        headers = [(k, request.headers[k]) for k in FORWARDED if k in request.headers]
        response, model_seconds = await self._forward(variant, headers, request.chunks, request.size, retries)
        reply = [(b"x-invoked-production-variant", variant.name.encode()),
                 (b"x-amzn-invoked-production-variant", variant.name.encode())]
        if response.custom_attributes:
            reply.append((CUSTOM_ATTRIBUTES, response.custom_attributes))
        conn.reply(response.status, response.chunks, response.content_type, reply, close=close)
        if response.status >= 500:
            errors_5xx.inc()
        elif response.status >= 400:
            errors_4xx.inc()
        model_latency.observe(model_seconds)
        overhead.observe(max(time.perf_counter() - started - model_seconds, 0.0))

    async def _forward(self, variant, headers, chunks, size, retries):
        """The first answer from an instance of the variant, retrying others when connections fail."""
        from .proxy import Response

        tried: set[str] = set()
        model_seconds = 0.0
        problem = "the variant has no instance"
        outstanding = self.balancer.outstanding
        for attempt in range(self.attempts):
            inst = self.balancer.instance(variant, tried)
            if inst is None:
                if not variant.instances:
                    break
                tried.clear()  # every instance failed once: try again from the least busy
                inst = self.balancer.instance(variant, tried)
            if attempt:
                retries.inc()
            tried.add(inst.instance_id)
            pool = self.pools.get(inst.instance_id)
            if pool is None:
                continue
            outstanding[inst.instance_id] = outstanding.get(inst.instance_id, 0) + 1
            t0 = time.perf_counter()
            try:
                response = await exchange(pool, b"POST", b"/invocations", headers, chunks, size, self.timeout)
                return response, model_seconds + time.perf_counter() - t0
            except TimeoutError:
                response = Response()
                response.status, response.content_type = 504, b"application/json"
                response.chunks = [_error(f"variant {variant.name} did not answer within {self.timeout:g} s")]
                return response, model_seconds + time.perf_counter() - t0
            except UpstreamError as exc:
                model_seconds += time.perf_counter() - t0
                self.balancer.eject(inst)
                problem = f"instance {inst.instance_id} failed: {exc}"
            finally:
                outstanding[inst.instance_id] -= 1
        response = Response()
        response.status, response.content_type = 503, b"application/json"
        response.chunks = [_error(f"no instance of variant {variant.name} could answer ({problem})")]
        return response, model_seconds

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
                result[variant.name] = (orjson.loads(b"".join(response.chunks)) if response.status == 200 else
                                        {"error": f"the instance answered {response.status} to /metadata"})
            except (UpstreamError, TimeoutError, ValueError) as exc:
                result[variant.name] = {"error": f"{type(exc).__name__}: {exc}"}
        return orjson.dumps({"endpoint": self.endpoint, "variants": result})


class _TrackedConnection(DownstreamConnection):
    def __init__(self, handler, max_body, registry: set):
        super().__init__(handler, max_body)
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m spark_ml.hosting.router")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--routes", required=True)
    p.add_argument("--status-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--parent-pid", type=int)
    p.add_argument("--graceful-timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    from algorithms.serving.server import loop_factory, bind, is_loopback

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
