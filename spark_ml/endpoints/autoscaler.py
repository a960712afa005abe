"""Target tracking per variant: invocations per instance per minute, SageMaker's predefined metric.

The metric is the variant's total invocations over a look-back window, divided by its instances.
Adding instances does not change the total, so the known thrash mode of queue-based metrics (load per
replica drops right after a scale-out, which triggers a scale-in) cannot happen here. Scale-out goes to
``ceil(rate / target)``; scale-in only to a count that would stay ``scale_in_margin`` below the
target, so steady load sits in a dead band between the two. Cooldowns as in Application Auto Scaling:
no scale-out within ``scale_out_cooldown`` of the last scale-out, no scale-in within
``scale_in_cooldown`` of the last scaling activity.

:class:`TargetTracker` decides for one variant; :class:`Autoscaler` runs in the endpoint's supervisor,
feeds the trackers the router workers' invocation counts, and writes their decisions to the registry
as desired instance counts (which the capacity reconciler then carries out) and scaling activities.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass

from .registry import Registry, ScalingPolicy

log = logging.getLogger("spark_ml.endpoints.supervisor")


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str


class TargetTracker:
    """One variant's autoscaling state; feed it ``observe(now, total_invocations)`` and ask ``decide``."""

    def __init__(self, policy: ScalingPolicy):
        self.policy = policy
        self.samples: deque[tuple[float, float]] = deque()
        self.last_scale_out = -math.inf
        self.last_scale_in = -math.inf

    def observe(self, now: float, total_invocations: float) -> None:
        self.samples.append((now, total_invocations))
        window = self.policy.metric_window
        while len(self.samples) > 2 and self.samples[1][0] <= now - window:
            self.samples.popleft()

    def rate_per_minute(self, now: float) -> float | None:
        """Invocations per minute over the last window; None until a whole window has been seen."""
        if len(self.samples) < 2:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        if t1 - t0 < self.policy.metric_window * 0.999:
            return None
        return max(c1 - c0, 0.0) * 60.0 / (t1 - t0)

    def decide(self, now: float, current: int) -> Decision | None:
        p = self.policy
        if current < p.min_capacity or current > p.max_capacity:
            target = min(max(current, p.min_capacity), p.max_capacity)
            return self._record(
                now,
                current,
                Decision(target, f"capacity {current} outside {p.min_capacity}..{p.max_capacity}"),
            )
        rate = self.rate_per_minute(now)
        if rate is None:
            return None
        per_instance = rate / current
        wanted_out = min(max(math.ceil(rate / p.target_value - 1e-9), p.min_capacity), p.max_capacity)
        if wanted_out > current:
            if now - self.last_scale_out < p.scale_out_cooldown:
                return None
            return self._record(
                now,
                current,
                Decision(
                    wanted_out, f"{per_instance:.1f} invocations/instance/min > target {p.target_value:g}"
                ),
            )
        if p.disable_scale_in:
            return None
        wanted_in = min(
            max(math.ceil(rate / (p.target_value * (1 - p.scale_in_margin)) - 1e-9), p.min_capacity),
            p.max_capacity,
        )
        if wanted_in < current:
            if now - max(self.last_scale_in, self.last_scale_out) < p.scale_in_cooldown:
                return None
            return self._record(
                now,
                current,
                Decision(
                    wanted_in,
                    f"{per_instance:.1f} invocations/instance/min; {wanted_in} instance(s) stay below "
                    f"target {p.target_value:g}",
                ),
            )
        return None

    def _record(self, now: float, current: int, decision: Decision) -> Decision:
        if decision.desired > current:
            self.last_scale_out = now
        elif decision.desired < current:
            self.last_scale_in = now
        return decision


class Autoscaler:
    """The scaling policies of one endpoint's variants, applied every ``interval`` seconds."""

    def __init__(self, registry: Registry, endpoint: str, metrics_dir: str, interval: float):
        self.registry = registry
        self.endpoint = endpoint
        self.metrics_dir = metrics_dir
        self.interval = interval
        self.trackers: dict[str, TargetTracker] = {}
        self.next_step = 0.0

    def reset(self) -> None:
        """Forget the variants' history (a new config's variants start afresh)."""
        self.trackers.clear()

    def step(self) -> None:
        now = time.monotonic()
        if now < self.next_step:
            return
        self.next_step = now + self.interval
        policies = self.registry.policies(self.endpoint)
        if not policies:
            self.trackers.clear()
            return
        from .metrics import invocation_counts

        counts = invocation_counts(self.metrics_dir)
        desired = {v.variant_name: v.desired_instance_count for v in self.registry.variants(self.endpoint)}
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
                    self.endpoint,
                    variant,
                    desired[variant],
                    decision.desired,
                    decision.reason,
                )
                self.registry.request_capacity(self.endpoint, {variant: {"instance_count": decision.desired}})
                self.registry.add_activity(self.endpoint, variant, desired[variant], decision.desired, decision.reason)
