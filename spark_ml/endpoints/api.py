"""The hosting control plane, after SageMaker's API: models, endpoint configs, endpoints.

Create / describe / list / delete each object; ``update_endpoint`` (new config, no failed request),
``update_endpoint_weights_and_capacities``; stop / start; autoscaling policies. Endpoints run as
detached supervisor processes and are kept in the SQLite registry under ``SPARK_ML_HOME``, so they
outlive the session that made them and the CLI (``spark-ml endpoints``) sees them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from algorithms.serving.server import is_loopback

from ..home import pid_alive, subdir
from .registry import (
    ACTIVE_STATUSES,
    DELETE,
    FAILED,
    IN_SERVICE,
    OUT_OF_SERVICE,
    STOP,
    EndpointConfig,
    EndpointSettings,
    HostedModel,
    InstanceRecord,
    NotFound,
    ProductionVariant,
    Registry,
    ScalingPolicy,
)

SUPERVISOR_MODULE = "spark_ml.endpoints.supervisor"
# How a live supervisor is recognized in /proc: by its module, including the one it had before the control
# plane left spark_ml.hosting, so endpoints started then can still be described and stopped.
_SUPERVISOR_ARGV = {SUPERVISOR_MODULE.encode(), b"spark_ml.hosting.supervisor"}


class EndpointError(RuntimeError):
    """An endpoint failed to reach the state asked for; the message says why."""


@dataclass
class VariantDescription:
    variant_name: str
    model: str
    current_weight: float | None
    desired_weight: float
    current_instance_count: int
    desired_instance_count: int
    instances: list[InstanceRecord] = field(default_factory=list)
    scaling_policy: ScalingPolicy | None = None


@dataclass
class EndpointDescription:
    """DescribeEndpoint's answer; ``auth`` is ``"bearer"`` when a token is needed (:func:`endpoint_token`)."""

    name: str
    config_name: str
    status: str
    url: str | None
    auth: str
    variants: list[VariantDescription]
    failure_reason: str | None
    created_at: float
    updated_at: float
    supervisor_pid: int | None
    router_workers: int = 1
    scaling_activities: list[dict] = field(default_factory=list)


def _registry() -> Registry:
    return Registry()


# models ------------------------------------------------------------------------------------------------


def create_model(
    name: str,
    model_data: str | None = None,
    *,
    command: list[str] | None = None,
    url: str | None = None,
    environment: dict[str, str] | None = None,
) -> HostedModel:
    """Register a model: an artifact folder/URI, a server command (bring your own model server), or a URL.

    ``command`` gets ``SAGEMAKER_BIND_TO_PORT`` and ``SM_MODEL_DIR`` (and ``{port}`` / ``{model_dir}``
    in its arguments) and must answer ``/ping`` and ``/invocations``. ``url`` is a server someone else
    runs; it is health-checked but never started or scaled.
    """
    _check_name(name, "model")
    if url and (model_data or command):
        raise ValueError("give url alone, or model_data and/or command")
    if not (url or model_data or command):
        raise ValueError("a model needs model_data (an artifact), a command, or a url")
    if url:
        _check_model_url(url)
    if model_data and not command:
        from algorithms.artifact import read_manifest

        read_manifest(model_data)  # fails now, clearly, for a folder that is not a finished artifact
        if "://" not in model_data:
            model_data = os.path.abspath(os.path.expanduser(model_data))
    model = HostedModel(name, model_data, list(command) if command else None, url, dict(environment or {}))
    registry = _registry()
    try:
        return registry.add_model(model)
    finally:
        registry.close()


def describe_model(name: str) -> HostedModel:
    with contextlib.closing(_registry()) as r:
        return r.model(name)


def list_models() -> list[HostedModel]:
    with contextlib.closing(_registry()) as r:
        return r.models()


def delete_model(name: str) -> None:
    with contextlib.closing(_registry()) as r:
        r.delete_model(name)


# endpoint configs --------------------------------------------------------------------------------------


