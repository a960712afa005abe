"""An endpoint's variants as pools of instance processes, and starting instances into them."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import instances
from .instances import Instance
from .registry import EndpointConfig, EndpointSettings, Registry


@dataclass
class Pool:
    """One variant's instances: ``ready`` ones are in the routing table, ``starting`` ones not yet."""

    variant: str
    model_name: str
    weight: float
    ready: list[Instance] = field(default_factory=list)
    starting: list[Instance] = field(default_factory=list)
    start_failures: int = 0  # in a row; the next start waits 2^failures seconds (at most a minute)
    retry_at: float = 0.0

    def members(self) -> list[Instance]:
        return self.ready + self.starting


class Launcher:
    """Starts a variant's instances as the endpoint's settings say (threads, body limit, grace period)."""

    def __init__(self, registry: Registry, settings: EndpointSettings):
        self.registry = registry
        self.settings = settings

    def start(self, pool: Pool) -> Instance:
        """One more instance of the pool's model; it answers ``/ping`` later (see :func:`.instances.poll_ready`)."""
        return instances.start(
            self.registry.model(pool.model_name),
            pool.variant,
            self.settings.run_dir,
            threads=self.settings.threads,
            max_payload_mb=self.settings.max_payload_mb,
            graceful_timeout=self.settings.graceful_timeout,
        )

    def start_pools(self, config: EndpointConfig) -> dict[str, Pool]:
        """Every variant's initial instances, ready: all of them or none (the rest are stopped, the error raised)."""
        pools = {
            v.variant_name: Pool(v.variant_name, v.model, float(v.initial_weight)) for v in config.variants
        }
        started: list[Instance] = []
        try:
            for v in config.variants:
                for _ in range(int(v.initial_instance_count)):
                    started.append(self.start(pools[v.variant_name]))
        except BaseException:
            for inst in started:
                instances.terminate(inst)
            instances.wait_exited(started, 5.0)
            raise
        instances.wait_ready(started, self.settings.startup_timeout)
        for inst in started:
            pools[inst.variant].ready.append(inst)
        return pools
