"""Instances on their way out of an endpoint, stopped only once no router sends them new requests.

An instance leaves the routing table first (a new generation is published); once every router worker
acknowledged that generation, or after ``ACK_TIMEOUT`` if one does not answer, it gets SIGTERM and
finishes what it holds; SIGKILL follows after the endpoint's grace period, as SageMaker does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import instances
from .instances import Instance

ACK_TIMEOUT = 5.0


class Drainer:
    def __init__(self, graceful_timeout: float, acked_generation: Callable[[], int]):
        self.graceful_timeout = graceful_timeout
        self.acked_generation = acked_generation  # the oldest routing table a live router worker runs
        self.instances: list[Instance] = []

    def retire(self, victims: list[Instance], generation: int) -> None:
        """Drain ``victims`` once every router runs ``generation`` (a table without them)."""
        for inst in victims:
            inst.state = instances.DRAINING
            inst.drain_after_generation = generation
            inst.drain_since = time.monotonic()
        self.instances.extend(victims)

    def evict(self, inst: Instance) -> None:
        """A dead or unresponsive instance: killed now, reaped here like the others."""
        instances.kill(inst)
        inst.drain_after_generation = 0
        self.instances.append(inst)

    def step(self) -> None:
        if not self.instances:
            return
        acked = self.acked_generation()
        now = time.monotonic()
        for inst in list(self.instances):
            if inst.term_sent_at is None:
                if acked >= (inst.drain_after_generation or 0) or now - inst.drain_since > ACK_TIMEOUT:
                    instances.terminate(inst)
                continue
            if inst.exited() is not None or inst.process is None:
                self.instances.remove(inst)
            elif now - inst.term_sent_at > self.graceful_timeout:
                instances.kill(inst)
