"""Hosting's tables in the SQLite registry: models, endpoint configs, endpoints, variants, instances.

The registry is the contract between the control plane (this library, the CLI) and an endpoint's
supervisor process: the control plane writes the *desired* state (config name, weights and instance
counts, scaling policies, a stop request) and bumps ``generation``; the supervisor reconciles and
writes the *current* state back (status, instances, ``applied_generation``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..home import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosting_models (
    name TEXT PRIMARY KEY,
    model_data TEXT,
    command TEXT,
    url TEXT,
    environment TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hosting_endpoint_configs (
    name TEXT PRIMARY KEY,
    variants TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hosting_endpoints (
    name TEXT PRIMARY KEY,
    config_name TEXT NOT NULL,
    current_config_name TEXT,
    status TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    url TEXT,
    token TEXT,
    settings TEXT NOT NULL DEFAULT '{}',
    supervisor_pid INTEGER,
    generation INTEGER NOT NULL DEFAULT 0,
    applied_generation INTEGER NOT NULL DEFAULT -1,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hosting_variants (
    endpoint TEXT NOT NULL,
    variant_name TEXT NOT NULL,
    model TEXT NOT NULL,
    desired_weight REAL NOT NULL,
    desired_instance_count INTEGER NOT NULL,
    current_weight REAL,
    current_instance_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, variant_name)
);
CREATE TABLE IF NOT EXISTS hosting_instances (
    endpoint TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    variant_name TEXT NOT NULL,
    pid INTEGER,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (endpoint, instance_id)
);
CREATE TABLE IF NOT EXISTS hosting_scaling_policies (
    endpoint TEXT NOT NULL,
    variant_name TEXT NOT NULL,
    policy TEXT NOT NULL,
    PRIMARY KEY (endpoint, variant_name)
);
CREATE TABLE IF NOT EXISTS hosting_scaling_activities (
    endpoint TEXT NOT NULL,
    variant_name TEXT NOT NULL,
    at REAL NOT NULL,
    from_count INTEGER NOT NULL,
    to_count INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""

# Endpoint statuses, as SageMaker names them.
CREATING, IN_SERVICE, UPDATING, SYSTEM_UPDATING, DELETING, FAILED = (
    "Creating",
    "InService",
    "Updating",
    "SystemUpdating",
    "Deleting",
    "Failed",
)
OUT_OF_SERVICE = "OutOfService"  # stopped: kept in the registry, no processes
STOP, DELETE = 1, 2  # values of stop_requested
ACTIVE_STATUSES = (CREATING, IN_SERVICE, UPDATING, SYSTEM_UPDATING, DELETING)


class NotFound(LookupError):
    pass


@dataclass(frozen=True)
class ProductionVariant:
    """One variant of an endpoint config: a model, its instance count and its relative traffic weight."""

    variant_name: str = "AllTraffic"
    model: str = ""
    initial_instance_count: int = 1
    initial_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.variant_name or not all(c.isalnum() or c in "-_" for c in self.variant_name):
            raise ValueError(f"variant_name {self.variant_name!r}: use letters, digits, '-' and '_'")
        if not self.model:
            raise ValueError(f"variant {self.variant_name}: model (a registered model's name) is required")
        if int(self.initial_instance_count) < 1:
            raise ValueError(
                f"variant {self.variant_name}: initial_instance_count must be >= 1, "
                f"got {self.initial_instance_count}"
            )
        if not float(self.initial_weight) >= 0:
            raise ValueError(
                f"variant {self.variant_name}: initial_weight must be >= 0, got {self.initial_weight}"
            )


@dataclass
class HostedModel:
    """A servable model: an artifact (``model_data``), a server command, or a running server's URL."""

    name: str
    model_data: str | None = None
    command: list[str] | None = None
    url: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def kind(self) -> str:
        return "url" if self.url else "command" if self.command else "artifact"


@dataclass
class EndpointConfig:
    name: str
    variants: list[ProductionVariant]
    created_at: float = 0.0


