"""Matching each pool to the registry's desired weight and instance count.

The desired values come from ``update_endpoint_weights_and_capacities`` and the autoscaler. Starting
instances join the pool (and the routing table) once they answer ``/ping``; one that dies while
starting is counted, and the pool waits 2^failures seconds (at most a minute) before the next start,
so a model that cannot load does not spin. Surplus instances go starting ones first (never routed to),
then ready ones, which leave the table before they are drained.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from . import instances
from .draining import Drainer
from .instances import Instance, InstanceFailed
from .pools import Launcher, Pool
from .registry import VariantRecord
from .status import EndpointStatus

log = logging.getLogger("spark_ml.endpoints.supervisor")


@dataclass
class CapacityReconciler:
    launcher: Launcher
    drainer: Drainer
    status: EndpointStatus  # start failures are reported there
    startup_timeout: float  # seconds a starting instance has to answer /ping

    def reconcile(self, pools: dict[str, Pool], desired: list[VariantRecord], generation: int) -> bool:
        """One step towards ``desired``; True if the routing table must change. ``generation``: the table
        the routers run now; the next one is published when this returns True."""
        changed = False
        now = time.monotonic()
        for v in desired:
            pool = pools.get(v.variant_name)
            if pool is None:
                continue
            if pool.weight != v.desired_weight:
                pool.weight = v.desired_weight
                changed = True
            changed |= self._promote_started(pool, now, generation)
            have = len(pool.ready) + len(pool.starting)
            if have < v.desired_instance_count and now >= pool.retry_at:
                for _ in range(v.desired_instance_count - have):
                    pool.starting.append(self.launcher.start(pool))
            elif have > v.desired_instance_count:
                victims, took_ready = _take_surplus(pool, have - v.desired_instance_count)
                changed |= took_ready
                # once the routers run a table without them: this one, or the one this step's changes publish
                self.drainer.retire(victims, generation + (1 if changed else 0))
        return changed

    def _promote_started(self, pool: Pool, now: float, generation: int) -> bool:
        """Move instances that answer ``/ping`` to ``ready``; give up on dead or late ones. True if any joined."""
        joined = False
        for inst in list(pool.starting):
            try:
                ready = instances.poll_ready(inst)
            except InstanceFailed as exc:
                log.error("%s", exc)
                pool.starting.remove(inst)
                pool.start_failures += 1
                pool.retry_at = now + min(2.0**pool.start_failures, 60.0)
                self.status.report_failure(str(exc))
                continue
            if ready:
                inst.state = instances.READY
                pool.starting.remove(inst)
                pool.ready.append(inst)
                pool.start_failures = 0
                joined = True
            elif now - inst.started_at_monotonic > self.startup_timeout:
                log.error("instance %s did not become ready in time", inst.instance_id)
                pool.starting.remove(inst)
                self.drainer.retire([inst], generation)
        return joined


def _take_surplus(pool: Pool, extra: int) -> tuple[list[Instance], bool]:
    """Take ``extra`` instances out of the pool, starting ones first; and whether ready ones were taken."""
    victims = pool.starting[-extra:] if extra <= len(pool.starting) else list(pool.starting)
    for inst in victims:
        pool.starting.remove(inst)
    extra -= len(victims)
    if extra:
        victims += pool.ready[-extra:]
        del pool.ready[-extra:]
    return victims, bool(extra)
