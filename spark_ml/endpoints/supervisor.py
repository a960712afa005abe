"""An endpoint's supervisor: a detached process that owns its routers and instances.

It outlives the Python session that created the endpoint. Every tick it reconciles the registry's
desired state with the processes it runs, through one collaborator per job:

- a new config (``update_endpoint``), the rollout here: start the new variants' instances
  (:class:`~.pools.Launcher`), wait for ``/ping``, switch the routing table
  (:class:`~.router_workers.RouterWorkers`), then drain the old instances (:class:`~.draining.Drainer`);
  if the new instances fail, the endpoint stays on its old config with a failure reason;
- weights and instance counts (``update_endpoint_weights_and_capacities``, the
  :class:`~.autoscaler.Autoscaler`): :class:`~.capacity.CapacityReconciler`;
- health: :func:`~.health.take_out_unhealthy` (a dead router worker is restarted by RouterWorkers);
- what ``describe_endpoint`` shows: :class:`~.status.EndpointStatus`;
- a stop or delete request: routers then instances get SIGTERM, then SIGKILL after the grace period.

Run as ``python -m spark_ml.endpoints.supervisor --endpoint NAME --log FILE [--daemon]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from . import health, instances
from .autoscaler import Autoscaler
from .capacity import CapacityReconciler
from .draining import Drainer
from .pools import Launcher, Pool
from .registry import IN_SERVICE, EndpointRecord, EndpointSettings, Registry
from .router_workers import RouterWorkers
from .status import EndpointStatus

log = logging.getLogger("spark_ml.endpoints.supervisor")

TICK = 0.1
ROUTER_SHUTDOWN = 10.0  # seconds router workers get to finish their requests when the endpoint stops


class Supervisor:
    def __init__(self, name: str, registry: Registry | None = None):
        self.name = name
        self.registry = registry or Registry()
        self.settings = EndpointSettings.from_dict(self.registry.endpoint(name).settings)
        self.routers = RouterWorkers(name, self.settings)
        self.launcher = Launcher(self.registry, self.settings)
        self.drainer = Drainer(self.settings.graceful_timeout, self.routers.acked_generation)
        self.status = EndpointStatus(self.registry, name)
        self.capacity = CapacityReconciler(self.launcher, self.drainer, self.status, self.settings.startup_timeout)
        self.autoscaler = Autoscaler(self.registry, name, self.routers.metrics_dir, self.settings.autoscale_interval)
        self.pools: dict[str, Pool] = {}
        self.config_name: str | None = None
        self.stop = threading.Event()

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
            self.status.record_exit(self.pools.values(), self.settings.run_dir, failed)

    def boot(self) -> None:
        record = self.registry.endpoint(self.name)
        port = self.routers.reserve_port(record.host, record.port)
        host = f"[{record.host}]" if ":" in record.host else record.host
        self.registry.update_endpoint(self.name, port=port, url=f"http://{host}:{port}", supervisor_pid=os.getpid())
        config = self.registry.config(record.config_name)
        self.pools = self.launcher.start_pools(config)
        self.config_name = config.name
        self.routers.publish(self.pools.values())
        self.routers.start(record.token)
        self.status.record(self.pools.values(), self.drainer.instances)
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
            self.roll_out(record)
            return
        changed = self.capacity.reconcile(self.pools, self.registry.variants(self.name), self.routers.generation)
        changed |= health.take_out_unhealthy(self.pools.values(), self.drainer)
        if changed:
            self.routers.publish(self.pools.values())
        self.routers.restart_exited()
        self.drainer.step()
        self.autoscaler.step()
        self.status.record_if_changed(self.pools.values(), self.drainer.instances)
        if record.applied_generation < record.generation and self.converged():  # the cheap test first
            self.registry.update_endpoint(self.name, applied_generation=record.generation, status=IN_SERVICE)

    def roll_out(self, record: EndpointRecord) -> None:
        """update_endpoint: new instances first, then switch, then drain the old ones."""
        try:
            config = self.registry.config(record.config_name)
            new_pools = self.launcher.start_pools(config)
        except Exception as exc:
            reason = f"update to config {record.config_name!r} failed, still serving {self.config_name!r}: {exc}"
            log.error(reason)
            self.registry.update_endpoint(
                self.name,
                config_name=self.config_name,
                status=IN_SERVICE,
                failure_reason=reason,
                applied_generation=record.generation,
            )
            return
        old = [i for pool in self.pools.values() for i in pool.members()]
        self.pools = new_pools
        self.config_name = config.name
        self.autoscaler.reset()
        self.drainer.retire(old, self.routers.publish(self.pools.values()))
        self.registry.replace_variants(
            self.name, config, {p.variant: (p.weight, len(p.ready)) for p in self.pools.values()}
        )
        self.status.record(self.pools.values(), self.drainer.instances)
        self.registry.update_endpoint(
            self.name,
            current_config_name=config.name,
            status=IN_SERVICE,
            applied_generation=record.generation,
            failure_reason=None,
        )

    def converged(self) -> bool:
        """Whether the processes match the registry's desired state and every router runs the latest table."""
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
        return self.routers.acked_generation() >= self.routers.generation

    def teardown(self) -> None:
        self.routers.terminate()
        everything = [i for p in self.pools.values() for i in p.members()] + self.drainer.instances
        for inst in everything:
            instances.terminate(inst)
        self.routers.wait_exited(ROUTER_SHUTDOWN)
        instances.wait_exited(everything, self.settings.graceful_timeout)


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
