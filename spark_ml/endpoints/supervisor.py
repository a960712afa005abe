"""An endpoint's supervisor: a detached process that owns its routers and instances.

It outlives the Python session that created the endpoint. Every tick it reconciles the registry's
desired state with the processes it runs:

- a new config (``update_endpoint``): start the new variants' instances, wait for ``/ping``, switch
  the routing table, then drain the old instances (SIGTERM once every router runs the new table);
  if the new instances fail, the endpoint stays on its old config with a failure reason;
- weights and instance counts (``update_endpoint_weights_and_capacities``, the autoscaler): publish
  new weights; start instances, or take them out of the table first and drain them;
- health: an instance whose process exited, or that fails ``/ping`` three times, is taken out of the
  table and replaced; a router worker that exited is restarted;
- a stop or delete request: routers then instances get SIGTERM, then SIGKILL after the grace period.

Run as ``python -m spark_ml.endpoints.supervisor --endpoint NAME [--daemon]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from . import instances as inst_mod
from .autoscaler import TargetTracker
from .instances import READY, Instance, InstanceFailed
from .registry import (
    DELETE,
    FAILED,
    IN_SERVICE,
    OUT_OF_SERVICE,
    STOP,
    EndpointConfig,
    InstanceRecord,
    Registry,
)
from .routes import RouteInstance, RouteVariant, RoutingTable

log = logging.getLogger("spark_ml.endpoints.supervisor")

TICK = 0.1
PING_EVERY = 5.0
PING_FAILURES = 3
ACK_TIMEOUT = 5.0


@dataclass
class Pool:
    """One variant's instances."""

    variant: str
    model_name: str
    weight: float
    ready: list[Instance] = field(default_factory=list)
    starting: list[Instance] = field(default_factory=list)
    start_failures: int = 0
    retry_at: float = 0.0