@dataclass(frozen=True)
class ScalingPolicy:
    """Target tracking on invocations per instance per minute (SageMakerVariantInvocationsPerInstance)."""

    target_value: float = 70.0
    min_capacity: int = 1
    max_capacity: int = 4
    scale_in_cooldown: float = 300.0
    scale_out_cooldown: float = 300.0
    disable_scale_in: bool = False
    metric_window: float = 60.0  # seconds of traffic the metric averages over
    scale_in_margin: float = 0.1  # scale in only when the smaller fleet stays this far below target

    def __post_init__(self) -> None:
        if not self.target_value > 0:
            raise ValueError(f"target_value must be > 0, got {self.target_value}")
        if not 1 <= int(self.min_capacity) <= int(self.max_capacity):
            raise ValueError(
                f"need 1 <= min_capacity <= max_capacity, got {self.min_capacity}..{self.max_capacity}"
            )
        for name in ("scale_in_cooldown", "scale_out_cooldown"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.metric_window > 0:
            raise ValueError("metric_window must be > 0 seconds")
        if not 0 <= self.scale_in_margin < 1:
            raise ValueError("scale_in_margin must be in [0, 1)")


@dataclass(frozen=True)
class EndpointSettings:
    """How an endpoint's processes run, fixed when it is created (the ``settings`` column, as JSON).

    The defaults here are the supervisor's for keys a row does not have; :func:`~.api.create_endpoint`
    has its own keyword defaults, which it always writes.
    """

    run_dir: str
    router_workers: int = 2
    max_payload_mb: float = 6.0
    timeout: float = 60.0  # seconds a router waits for an instance before answering 504
    max_attempts: int = 3  # instances a request is tried on when connections fail
    startup_timeout: float = 120.0
    graceful_timeout: float = 30.0  # SIGTERM to SIGKILL
    threads: int = 1  # BLAS/OpenMP threads per instance
    autoscale_interval: float = 1.0

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> EndpointSettings:
        """Known keys, converted to their field's type (JSON may hold ``2`` for ``2.0``); others ignored."""
        given = {}
        for f in fields(cls):
            if f.name in doc:
                convert = str if f.name == "run_dir" else type(f.default)
                given[f.name] = convert(doc[f.name])
        return cls(**given)

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)


@dataclass
class EndpointRecord:
    name: str
    config_name: str
    current_config_name: str | None
    status: str
    host: str
    port: int
    url: str | None
    token: str | None
    settings: dict[str, Any]
    supervisor_pid: int | None
    generation: int
    applied_generation: int
    stop_requested: int  # 0 keep running, STOP or DELETE
    failure_reason: str | None
    created_at: float
    updated_at: float


@dataclass
class VariantRecord:
    endpoint: str
    variant_name: str
    model: str
    desired_weight: float
    desired_instance_count: int
    current_weight: float | None
    current_instance_count: int


@dataclass
class InstanceRecord:
    endpoint: str
    instance_id: str
    variant_name: str
    pid: int | None
    url: str
    status: str
    started_at: float


