"""Health of an endpoint's ready instances: a dead or unresponsive one leaves its pool and is replaced.

An instance is unhealthy when its process exited, or when ``/ping`` failed ``PING_FAILURES`` times in a
row (asked every ``PING_EVERY`` seconds). It is taken out of the pool (so out of the next routing table)
and killed; the capacity reconciler then sees the pool short and starts a replacement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from . import instances
from .draining import Drainer
from .pools import Pool

log = logging.getLogger("spark_ml.endpoints.supervisor")

PING_EVERY = 5.0
PING_FAILURES = 3


def take_out_unhealthy(pools: Iterable[Pool], drainer: Drainer) -> bool:
    """Remove unhealthy instances from their pools; True when any was removed (the table must change)."""
    changed = False
    now = time.monotonic()
    for pool in pools:
        for inst in list(pool.ready):
            code = inst.exited()
            if code is None and now >= inst.next_ping:
                inst.next_ping = now + PING_EVERY
                inst.ping_failures = 0 if instances.ping(inst.url, timeout=2.0) else inst.ping_failures + 1
            if code is not None or inst.ping_failures >= PING_FAILURES:
                why = f"exited with code {code}" if code is not None else "failed /ping"
                log.warning("instance %s %s; replacing it", inst.instance_id, why)
                pool.ready.remove(inst)
                drainer.evict(inst)
                changed = True
    return changed
