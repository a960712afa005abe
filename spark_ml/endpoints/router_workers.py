"""An endpoint's router worker processes, the port they share, and the routing table they follow.

The supervisor holds the port (bound with SO_REUSEPORT, never listening) for the endpoint's life, so a
restarted worker rejoins the same port. Each :meth:`RouterWorkers.publish` writes a routing table of a
higher generation (see :mod:`.routes`) and sends SIGHUP to the workers; each worker acknowledges the
generation it runs, and :meth:`RouterWorkers.acked_generation` is the oldest of those, which tells when
an instance that left the table no longer gets new requests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable

from . import instances
from .pools import Pool
from .registry import EndpointSettings
from .routes import RouteInstance, RouteVariant, RoutingTable

log = logging.getLogger("spark_ml.endpoints.supervisor")

ROUTER_MODULE = "spark_ml.endpoints.router"


class RouterWorkers:
    def __init__(self, endpoint: str, settings: EndpointSettings):
        self.endpoint = endpoint
        self.settings = settings
        self.routes_path = os.path.join(settings.run_dir, "routes.json")
        self.status_dir = os.path.join(settings.run_dir, "routers")  # <pid>.json: the generation a worker runs
        self.metrics_dir = os.path.join(settings.run_dir, "metrics")  # prometheus-client's multiprocess files
        self.log_path = os.path.join(settings.run_dir, "logs", "router.log")
        self.processes: list[subprocess.Popen] = []
        self.generation = 0
        self.host: str | None = None
        self.port: int | None = None
        self.token: str | None = None
        self.reserved: socket.socket | None = None

    def reserve_port(self, host: str, port: int) -> int:
        """Hold ``host:port`` (0: any free port) for the workers; returns the port. Clears old worker state."""
        from algorithms.serving.server import bind

        for folder in (self.status_dir, self.metrics_dir):
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
        self.reserved = bind(host, port, reuse_port=True)  # holds the port; never listens
        self.host, self.port = host, self.reserved.getsockname()[1]
        return self.port

    def start(self, token: str | None, startup_timeout: float = 60.0) -> None:
        """Start the workers on the reserved port and wait until each runs the published table."""
        self.token = token
        for _ in range(self.settings.router_workers):
            self.processes.append(self._spawn())
        deadline = time.monotonic() + startup_timeout
        while self.acked_generation() < self.generation:
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"a router worker exited with code {dead[0].returncode}: {instances.tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the router workers did not start within {startup_timeout:g} s")
            time.sleep(0.02)

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        env.pop("SPARK_ML_ENDPOINT_TOKEN", None)
        if self.token:
            env["SPARK_ML_ENDPOINT_TOKEN"] = self.token
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            ROUTER_MODULE,
            "--endpoint",
            self.endpoint,
            "--routes",
            self.routes_path,
            "--status-dir",
            self.status_dir,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--parent-pid",
            str(os.getpid()),
        ]
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def publish(self, pools: Iterable[Pool]) -> int:
        """A new routing table of the pools' ready instances; returns its generation."""
        self.generation += 1
        variants = [
            RouteVariant(p.variant, p.weight, [RouteInstance(i.instance_id, i.url, i.handoff, i.pid) for i in p.ready])
            for p in pools
        ]
        settings = {
            "max_payload_bytes": self.settings.max_payload_bytes,
            "timeout": self.settings.timeout,
            "max_attempts": self.settings.max_attempts,
        }
        RoutingTable(self.generation, variants, settings).write(self.routes_path)
        for proc in self.processes:
            # Only workers that acknowledged have a SIGHUP handler; younger ones read the file at start.
            if proc.poll() is None and os.path.exists(self._status_file(proc.pid)):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)
        return self.generation

    def _status_file(self, pid: int) -> str:
        return os.path.join(self.status_dir, f"{pid}.json")

    def acked_generation(self) -> int:
        """The oldest routing-table generation any live router worker still runs."""
        live = [p.pid for p in self.processes if p.poll() is None]
        if not live:
            return 0
        lowest = None
        for pid in live:
            try:
                with open(self._status_file(pid)) as f:
                    generation = int(json.load(f)["generation"])
            except (OSError, ValueError, KeyError):
                return 0
            lowest = generation if lowest is None else min(lowest, generation)
        return lowest or 0

    def restart_exited(self) -> None:
        for k, proc in enumerate(self.processes):
            if proc.poll() is not None:
                log.warning("router worker %d exited with code %s; restarting it", proc.pid, proc.returncode)
                self.processes[k] = self._spawn()

    def terminate(self) -> None:
        """SIGTERM: workers stop accepting and finish the requests they hold."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def wait_exited(self, timeout: float) -> None:
        """Wait for terminated workers (SIGKILL after ``timeout``), then let go of the port."""
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.reserved is not None:
            self.reserved.close()