class Registry:
    """Typed access to the hosting tables of one SQLite registry."""

    def __init__(self, conn: sqlite3.Connection | None = None):
        self.conn = conn or connect()
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # models ----------------------------------------------------------------------------------------
    def add_model(self, model: HostedModel) -> HostedModel:
        model.created_at = model.created_at or time.time()
        try:
            self.conn.execute(
                "INSERT INTO hosting_models VALUES (?, ?, ?, ?, ?, ?)",
                (
                    model.name,
                    model.model_data,
                    json.dumps(model.command) if model.command else None,
                    model.url,
                    json.dumps(model.environment),
                    model.created_at,
                ),
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"a model named {model.name!r} already exists") from None
        return model

    def model(self, name: str) -> HostedModel:
        row = self.conn.execute("SELECT * FROM hosting_models WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no model named {name!r}")
        return _model(row)

    def models(self) -> list[HostedModel]:
        return [_model(r) for r in self.conn.execute("SELECT * FROM hosting_models ORDER BY name")]

    def delete_model(self, name: str) -> None:
        self.model(name)
        self.conn.execute("DELETE FROM hosting_models WHERE name = ?", (name,))

    # endpoint configs ------------------------------------------------------------------------------
    def add_config(self, config: EndpointConfig) -> EndpointConfig:
        config.created_at = config.created_at or time.time()
        try:
            self.conn.execute(
                "INSERT INTO hosting_endpoint_configs VALUES (?, ?, ?)",
                (config.name, json.dumps([asdict(v) for v in config.variants]), config.created_at),
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"an endpoint config named {config.name!r} already exists") from None
        return config

    def config(self, name: str) -> EndpointConfig:
        row = self.conn.execute("SELECT * FROM hosting_endpoint_configs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no endpoint config named {name!r}")
        return _config(row)

    def configs(self) -> list[EndpointConfig]:
        return [_config(r) for r in self.conn.execute("SELECT * FROM hosting_endpoint_configs ORDER BY name")]

    def delete_config(self, name: str) -> None:
        self.config(name)
        self.conn.execute("DELETE FROM hosting_endpoint_configs WHERE name = ?", (name,))

    # endpoints -------------------------------------------------------------------------------------
    def add_endpoint(
        self,
        name: str,
        config: EndpointConfig,
        host: str,
        port: int,
        token: str | None,
        settings: dict[str, Any],
    ) -> None:
        now = time.time()
        with transaction(self.conn):
            try:
                self.conn.execute(
                    "INSERT INTO hosting_endpoints (name, config_name, status, host, port, token, settings, "
                    "generation, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                    (name, config.name, CREATING, host, port, token, json.dumps(settings), now, now),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"an endpoint named {name!r} already exists") from None
            self._set_variants(name, config)

    def _set_variants(self, name: str, config: EndpointConfig) -> None:
        """Desired variants = the config's (the caller holds a transaction)."""
        self.conn.execute("DELETE FROM hosting_variants WHERE endpoint = ?", (name,))
        for v in config.variants:
            self.conn.execute(
                "INSERT INTO hosting_variants (endpoint, variant_name, model, desired_weight, "
                "desired_instance_count) VALUES (?, ?, ?, ?, ?)",
                (name, v.variant_name, v.model, float(v.initial_weight), int(v.initial_instance_count)),
            )

    def endpoint(self, name: str) -> EndpointRecord:
        row = self.conn.execute("SELECT * FROM hosting_endpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no endpoint named {name!r}")
        return _endpoint(row)

    def endpoints(self) -> list[EndpointRecord]:
        return [_endpoint(r) for r in self.conn.execute("SELECT * FROM hosting_endpoints ORDER BY name")]

    def update_endpoint(self, name: str, **fields: Any) -> None:
        if "settings" in fields:
            fields["settings"] = json.dumps(fields["settings"])
        fields["updated_at"] = time.time()
        names = ", ".join(f"{k} = ?" for k in fields)
        self.conn.execute(f"UPDATE hosting_endpoints SET {names} WHERE name = ?", (*fields.values(), name))

    def request_config(self, name: str, config: EndpointConfig) -> int:
        """Ask the supervisor to move the endpoint to ``config``; returns the generation to wait for."""
        with transaction(self.conn):
            self.endpoint(name)
            self.conn.execute(
                "UPDATE hosting_endpoints SET config_name = ?, status = ?, generation = generation + 1, "
                "failure_reason = NULL, updated_at = ? WHERE name = ?",
                (config.name, UPDATING, time.time(), name),
            )
            return self.endpoint(name).generation

    def request_capacity(self, name: str, changes: dict[str, dict[str, float | int]]) -> int:
        """Set desired weights / instance counts per variant; returns the generation to wait for."""
        with transaction(self.conn):
            self.endpoint(name)
            known = {v.variant_name for v in self.variants(name)}
            for variant, change in changes.items():
                if variant not in known:
                    raise ValueError(
                        f"endpoint {name!r} has no variant {variant!r} (variants: {sorted(known)})"
                    )
                if "weight" in change:
                    self.conn.execute(
                        "UPDATE hosting_variants SET desired_weight = ? WHERE endpoint = ? AND "
                        "variant_name = ?",
                        (float(change["weight"]), name, variant),
                    )
                if "instance_count" in change:
                    self.conn.execute(
                        "UPDATE hosting_variants SET desired_instance_count = ? WHERE endpoint = ? "
                        "AND variant_name = ?",
                        (int(change["instance_count"]), name, variant),
                    )
            self.conn.execute(
                "UPDATE hosting_endpoints SET generation = generation + 1, updated_at = ? WHERE name = ?",
                (time.time(), name),
            )
            return self.endpoint(name).generation

    def delete_endpoint(self, name: str) -> None:
        with transaction(self.conn):
            for table in (
                "hosting_variants",
                "hosting_instances",
                "hosting_scaling_policies",
                "hosting_scaling_activities",
            ):
                self.conn.execute(f"DELETE FROM {table} WHERE endpoint = ?", (name,))
            self.conn.execute("DELETE FROM hosting_endpoints WHERE name = ?", (name,))

    # variants and instances ------------------------------------------------------------------------
    def variants(self, endpoint: str) -> list[VariantRecord]:
        rows = self.conn.execute(
            "SELECT * FROM hosting_variants WHERE endpoint = ? ORDER BY rowid", (endpoint,)
        )
        return [VariantRecord(**dict(r)) for r in rows]

    def replace_variants(
        self, endpoint: str, config: EndpointConfig, current: dict[str, tuple[float, int]]
    ) -> None:
        """After an update: the config's variants, with their current weight and instance count."""
        with transaction(self.conn):
            self._set_variants(endpoint, config)
            for variant, (weight, count) in current.items():
                self.set_variant_current(endpoint, variant, weight, count)

    def set_variant_current(self, endpoint: str, variant: str, weight: float, count: int) -> None:
        self.conn.execute(
            "UPDATE hosting_variants SET current_weight = ?, current_instance_count = ? "
            "WHERE endpoint = ? AND variant_name = ?",
            (weight, count, endpoint, variant),
        )

    def set_instances(self, endpoint: str, instances: list[InstanceRecord]) -> None:
        with transaction(self.conn):
            self.conn.execute("DELETE FROM hosting_instances WHERE endpoint = ?", (endpoint,))
            for i in instances:
                self.conn.execute(
                    "INSERT INTO hosting_instances VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (i.endpoint, i.instance_id, i.variant_name, i.pid, i.url, i.status, i.started_at),
                )

    def instances(self, endpoint: str) -> list[InstanceRecord]:
        rows = self.conn.execute(
            "SELECT * FROM hosting_instances WHERE endpoint = ? ORDER BY started_at", (endpoint,)
        )
        return [InstanceRecord(**dict(r)) for r in rows]

    # autoscaling -----------------------------------------------------------------------------------
    def put_policy(self, endpoint: str, variant: str, policy: ScalingPolicy) -> None:
        if variant not in {v.variant_name for v in self.variants(endpoint)}:
            raise ValueError(f"endpoint {endpoint!r} has no variant {variant!r}")
        self.conn.execute(
            "INSERT OR REPLACE INTO hosting_scaling_policies VALUES (?, ?, ?)",
            (endpoint, variant, json.dumps(asdict(policy))),
        )

    def delete_policy(self, endpoint: str, variant: str) -> None:
        self.conn.execute(
            "DELETE FROM hosting_scaling_policies WHERE endpoint = ? AND variant_name = ?",
            (endpoint, variant),
        )

    def policies(self, endpoint: str) -> dict[str, ScalingPolicy]:
        rows = self.conn.execute("SELECT * FROM hosting_scaling_policies WHERE endpoint = ?", (endpoint,))
        return {r["variant_name"]: ScalingPolicy(**json.loads(r["policy"])) for r in rows}

    def add_activity(self, endpoint: str, variant: str, from_count: int, to_count: int, reason: str) -> None:
        self.conn.execute(
            "INSERT INTO hosting_scaling_activities VALUES (?, ?, ?, ?, ?, ?)",
            (endpoint, variant, time.time(), from_count, to_count, reason),
        )

    def activities(self, endpoint: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM hosting_scaling_activities WHERE endpoint = ? ORDER BY at", (endpoint,)
        )
        return [dict(r) for r in rows]


def _model(row: sqlite3.Row) -> HostedModel:
    return HostedModel(
        name=row["name"],
        model_data=row["model_data"],
        command=json.loads(row["command"]) if row["command"] else None,
        url=row["url"],
        environment=json.loads(row["environment"]),
        created_at=row["created_at"],
    )


def _config(row: sqlite3.Row) -> EndpointConfig:
    return EndpointConfig(
        row["name"], [ProductionVariant(**v) for v in json.loads(row["variants"])], row["created_at"]
    )


def _endpoint(row: sqlite3.Row) -> EndpointRecord:
    d = dict(row)
    d["settings"] = json.loads(d["settings"])
    return EndpointRecord(**d)
