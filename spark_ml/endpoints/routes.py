"""The routing table an endpoint's supervisor publishes and its router workers follow.

A JSON file replaced atomically; each publish has a higher ``generation``. Router workers reload on
SIGHUP (sent by the supervisor) and, as a fallback, when the file's mtime changes. Each worker
acknowledges the generation it runs in ``<status_dir>/<pid>.json`` so the supervisor knows when an
old instance no longer receives new requests and can be drained.
"""

from __future__ import annotations

import json
import os
import random
import time
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from itertools import accumulate


@dataclass
class RouteInstance:
    instance_id: str
    url: str  # base URL, e.g. http://127.0.0.1:41234
    handoff: str | None = None  # the instance's shared-memory handoff socket (instances the endpoint started)
    pid: int | None = None  # its process, which must be the one holding that socket


@dataclass
class RouteVariant:
    name: str
    weight: float
    instances: list[RouteInstance] = field(default_factory=list)


@dataclass
class RoutingTable:
    generation: int
    variants: list[RouteVariant]
    settings: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RoutingTable:
        doc = json.loads(text)
        variants = [
            RouteVariant(v["name"], float(v["weight"]), [RouteInstance(**i) for i in v["instances"]])
            for v in doc["variants"]
        ]
        return cls(int(doc["generation"]), variants, doc.get("settings", {}))

    def write(self, path: str) -> None:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str) -> RoutingTable:
        with open(path) as f:
            return cls.from_json(f.read())


class NoVariant(LookupError):
    """No variant can take the request: an unknown target variant, or all weights are zero."""


class Balancer:
    """One router worker's choices: weighted random variant, least-outstanding instance within it.

    Outstanding counts are per worker; with several workers each balances its own share of the
    traffic, which keeps the choice lock-free. An instance that refused a connection is skipped for
    ``eject_seconds`` unless nothing else is left.
    """

    def __init__(self, table: RoutingTable, eject_seconds: float = 2.0):
        self.outstanding: dict[str, int] = {}
        self.ejected_until: dict[str, float] = {}
        self.eject_seconds = eject_seconds
        self.load(table)

    def load(self, table: RoutingTable) -> None:
        self.table = table
        self.by_name = {v.name: v for v in table.variants}
        weighted = [v for v in table.variants if v.weight > 0 and v.instances]
        self.weighted = weighted
        self.cumulative = list(accumulate(v.weight for v in weighted))
        live = {i.instance_id for v in table.variants for i in v.instances}
        self.ejected_until = {k: t for k, t in self.ejected_until.items() if k in live}

    def variant(self, target: str | None) -> RouteVariant:
        if target:
            try:
                return self.by_name[target]
            except KeyError:
                raise NoVariant(
                    f"unknown target variant {target!r}; variants: {', '.join(self.by_name) or 'none'}"
                ) from None
        if not self.weighted:
            raise NoVariant("no variant has a positive weight and a running instance")
        if len(self.weighted) == 1:
            return self.weighted[0]
        return self.weighted[
            bisect_right(self.cumulative, random.random() * self.cumulative[-1])
            if self.cumulative[-1] > 0
            else 0
        ]

    def instance(self, variant: RouteVariant, tried: set[str] | None = None) -> RouteInstance | None:
        """The least busy instance not tried yet (ejected ones last); None when none is left."""
        now = time.monotonic()
        best, best_key = None, None
        for inst in variant.instances:
            if tried and inst.instance_id in tried:
                continue
            key = (
                self.ejected_until.get(inst.instance_id, 0.0) > now,
                self.outstanding.get(inst.instance_id, 0),
                random.random(),
            )
            if best_key is None or key < best_key:
                best, best_key = inst, key
        return best

    def eject(self, inst: RouteInstance) -> None:
        self.ejected_until[inst.instance_id] = time.monotonic() + self.eject_seconds
