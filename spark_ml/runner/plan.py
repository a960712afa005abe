"""Dealing a channel's shards to workers."""

from __future__ import annotations

import heapq

from algorithms.channel import FULLY_REPLICATED, Channel, Shard

from .spec import ChannelPlan


class PlanError(ValueError):
    pass


def deal_shards(shards: list[Shard], num_workers: int) -> list[list[Shard]]:
    """Each shard to exactly one worker, balancing record counts (bytes when counts are unknown).

    Largest shard first to the least-loaded worker; ties go to the lower rank, so plans are deterministic.
    """
    loads = [(0, rank) for rank in range(num_workers)]
    heapq.heapify(loads)
    out: list[list[Shard]] = [[] for _ in range(num_workers)]

    def weight(s: Shard) -> int:
        return s.records if s.records is not None else (s.bytes or 0)

    for shard in sorted(shards, key=lambda s: (-weight(s), s.path)):
        load, rank = heapq.heappop(loads)
        out[rank].append(shard)
        heapq.heappush(loads, (load + weight(shard), rank))
    return [sorted(group, key=lambda s: s.path) for group in out]


def plan_channel(name: str, channel: Channel, num_workers: int) -> ChannelPlan:
    shards = channel.shards()
    if not shards:
        raise PlanError(f"channel {name} ({channel.path}) holds no shards")
    if channel.distribution == FULLY_REPLICATED:
        groups = [list(shards) for _ in range(num_workers)]
    else:
        if len(shards) < num_workers:
            raise PlanError(f"channel {name} has {len(shards)} shard(s) but numWorkers={num_workers}: with "
                            "ShardedByKey every worker needs at least one; write the channel with more shards "
                            "(recordsPerShard) or use FullyReplicated")
        groups = deal_shards(shards, num_workers)
    manifest = channel.manifest
    return ChannelPlan(name=name, path=channel.path, content_type=channel.content_type,
                       distribution=channel.distribution, feature_dim=channel.feature_dim,
                       has_label=manifest.has_label if manifest else None, total_records=channel.num_records,
                       assignments=[[(s.path, s.records) for s in group] for group in groups])