class Supervisor:
    def __init__(self, name: str, registry: Registry | None = None):
        self.name = name
        self.registry = registry or Registry()
        record = self.registry.endpoint(name)
        self.settings = record.settings
        self.run_dir = self.settings["run_dir"]
        self.routes_path = os.path.join(self.run_dir, "routes.json")
        self.status_dir = os.path.join(self.run_dir, "routers")
        self.metrics_dir = os.path.join(self.run_dir, "metrics")
        self.pools: dict[str, Pool] = {}
        self.draining: list[Instance] = []
        self.routers: list[subprocess.Popen] = []
        self.generation = 0
        self.config_name: str | None = None
        self.trackers: dict[str, TargetTracker] = {}
        self.next_autoscale = 0.0
        self.stop = threading.Event()
        self.reserved = None
        self.state_dirty = True

    # main loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        failed = None
        try:
            self.boot()
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(TICK)
        except Exception as exc:
            log.exception("endpoint %s failed", self.name)
            failed = f"{type(exc).__name__}: {exc}"
        finally:
            self.teardown()
            self.finish(failed)

    def boot(self) -> None:
        from algorithms.serving.server import bind

        for folder in (self.status_dir, self.metrics_dir):
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
        record = self.registry.endpoint(self.name)
        self.reserved = bind(record.host, record.port, reuse_port=True)  # holds the port; never listens
        port = self.reserved.getsockname()[1]
        host = f"[{record.host}]" if ":" in record.host else record.host
        self.registry.update_endpoint(
            self.name, port=port, url=f"http://{host}:{port}", supervisor_pid=os.getpid()
        )
        self.port = port
        config = self.registry.config(record.config_name)
        self.pools = self.start_pools(config)
        self.config_name = config.name
        self.publish()
        for _ in range(int(self.settings.get("router_workers", 2))):
            self.routers.append(self.start_router())
        self.wait_acks(self.generation, timeout=60.0, require_all=True)
        self.write_state()
        self.registry.update_endpoint(
            self.name,
            status=IN_SERVICE,
            current_config_name=config.name,
            applied_generation=record.generation,
            failure_reason=None,
        )
        log.info("endpoint %s in service on port %d", self.name, port)

    def tick(self) -> None:
        record = self.registry.endpoint(self.name)
        if record.stop_requested:
            self.stop.set()
            return
        if record.config_name != self.config_name:
            self.apply_config(record)
            return
        changed = self.reconcile_capacity()
        changed |= self.check_health()
        if changed:
            self.publish()
        self.check_routers()
        self.drain()
        self.autoscale()
        if self.state_dirty:
            self.write_state()
        if record.applied_generation < record.generation and self.converged():  # the cheap test first
            self.registry.update_endpoint(self.name, applied_generation=record.generation, status=IN_SERVICE)

    # pools ---------------------------------------------------------------------------------------
    def start_instance(self, pool: Pool) -> Instance:
        model = self.registry.model(pool.model_name)
        return inst_mod.start(
            model,
            pool.variant,
            self.run_dir,
            threads=int(self.settings.get("threads", 1)),
            max_payload_mb=float(self.settings.get("max_payload_mb", 6)),
            graceful_timeout=float(self.settings.get("graceful_timeout", 30)),
        )

    def start_pools(self, config: EndpointConfig) -> dict[str, Pool]:
        """Start every variant's initial instances and wait for them (all or none)."""
        pools = {
            v.variant_name: Pool(v.variant_name, v.model, float(v.initial_weight)) for v in config.variants
        }
        started: list[Instance] = []
        try:
            for v in config.variants:
                for _ in range(int(v.initial_instance_count)):
                    started.append(self.start_instance(pools[v.variant_name]))
        except BaseException:
            for inst in started:
                inst_mod.terminate(inst)
            inst_mod.wait_exited(started, 5.0)
            raise
        inst_mod.wait_ready(started, float(self.settings.get("startup_timeout", 120)))
        for inst in started:
            pools[inst.variant].ready.append(inst)
        return pools

    def apply_config(self, record) -> None:
        """update_endpoint: new instances first, then switch, then drain the old ones."""
        try:
            config = self.registry.config(record.config_name)
            new_pools = self.start_pools(config)
        except Exception as exc:
            reason = (
                f"update to config {record.config_name!r} failed, still serving {self.config_name!r}: {exc}"
            )
            log.error(reason)
            self.registry.update_endpoint(
                self.name,
                config_name=self.config_name,
                status=IN_SERVICE,
                failure_reason=reason,
                applied_generation=record.generation,
            )
            return
        old = [i for pool in self.pools.values() for i in pool.ready + pool.starting]
        self.pools = new_pools
        self.config_name = config.name
        self.trackers.clear()
        generation = self.publish()
        self.retire(old, generation)
        self.registry.replace_variants(
            self.name, config, {p.variant: (p.weight, len(p.ready)) for p in self.pools.values()}
        )
        self.write_state()
        self.registry.update_endpoint(
            self.name,
            current_config_name=config.name,
            status=IN_SERVICE,
            applied_generation=record.generation,
            failure_reason=None,
        )

    def reconcile_capacity(self) -> bool:
        """Match weights and instance counts to the registry's desired values; True if the table changes."""
        changed = False
        now = time.monotonic()
        for v in self.registry.variants(self.name):
            pool = self.pools.get(v.variant_name)
            if pool is None:
                continue
            if pool.weight != v.desired_weight:
                pool.weight = v.desired_weight
                changed = True
            for inst in list(pool.starting):
                try:
                    ready = inst_mod.poll_ready(inst)
                except InstanceFailed as exc:
                    log.error("%s", exc)
                    pool.starting.remove(inst)
                    pool.start_failures += 1
                    pool.retry_at = now + min(2.0**pool.start_failures, 60.0)
                    self.registry.update_endpoint(self.name, failure_reason=str(exc)[:2000])
                    continue
                if ready:
                    inst.state = READY
                    pool.starting.remove(inst)
                    pool.ready.append(inst)
                    pool.start_failures = 0
                    changed = True
                elif now - inst.started_at_monotonic > float(self.settings.get("startup_timeout", 120)):
                    log.error("instance %s did not become ready in time", inst.instance_id)
                    pool.starting.remove(inst)
                    self.retire([inst], self.generation)
            have = len(pool.ready) + len(pool.starting)
            if have < v.desired_instance_count and now >= pool.retry_at:
                for _ in range(v.desired_instance_count - have):
                    pool.starting.append(self.start_instance(pool))
                self.state_dirty = True
            elif have > v.desired_instance_count:
                extra = have - v.desired_instance_count
                victims = pool.starting[-extra:] if extra <= len(pool.starting) else list(pool.starting)
                for inst in victims:
                    pool.starting.remove(inst)
                extra -= len(victims)
                if extra:
                    victims += pool.ready[-extra:]
                    del pool.ready[-extra:]
                    changed = True
                self.retire(victims, self.generation + (1 if changed else 0))
                self.state_dirty = True
        return changed

    def check_health(self) -> bool:
        changed = False
        now = time.monotonic()
        for pool in self.pools.values():
            for inst in list(pool.ready):
                code = inst.exited()
                if code is None and now >= inst.next_ping:
                    inst.next_ping = now + PING_EVERY
                    inst.ping_failures = 0 if inst_mod.ping(inst.url, timeout=2.0) else inst.ping_failures + 1
                if code is not None or inst.ping_failures >= PING_FAILURES:
                    why = f"exited with code {code}" if code is not None else "failed /ping"
                    log.warning("instance %s %s; replacing it", inst.instance_id, why)
                    pool.ready.remove(inst)
                    inst_mod.kill(inst)
                    self.draining.append(inst)
                    inst.drain_after_generation = 0
                    changed = True
                    self.state_dirty = True
        return changed

    def retire(self, victims: list[Instance], generation: int) -> None:
        """Drain instances once every router runs ``generation`` (a table without them)."""
        for inst in victims:
            inst.state = inst_mod.DRAINING
            inst.drain_after_generation = generation
            inst.drain_since = time.monotonic()
        self.draining.extend(victims)

    def drain(self) -> None:
        if not self.draining:
            return
        acked = self.acked_generation()
        grace = float(self.settings.get("graceful_timeout", 30))
        now = time.monotonic()
        for inst in list(self.draining):
            if inst.term_sent_at is None:
                if acked >= (inst.drain_after_generation or 0) or now - inst.drain_since > ACK_TIMEOUT:
                    inst_mod.terminate(inst)
                continue
            if inst.exited() is not None or inst.process is None:
                self.draining.remove(inst)
            elif now - inst.term_sent_at > grace:
                inst_mod.kill(inst)

    def converged(self) -> bool:
        desired = {v.variant_name: v for v in self.registry.variants(self.name)}
        for pool in self.pools.values():
            v = desired.get(pool.variant)
            if (
                v is None
                or pool.starting
                or len(pool.ready) != v.desired_instance_count
                or pool.weight != v.desired_weight
            ):
                return False
        return self.acked_generation() >= self.generation

    # routing table and routers -------------------------------------------------------------------
    def publish(self) -> int:
        self.generation += 1
        variants = [
            RouteVariant(p.variant, p.weight, [RouteInstance(i.instance_id, i.url, i.handoff, i.pid) for i in p.ready])
            for p in self.pools.values()
        ]
        settings = {
            "max_payload_bytes": int(float(self.settings.get("max_payload_mb", 6)) * 1024 * 1024),
            "timeout": float(self.settings.get("timeout", 60)),
            "max_attempts": int(self.settings.get("max_attempts", 3)),
        }
        RoutingTable(self.generation, variants, settings).write(self.routes_path)
        for proc in self.routers:
            # Only workers that acknowledged have a SIGHUP handler; younger ones read the file at start.
            if proc.poll() is None and os.path.exists(os.path.join(self.status_dir, f"{proc.pid}.json")):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)
        self.state_dirty = True
        return self.generation

    def start_router(self) -> subprocess.Popen:
        record = self.registry.endpoint(self.name)
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        env.pop("SPARK_ML_ENDPOINT_TOKEN", None)
        if record.token:
            env["SPARK_ML_ENDPOINT_TOKEN"] = record.token
        logs = os.path.join(self.run_dir, "logs")
        os.makedirs(logs, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "spark_ml.endpoints.router",
            "--endpoint",
            self.name,
            "--routes",
            self.routes_path,
            "--status-dir",
            self.status_dir,
            "--host",
            record.host,
            "--port",
            str(self.port),
            "--parent-pid",
            str(os.getpid()),
        ]
        with open(os.path.join(logs, "router.log"), "ab") as out:
            return subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def acked_generation(self) -> int:
        """The oldest routing-table generation any live router worker still runs."""
        live = [p.pid for p in self.routers if p.poll() is None]
        if not live:
            return 0
        lowest = None
        for pid in live:
            try:
                with open(os.path.join(self.status_dir, f"{pid}.json")) as f:
                    generation = int(json.load(f)["generation"])
            except (OSError, ValueError, KeyError):
                return 0
            lowest = generation if lowest is None else min(lowest, generation)
        return lowest or 0

    def wait_acks(self, generation: int, timeout: float, require_all: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_generation() < generation:
            dead = [p for p in self.routers if p.poll() is not None]
            if require_all and dead:
                raise RuntimeError(
                    f"a router worker exited with code {dead[0].returncode}: "
                    f"{inst_mod.tail(os.path.join(self.run_dir, 'logs', 'router.log'))}"
                )
            if time.monotonic() > deadline:
                if require_all:
                    raise RuntimeError(f"the router workers did not start within {timeout:g} s")
                return
            time.sleep(0.02)

    def check_routers(self) -> None:
        for k, proc in enumerate(self.routers):
            if proc.poll() is not None:
                log.warning("router worker %d exited with code %s; restarting it", proc.pid, proc.returncode)
                self.routers[k] = self.start_router()

    # autoscaling ---------------------------------------------------------------------------------
    def autoscale(self) -> None:
        now = time.monotonic()
        if now < self.next_autoscale:
            return
        self.next_autoscale = now + float(self.settings.get("autoscale_interval", 1.0))
        policies = self.registry.policies(self.name)
        if not policies:
            self.trackers.clear()
            return
        from .metrics import invocation_counts

        counts = invocation_counts(self.metrics_dir)
        desired = {v.variant_name: v.desired_instance_count for v in self.registry.variants(self.name)}
        for variant, policy in policies.items():
            if variant not in desired:
                continue
            tracker = self.trackers.get(variant)
            if tracker is None or tracker.policy != policy:
                tracker = self.trackers[variant] = TargetTracker(policy)
            tracker.observe(now, counts.get(variant, 0.0))
            decision = tracker.decide(now, desired[variant])
            if decision is not None and decision.desired != desired[variant]:
                log.info(
                    "autoscaling %s/%s: %d -> %d (%s)",
                    self.name,
                    variant,
                    desired[variant],
                    decision.desired,
                    decision.reason,
                )
                self.registry.request_capacity(self.name, {variant: {"instance_count": decision.desired}})
                self.registry.add_activity(
                    self.name, variant, desired[variant], decision.desired, decision.reason
                )

    # state and shutdown --------------------------------------------------------------------------
    def write_state(self) -> None:
        records = []
        for pool in self.pools.values():
            self.registry.set_variant_current(self.name, pool.variant, pool.weight, len(pool.ready))
            for inst in pool.ready + pool.starting:
                records.append(
                    InstanceRecord(
                        self.name,
                        inst.instance_id,
                        pool.variant,
                        inst.pid,
                        inst.url or "",
                        inst.state,
                        inst.started_at,
                    )
                )
        for inst in self.draining:
            records.append(
                InstanceRecord(
                    self.name,
                    inst.instance_id,
                    inst.variant,
                    inst.pid,
                    inst.url or "",
                    inst_mod.DRAINING,
                    inst.started_at,
                )
            )
        self.registry.set_instances(self.name, records)
        self.state_dirty = False

    def teardown(self) -> None:
        for proc in self.routers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        everything = [i for p in self.pools.values() for i in p.ready + p.starting] + self.draining
        for inst in everything:
            inst_mod.terminate(inst)
        deadline = time.monotonic() + 10
        for proc in self.routers:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        inst_mod.wait_exited(everything, float(self.settings.get("graceful_timeout", 30)))
        if self.reserved is not None:
            self.reserved.close()

    def finish(self, failure: str | None) -> None:
        try:
            record = self.registry.endpoint(self.name)
        except LookupError:
            return
        if record.stop_requested == DELETE:
            self.registry.delete_endpoint(self.name)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for pool in self.pools.values():
            self.registry.set_variant_current(self.name, pool.variant, pool.weight, 0)
        self.registry.set_instances(self.name, [])
        if failure is not None:
            self.registry.update_endpoint(
                self.name, status=FAILED, failure_reason=failure[:4000], supervisor_pid=None
            )
        else:
            reason = None if record.stop_requested == STOP else "the supervisor was stopped by a signal"
            status = OUT_OF_SERVICE
            self.registry.update_endpoint(
                self.name, status=status, supervisor_pid=None, failure_reason=reason, stop_requested=0
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m spark_ml.endpoints.supervisor")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--log", required=True, help="file for the supervisor's own log")
    p.add_argument("--daemon", action="store_true", help="detach (double fork); prints the supervisor's pid")
    args = p.parse_args(argv)
    if args.daemon:
        pid = os.fork()
        if pid:
            print(pid, flush=True)
            os._exit(0)
        os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    out = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    Supervisor(args.endpoint).run()


if __name__ == "__main__":
    main()
