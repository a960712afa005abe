"""What an endpoint's supervisor tells the registry about the processes it runs.

``describe_endpoint`` reads it: each variant's current weight and instance count, each instance's
record (ready, starting or draining), a failure reason, and on exit the endpoint's final status.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from . import instances
from .instances import Instance
from .pools import Pool
from .registry import DELETE, FAILED, OUT_OF_SERVICE, STOP, InstanceRecord, Registry


class EndpointStatus:
    def __init__(self, registry: Registry, endpoint: str):
        self.registry = registry
        self.endpoint = endpoint
        self._written: tuple | None = None

    def record(self, pools: Iterable[Pool], draining: list[Instance]) -> None:
        """Write the current weights, counts and instances."""
        variants, records = self._current(pools, draining)
        for variant, weight, count in variants:
            self.registry.set_variant_current(self.endpoint, variant, weight, count)
        self.registry.set_instances(self.endpoint, records)
        self._written = (variants, records)

    def record_if_changed(self, pools: Iterable[Pool], draining: list[Instance]) -> None:
        """:meth:`record`, when anything differs from what was last written (cheap to ask every tick)."""
        pools = list(pools)
        if self._current(pools, draining) != self._written:
            self.record(pools, draining)

    def _current(self, pools: Iterable[Pool], draining: list[Instance]) -> tuple[list, list[InstanceRecord]]:
        variants, records = [], []
        for pool in pools:
            variants.append((pool.variant, pool.weight, len(pool.ready)))
            records += [self._instance(inst, pool.variant, inst.state) for inst in pool.members()]
        records += [self._instance(inst, inst.variant, instances.DRAINING) for inst in draining]
        return variants, records

    def _instance(self, inst: Instance, variant: str, state: str) -> InstanceRecord:
        return InstanceRecord(
            self.endpoint, inst.instance_id, variant, inst.pid, inst.url or "", state, inst.started_at
        )

    def report_failure(self, reason: str) -> None:
        """A problem the endpoint survives (it keeps serving); ``describe_endpoint`` shows it."""
        self.registry.update_endpoint(self.endpoint, failure_reason=reason[:2000])

    def record_exit(self, pools: Iterable[Pool], run_dir: str, failure: str | None) -> None:
        """The supervisor is done: OutOfService (stopped), Failed (with why), or gone (deleted)."""
        try:
            record = self.registry.endpoint(self.endpoint)
        except LookupError:
            return
        if record.stop_requested == DELETE:
            self.registry.delete_endpoint(self.endpoint)
            shutil.rmtree(run_dir, ignore_errors=True)
            return
        for pool in pools:
            self.registry.set_variant_current(self.endpoint, pool.variant, pool.weight, 0)
        self.registry.set_instances(self.endpoint, [])
        if failure is not None:
            self.registry.update_endpoint(
                self.endpoint, status=FAILED, failure_reason=failure[:4000], supervisor_pid=None
            )
        else:
            reason = None if record.stop_requested == STOP else "the supervisor was stopped by a signal"
            self.registry.update_endpoint(
                self.endpoint, status=OUT_OF_SERVICE, supervisor_pid=None, failure_reason=reason, stop_requested=0
            )
