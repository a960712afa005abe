"""Instance processes of a variant: the built-in model server, a user's own server command, or a URL.

- ``artifact`` models run ``python -m algorithms.serving`` on a free loopback port it picks itself
  (reported through a ready file), with BLAS threads capped.
- ``command`` models run the user's command (bring your own model server) with SageMaker's
  ``SAGEMAKER_BIND_TO_PORT`` / ``SM_MODEL_DIR``; ``{port}`` and ``{model_dir}`` in the arguments are
  filled in. It must answer ``GET /ping`` and ``POST /invocations`` on that port.
- ``url`` models point at a server someone else runs: health-checked, never started or stopped.

An instance is ready when ``/ping`` answers 200. Stopping is SIGTERM (in-flight requests finish),
then SIGKILL after the grace period, as SageMaker does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from algorithms.serving.handoff import AVAILABLE as HANDOFF
from algorithms.serving.handoff import ENV as HANDOFF_ENV

from .registry import HostedModel

STARTING, READY, DRAINING, STOPPED, FAILED = "starting", "ready", "draining", "stopped", "failed"


class InstanceFailed(RuntimeError):
    pass


@dataclass
class Instance:
    instance_id: str
    variant: str
    model: HostedModel
    process: subprocess.Popen | None
    url: str | None
    log_path: str | None
    ready_file: str | None = None
    handoff: str | None = None  # the abstract socket our model server also takes requests on (see handoff.py)
    state: str = STARTING
    started_at: float = field(default_factory=time.time)
    started_at_monotonic: float = field(default_factory=time.monotonic)
    ping_failures: int = 0
    next_ping: float = 0.0
    drain_after_generation: int | None = None
    drain_since: float = 0.0
    term_sent_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def exited(self) -> int | None:
        return self.process.poll() if self.process is not None else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(
    model: HostedModel,
    variant: str,
    run_dir: str,
    threads: int = 1,
    max_payload_mb: float = 6.0,
    graceful_timeout: float = 30.0,
) -> Instance:
    instance_id = f"{variant}-{uuid.uuid4().hex[:8]}"
    if model.kind == "url":
        return Instance(instance_id, variant, model, None, model.url.rstrip("/"), None)
    logs = os.path.join(run_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    log_path = os.path.join(logs, f"{instance_id}.log")
    env = dict(os.environ)
    env.update(model.environment)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, str(threads))
    ready_file, url = None, None
    if model.kind == "artifact":
        ready_file = os.path.join(run_dir, "instances", f"{instance_id}.json")
        os.makedirs(os.path.dirname(ready_file), exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "algorithms.serving",
            "--model",
            model.model_data,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--threads",
            str(threads),
            "--max-payload-mb",
            str(max_payload_mb),
            "--ready-file",
            ready_file,
            "--parent-pid",
            str(os.getpid()),
            "--graceful-timeout",
            str(graceful_timeout),
        ]
        if HANDOFF:  # by environment: argv is readable by every user
            env[HANDOFF_ENV] = f"spark-ml-{instance_id}-{uuid.uuid4().hex}"
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env.update(
            SAGEMAKER_BIND_TO_PORT=str(port),
            SAGEMAKER_HTTP_PORT=str(port),
            SM_MODEL_DIR=model.model_data or "",
            SPARK_ML_PARENT_PID=str(os.getpid()),
        )
        fill = {"{port}": str(port), "{model_dir}": model.model_data or ""}
        argv = [_fill(arg, fill) for arg in model.command]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Instance(instance_id, variant, model, process, url, log_path, ready_file)


def _fill(arg: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        arg = arg.replace(key, value)
    return arg


def poll_ready(inst: Instance) -> bool:
    """True once the instance answers /ping; raises InstanceFailed when its process has exited."""
    code = inst.exited()
    if code is not None:
        raise InstanceFailed(
            f"instance {inst.instance_id} ({inst.model.name}) exited with code {code} while "
            f"starting: {tail(inst.log_path)}"
        )
    if inst.url is None:
        if not inst.ready_file or not os.path.exists(inst.ready_file):
            return False
        with open(inst.ready_file) as f:
            ready = json.load(f)
        inst.url = f"http://127.0.0.1:{ready['port']}"
        inst.handoff = ready.get("handoff")
    return ping(inst.url, timeout=1.0)


def wait_ready(instances: list[Instance], timeout: float) -> None:
    """Block until every instance is ready; on failure or timeout stop them all and raise InstanceFailed."""
    deadline = time.monotonic() + timeout
    pending = list(instances)
    try:
        while pending:
            pending = [i for i in pending if not poll_ready(i)]
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(i.instance_id for i in pending)
                raise InstanceFailed(
                    f"instance(s) {names} did not answer /ping within {timeout:g} s: "
                    f"{tail(pending[0].log_path)}"
                )
            time.sleep(0.05)
    except BaseException:
        for inst in instances:
            terminate(inst)
        wait_exited(instances, 5.0)
        raise
    for inst in instances:
        inst.state = READY


def ping(url: str, timeout: float = 2.0) -> bool:
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", (parts.path.rstrip("/") or "") + "/ping")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def terminate(inst: Instance) -> None:
    """SIGTERM: the server stops accepting and finishes what it has."""
    if inst.process is not None and inst.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            inst.process.send_signal(signal.SIGTERM)
    if inst.term_sent_at is None:
        inst.term_sent_at = time.monotonic()


def kill(inst: Instance) -> None:
    if inst.process is not None and inst.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            inst.process.kill()


def wait_exited(instances: list[Instance], grace: float) -> None:
    """Wait up to ``grace`` seconds for terminated instances, then SIGKILL the rest."""
    deadline = time.monotonic() + grace
    for inst in instances:
        if inst.process is None:
            continue
        try:
            inst.process.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            kill(inst)
            inst.process.wait(5)


def tail(path: str | None, lines: int = 8) -> str:
    if not path or not os.path.exists(path):
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - 4000, 0))
        text = f.read().decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(empty log)"
