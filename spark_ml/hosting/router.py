"""An endpoint's front door: one of N router worker processes sharing the port through SO_REUSEPORT.

Per request: check the bearer token and the size limit, pick the variant (``X-Target-Variant`` or
weighted random), pick the instance with the fewest outstanding requests, forward over a pooled
keep-alive connection, retry on another instance when a connection fails, answer 504 on timeout,
and name the variant that answered in ``X-Invoked-Production-Variant``. Several workers keep the
router from being a single-process bottleneck; each balances its own share of the connections.

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

from algorithms.serving.http import ClientDisconnected, read_body, respond, respond_error
from algorithms.serving.errors import RequestError

from .routes import Balancer, NoVariant, RoutingTable

log = logging.getLogger("spark_ml.hosting.router")

TARGET_HEADERS = (b"x-target-variant", b"x-amzn-sagemaker-target-variant")
CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
FORWARDED = (b"content-type", b"accept", CUSTOM_ATTRIBUTES)
DEFAULT_MAX_PAYLOAD = 6 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 3


class RouterApp:
    """The ASGI app of one router worker."""

    def __init__(self, endpoint: str, routes_path: str, status_dir: str, token: str | None,
                 multiproc_dir: str | None = None):
        from .metrics import RouterMetrics

        self.endpoint = endpoint
        self.routes_path = routes_path
        self.status_dir = status_dir
        self.expected_auth = f"Bearer {token}".encode() if token else None
        self.multiproc_dir = multiproc_dir
        self.table = RoutingTable.read(routes_path)
        self.balancer = Balancer(self.table)
        self._apply_settings()
        self.metrics = RouterMetrics(endpoint)
        self.session = None
        self._mtime = self._routes_mtime()

    def _apply_settings(self) -> None:
        import aiohttp

        s = self.table.settings
        self.max_payload = int(s.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD))
        self.timeout = aiohttp.ClientTimeout(total=float(s.get("timeout", DEFAULT_TIMEOUT)))
        self.attempts = int(s.get("max_attempts", DEFAULT_ATTEMPTS))

    # lifecycle -----------------------------------------------------------------------------------
    async def startup(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=None)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._poller = asyncio.ensure_future(self._poll_routes())

    async def shutdown(self) -> None:
        self._poller.cancel()
        if self.session is not None:
            await self.session.close()

    def acknowledge(self, port: int | None = None) -> None:
        from algorithms.serving.server import write_json_atomic

        if port is not None:
            self.port = port
        write_json_atomic(os.path.join(self.status_dir, f"{os.getpid()}.json"),
                          {"pid": os.getpid(), "port": getattr(self, "port", None),
                           "generation": self.table.generation})

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
            self._apply_settings()
        self.acknowledge()

    def _routes_mtime(self) -> float:
        try:
            return os.stat(self.routes_path).st_mtime_ns
        except OSError:
            return 0

    async def _poll_routes(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._routes_mtime() != self._mtime:
                self.reload()

    # requests ------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        try:
            if path == "/invocations":
                if scope["method"] != "POST":
                    raise RequestError(405, "use POST /invocations")
                await self.invoke(scope, receive, send)
            elif path == "/ping":
                ok = bool(self.balancer.weighted)
                await respond(send, 200 if ok else 503, b"" if ok else b"no instance is serving", b"text/plain")
            elif path == "/metrics":
                self._authorize(dict(scope["headers"]))
                await respond(send, 200, self._render_metrics(), b"text/plain; version=0.0.4; charset=utf-8")
            elif path == "/metadata":
                self._authorize(dict(scope["headers"]))
                await respond(send, 200, await self._metadata())
            else:
                raise RequestError(404, f"no route {path}; endpoints answer /invocations, /ping, /metrics, /metadata")
        except RequestError as exc:
            await respond_error(send, exc.status, exc.message)
        except ClientDisconnected:
            return

    def _authorize(self, headers: dict) -> None:
        if self.expected_auth is None:
            return
        given = headers.get(b"authorization")
        if given is None or not hmac.compare_digest(given, self.expected_auth):
            raise RequestError(401, "missing or wrong bearer token (send Authorization: Bearer <token>)")

    async def invoke(self, scope, receive, send) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])
        try:
            self._authorize(headers)
            body = await read_body(receive, headers, self.max_payload)
            target = headers.get(TARGET_HEADERS[0]) or headers.get(TARGET_HEADERS[1])
            try:
                variant = self.balancer.variant(target.decode() if target else None)
            except NoVariant as exc:
                raise RequestError(400 if target else 503, str(exc)) from None
        except RequestError as exc:
            counters = self.metrics.of("-")
            (counters[1] if exc.status < 500 else counters[2]).inc()
            raise
        invocations, errors_4xx, errors_5xx, retries, model_latency, overhead = self.metrics.of(variant.name)
        invocations.inc()
        forward = {k.decode(): headers[k].decode("latin-1") for k in FORWARDED if k in headers}
        status, out_type, out_body, out_attrs, model_seconds = await self._forward(variant, body, forward, retries)
        reply = [(b"x-invoked-production-variant", variant.name.encode()),
                 (b"x-amzn-invoked-production-variant", variant.name.encode())]
        if out_attrs:
            reply.append((CUSTOM_ATTRIBUTES, out_attrs))
        await respond(send, status, out_body, out_type, reply)
        if status >= 500:
            errors_5xx.inc()
        elif status >= 400:
            errors_4xx.inc()
        model_latency.observe(model_seconds)
        overhead.observe(max(time.perf_counter() - started - model_seconds, 0.0))

    async def _forward(self, variant, body: bytes, headers: dict, retries):
        """(status, content type, body, custom attributes, model seconds) from the first instance that answers."""
        import aiohttp

        tried: set[str] = set()
        model_seconds = 0.0
        problem = "the variant has no instance"
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
            outstanding = self.balancer.outstanding
            outstanding[inst.instance_id] = outstanding.get(inst.instance_id, 0) + 1
            t0 = time.perf_counter()
            try:
                async with self.session.post(inst.url + "/invocations", data=body, headers=headers,
                                             timeout=self.timeout) as resp:
                    data = await resp.read()
                    model_seconds += time.perf_counter() - t0
                    return (resp.status, resp.headers.get("Content-Type", "application/octet-stream").encode(),
                            data, resp.headers.get("X-Amzn-SageMaker-Custom-Attributes", "").encode(), model_seconds)
            except TimeoutError:
                model_seconds += time.perf_counter() - t0
                msg = f"variant {variant.name} did not answer within {self.timeout.total:g} s"
                return 504, b"application/json", _error(msg), b"", model_seconds
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                model_seconds += time.perf_counter() - t0
                self.balancer.eject(inst)
                problem = f"instance {inst.instance_id} failed: {type(exc).__name__}: {exc}"
            finally:
                outstanding[inst.instance_id] -= 1
        msg = f"no instance of variant {variant.name} could answer ({problem})"
        return 503, b"application/json", _error(msg), b"", model_seconds

    def _render_metrics(self) -> bytes:
        from .metrics import TableCollector, render

        return render(self.multiproc_dir, [TableCollector(self.endpoint, self.table)])

    async def _metadata(self) -> bytes:
        import orjson

        result = {}
        for variant in self.table.variants:
            inst = self.balancer.instance(variant)
            if inst is None:
                result[variant.name] = {"error": "no instance"}
                continue
            try:
                async with self.session.get(inst.url + "/metadata", timeout=self.timeout) as resp:
                    result[variant.name] = (orjson.loads(await resp.read()) if resp.status == 200 else
                                            {"error": f"the instance answered {resp.status} to /metadata"})
            except Exception as exc:
                result[variant.name] = {"error": f"{type(exc).__name__}: {exc}"}
        return orjson.dumps({"endpoint": self.endpoint, "variants": result})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _error(message: str) -> bytes:
    import orjson

    return orjson.dumps({"error": message})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m spark_ml.hosting.router")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--routes", required=True)
    p.add_argument("--status-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--parent-pid", type=int)
    args = p.parse_args(argv)
    from algorithms.serving.server import bind, cap_threads, is_loopback, run_asgi

    cap_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = os.environ.get("SPARK_ML_ENDPOINT_TOKEN") or None
    if not is_loopback(args.host) and not token:
        print(f"refusing to bind {args.host} without a bearer token", file=sys.stderr)
        sys.exit(2)
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not multiproc:
        print("PROMETHEUS_MULTIPROC_DIR must be set", file=sys.stderr)
        sys.exit(2)
    app = RouterApp(args.endpoint, args.routes, args.status_dir, token, multiproc)
    sock = bind(args.host, args.port, reuse_port=True)
    port = sock.getsockname()[1]

    async def started() -> None:
        app.acknowledge(port)

    run_asgi(app, sock, parent_pid=args.parent_pid, on_start=started, keep_alive=75)


if __name__ == "__main__":
    main()