def create_endpoint_config(name: str, variants: list[ProductionVariant]) -> EndpointConfig:
    _check_name(name, "endpoint config")
    if not variants:
        raise ValueError("an endpoint config needs at least one ProductionVariant")
    names = [v.variant_name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names repeat: {names}")
    if sum(float(v.initial_weight) for v in variants) <= 0:
        raise ValueError("at least one variant needs a positive initial_weight")
    with contextlib.closing(_registry()) as r:
        for v in variants:
            r.model(v.model)  # NotFound names the missing model
        return r.add_config(EndpointConfig(name, list(variants)))


def describe_endpoint_config(name: str) -> EndpointConfig:
    with contextlib.closing(_registry()) as r:
        return r.config(name)


def list_endpoint_configs() -> list[EndpointConfig]:
    with contextlib.closing(_registry()) as r:
        return r.configs()


def delete_endpoint_config(name: str) -> None:
    with contextlib.closing(_registry()) as r:
        r.delete_config(name)


# endpoints ---------------------------------------------------------------------------------------------


def create_endpoint(
    name: str,
    config_name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    auth_token: str | bool | None = None,
    router_workers: int | None = None,
    max_payload_mb: float = 6.0,
    timeout: float = 60.0,
    startup_timeout: float = 120.0,
    graceful_timeout: float = 30.0,
    threads_per_instance: int = 1,
    wait: bool = True,
    wait_timeout: float = 300.0,
) -> EndpointDescription:
    """Start an endpoint for ``config_name``; with ``wait`` return once it is InService (or raise).

    ``router_workers`` (default: half the CPUs, 1 to 4) processes share the port; on a 2-core machine one
    worker leaves the cores to the instances. Binding to a non-loopback ``host`` requires ``auth_token``
    (a string, or ``True`` to generate one; read it back with :func:`endpoint_token`). Clients then send
    ``Authorization: Bearer <token>``.
    """
    _check_name(name, "endpoint")
    token = secrets.token_urlsafe(32) if auth_token is True else (auth_token or None)
    if not is_loopback(host) and not token:
        raise ValueError(
            f"binding endpoint {name!r} to {host} exposes it beyond this machine; pass auth_token= "
            "(a string, or True to generate one)"
        )
    router_workers = default_router_workers() if router_workers is None else int(router_workers)
    if router_workers < 1:
        raise ValueError("router_workers must be >= 1")
    if max_payload_mb <= 0 or timeout <= 0:
        raise ValueError("max_payload_mb and timeout must be > 0")
    run_dir = str(subdir("endpoints", name))
    settings = EndpointSettings(
        run_dir,
        router_workers=int(router_workers),
        max_payload_mb=float(max_payload_mb),
        timeout=float(timeout),
        startup_timeout=float(startup_timeout),
        graceful_timeout=float(graceful_timeout),
        threads=int(threads_per_instance),
    )
    with contextlib.closing(_registry()) as r:
        config = r.config(config_name)
        for v in config.variants:
            r.model(v.model)
        r.add_endpoint(name, config, host, int(port), token, asdict(settings))
    _launch_supervisor(name, run_dir)
    if wait:
        return wait_for_endpoint(name, wait_timeout)
    return describe_endpoint(name)


def default_router_workers() -> int:
    """Half the CPUs, at least 1 and at most 4: the router's work per request is a fraction of a model's."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _launch_supervisor(name: str, run_dir: str) -> int:
    log = os.path.join(run_dir, "supervisor.log")
    done = subprocess.run(
        [sys.executable, "-m", SUPERVISOR_MODULE, "--endpoint", name, "--log", log, "--daemon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        with contextlib.closing(_registry()) as r:
            r.update_endpoint(
                name, status=FAILED, failure_reason=f"the supervisor did not start: {done.stderr[-2000:]}"
            )
        raise EndpointError(f"endpoint {name}: the supervisor did not start: {done.stderr[-2000:]}")
    pid = int(done.stdout.strip())
    with contextlib.closing(_registry()) as r:
        r.update_endpoint(name, supervisor_pid=pid)
    return pid


def describe_endpoint(name: str) -> EndpointDescription:
    with contextlib.closing(_registry()) as r:
        record = r.endpoint(name)
        if (
            record.status in ACTIVE_STATUSES
            and not _supervisor_alive(record.supervisor_pid, name)
            and record.supervisor_pid is not None
        ):
            r.update_endpoint(
                name,
                status=FAILED,
                supervisor_pid=None,
                failure_reason=(
                    f"the supervisor process {record.supervisor_pid} is gone (killed, or the machine "
                    "restarted); "
                    "start_endpoint() restarts the endpoint"
                ),
            )
            record = r.endpoint(name)
        instances = r.instances(name)
        policies = r.policies(name)
        variants = [
            VariantDescription(
                v.variant_name,
                v.model,
                v.current_weight,
                v.desired_weight,
                v.current_instance_count,
                v.desired_instance_count,
                [i for i in instances if i.variant_name == v.variant_name],
                policies.get(v.variant_name),
            )
            for v in r.variants(name)
        ]
        return EndpointDescription(
            record.name,
            record.config_name,
            record.status,
            record.url,
            "bearer" if record.token else "none",
            variants,
            record.failure_reason,
            record.created_at,
            record.updated_at,
            record.supervisor_pid,
            int(record.settings.get("router_workers", 1)),
            r.activities(name),
        )


def list_endpoints() -> list[EndpointDescription]:
    with contextlib.closing(_registry()) as r:
        names = [e.name for e in r.endpoints()]
    return [describe_endpoint(n) for n in names]


def endpoint_token(name: str) -> str | None:
    """The bearer token of an endpoint (None when it needs none)."""
    with contextlib.closing(_registry()) as r:
        return r.endpoint(name).token


def wait_for_endpoint(
    name: str, timeout: float = 300.0, generation: int | None = None
) -> EndpointDescription:
    """Wait until the endpoint is InService (and has applied ``generation``); raise if it fails."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.closing(_registry()) as r:
            record = r.endpoint(name)
        if record.status == FAILED:
            raise EndpointError(f"endpoint {name} failed: {record.failure_reason}")
        done = record.status == IN_SERVICE and record.applied_generation >= (generation or record.generation)
        if done:
            description = describe_endpoint(name)
            if (
                generation is not None
                and description.failure_reason
                and record.config_name != record.current_config_name
            ):
                raise EndpointError(description.failure_reason)
            return description
        if (
            record.status in ACTIVE_STATUSES
            and record.supervisor_pid
            and not _supervisor_alive(record.supervisor_pid, name)
        ):
            describe_endpoint(name)
            raise EndpointError(
                f"endpoint {name}: its supervisor exited; see {record.settings['run_dir']}/supervisor.log"
            )
        if time.monotonic() > deadline:
            raise EndpointError(f"endpoint {name} is still {record.status} after {timeout:g} s")
        time.sleep(0.05)


def update_endpoint(
    name: str, config_name: str, *, wait: bool = True, wait_timeout: float = 300.0
) -> EndpointDescription:
    """Move the endpoint to another config: new instances start, traffic switches, old ones drain.

    If the new config's instances fail to start, the endpoint keeps serving its old config and the
    failure is reported (raised with ``wait``; in ``failure_reason`` otherwise).
    """
    with contextlib.closing(_registry()) as r:
        record = r.endpoint(name)
        _require_running(record)
        config = r.config(config_name)
        for v in config.variants:
            r.model(v.model)
        generation = r.request_config(name, config)
    if not wait:
        return describe_endpoint(name)
    description = wait_for_endpoint(name, wait_timeout, generation)
    if description.config_name != config_name:
        raise EndpointError(description.failure_reason or f"endpoint {name} did not move to {config_name}")
    return description


def update_endpoint_weights_and_capacities(
    name: str,
    desired: dict[str, dict[str, float | int]] | list[dict],
    *,
    wait: bool = True,
    wait_timeout: float = 300.0,
) -> EndpointDescription:
    """Change variant weights and/or instance counts in place.

    ``desired`` maps variant name to ``{"weight": w, "instance_count": n}`` (either key optional), or is
    SageMaker's list ``[{"VariantName", "DesiredWeight", "DesiredInstanceCount"}]``.
    """
    changes = _normalize_desired(desired)
    with contextlib.closing(_registry()) as r:
        _require_running(r.endpoint(name))
        generation = r.request_capacity(name, changes)
    return wait_for_endpoint(name, wait_timeout, generation) if wait else describe_endpoint(name)


def _normalize_desired(desired) -> dict[str, dict[str, float | int]]:
    if isinstance(desired, list):
        out = {}
        for item in desired:
            change = {}
            if item.get("DesiredWeight") is not None:
                change["weight"] = item["DesiredWeight"]
            if item.get("DesiredInstanceCount") is not None:
                change["instance_count"] = item["DesiredInstanceCount"]
            out[item["VariantName"]] = change
        desired = out
    for variant, change in desired.items():
        unknown = set(change) - {"weight", "instance_count"}
        if unknown or not change:
            raise ValueError(f"variant {variant}: give weight and/or instance_count (got {sorted(change)})")
        if "weight" in change and not float(change["weight"]) >= 0:
            raise ValueError(f"variant {variant}: weight must be >= 0")
        if "instance_count" in change and int(change["instance_count"]) < 1:
            raise ValueError(f"variant {variant}: instance_count must be >= 1")
    return desired


def put_scaling_policy(
    endpoint: str, variant: str, policy: ScalingPolicy | None = None, **fields
) -> ScalingPolicy:
    """Target tracking for a variant (fields of :class:`ScalingPolicy`, e.g. ``target_value=70``)."""
    policy = policy or ScalingPolicy(**fields)
    with contextlib.closing(_registry()) as r:
        r.put_policy(endpoint, variant, policy)
    return policy


def delete_scaling_policy(endpoint: str, variant: str) -> None:
    with contextlib.closing(_registry()) as r:
        r.delete_policy(endpoint, variant)


def stop_endpoint(name: str, timeout: float = 60.0) -> None:
    """Stop the processes; the endpoint stays registered (OutOfService) for :func:`start_endpoint`."""
    _stop(name, STOP, timeout)


def start_endpoint(name: str, *, wait: bool = True, wait_timeout: float = 300.0) -> EndpointDescription:
    with contextlib.closing(_registry()) as r:
        record = r.endpoint(name)
        if record.status in ACTIVE_STATUSES and _supervisor_alive(record.supervisor_pid, name):
            raise ValueError(f"endpoint {name} is already running ({record.status})")
        config = r.config(record.current_config_name or record.config_name)
        r.update_endpoint(
            name,
            status="Creating",
            config_name=config.name,
            stop_requested=0,
            failure_reason=None,
            generation=record.generation + 1,
            supervisor_pid=None,
        )
        with_current = {v.variant_name: v for v in r.variants(name)}
        if set(with_current) != {v.variant_name for v in config.variants}:
            r.replace_variants(name, config, {})
    _launch_supervisor(name, record.settings["run_dir"])
    return wait_for_endpoint(name, wait_timeout) if wait else describe_endpoint(name)


def delete_endpoint(name: str, timeout: float = 60.0) -> None:
    """Stop the endpoint's processes and remove it from the registry."""
    _stop(name, DELETE, timeout)


def _stop(name: str, how: int, timeout: float) -> None:
    with contextlib.closing(_registry()) as r:
        record = r.endpoint(name)
        pid = record.supervisor_pid
        if pid and _supervisor_alive(pid, name):
            r.update_endpoint(name, stop_requested=how, status="Deleting" if how == DELETE else record.status)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _supervisor_alive(pid, name) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _supervisor_alive(pid, name):
                _kill_group(pid)
        # The supervisor cleans up after itself; finish its work if it is gone without doing so.
        try:
            record = r.endpoint(name)
        except NotFound:
            return
        if pid:
            _kill_group(pid)
        if how == DELETE:
            import shutil

            r.delete_endpoint(name)
            shutil.rmtree(record.settings.get("run_dir", ""), ignore_errors=True)
        else:
            r.set_instances(name, [])
            r.update_endpoint(name, status=OUT_OF_SERVICE, supervisor_pid=None, stop_requested=0)


def _kill_group(pid: int) -> None:
    """SIGKILL what is left of a supervisor's process group (its routers and instances)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _supervisor_alive(pid: int | None, name: str) -> bool:
    if not pid or not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return not _SUPERVISOR_ARGV.isdisjoint(argv) and name.encode() in argv and state != b"Z"
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


def _require_running(record) -> None:
    if record.status not in (IN_SERVICE, "Updating", "SystemUpdating"):
        raise EndpointError(f"endpoint {record.name} is {record.status}; it must be InService to be updated")


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > 63 or not all(c.isalnum() or c == "-" for c in name) or name.startswith("-"):
        raise ValueError(
            f"{what} name {name!r}: 1-63 letters, digits and hyphens, not starting with a hyphen "
            "(as SageMaker requires)"
        )


def _check_model_url(url: str) -> None:
    """The router forwards plain HTTP/1.1 to host:port: refuse what it would get wrong, at creation."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path.strip("/") or parts.query:
        raise ValueError(f"url must be http://host[:port] (a server answering /ping and /invocations at its "
                         f"root; the router speaks plain HTTP), got {url!r}")
