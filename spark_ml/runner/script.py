"""Bring-your-own code in a worker: SageMaker script mode, or an executable under the container contract.

Each worker gets a private SageMaker-style root (``input/config/*.json``, ``input/data/<channel>/``,
``model/``, ``output/``), the ``SM_*`` variables script mode defines, and ``MASTER_ADDR`` / ``RANK`` /
``WORLD_SIZE`` for torch.distributed. The child process dies with the worker (``PR_SET_PDEATHSIG``), its
output lines stream to the driver, and its exit status decides success.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading

from algorithms import fs as fsutil
from algorithms.training.distributed import rendezvous
from algorithms.training.env import TrainingEnv

from .spec import WorkerSpec

_S3_DISTRIBUTION = {"ShardedByKey": "ShardedByS3Key", "FullyReplicated": "FullyReplicated"}
FAILURE_REASON_CHARS = 1024


class UserCodeFailed(RuntimeError):
    """The user's process failed; its message (with the stderr tail) is the whole failure reason."""

    full_reason = True


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _layout(root: str) -> dict[str, str]:
    paths = {"input": "input", "config": "input/config", "data": "input/data", "model": "model",
             "output": "output", "output_data": "output/data", "intermediate": "output/intermediate"}
    out = {k: os.path.join(root, *v.split("/")) for k, v in paths.items()}
    for path in out.values():
        os.makedirs(path, exist_ok=True)
    return out


def _stage_channel_files(env: TrainingEnv, data_dir: str) -> None:
    """``input/data/<channel>/``: links to local shard files, copies of remote ones."""
    for name, channel in env.channels.items():
        target = os.path.join(data_dir, name)
        os.makedirs(target, exist_ok=True)
        for uri in channel.files:
            fs, path = fsutil.resolve(uri)
            dest = os.path.join(target, os.path.basename(path))
            if fsutil.is_local(fs):
                os.symlink(path, dest)
            else:
                with fs.open_input_stream(path) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 8 << 20)


def _config_files(env: TrainingEnv, dirs: dict[str, str]) -> dict[str, dict]:
    resource = {"current_host": env.current_host, "hosts": list(env.hosts), "network_interface_name": "eth0"}
    input_data = {name: {"ContentType": c.content_type, "TrainingInputMode": "File",
                         "S3DistributionType": _S3_DISTRIBUTION.get(c.distribution, c.distribution),
                         "RecordWrapperType": "None"} for name, c in env.channels.items()}
    files = {"hyperparameters.json": dict(env.hyperparameters), "resourceconfig.json": resource,
             "inputdataconfig.json": input_data}
    for name, doc in files.items():
        with open(os.path.join(dirs["config"], name), "w") as f:
            json.dump(doc, f)
    return {"resource": resource, "input_data": input_data}


def _hp_value(raw: str):
    """Script mode passes hyperparameters JSON-decoded when they are JSON, as the training toolkit does."""
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def _env_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def script_environment(env: TrainingEnv, dirs: dict[str, str], configs: dict, entry_point: str | None,
                       code_dir: str, user_args: list[str]) -> dict[str, str]:
    """The ``SM_*`` variables of SageMaker's training toolkit for this worker."""
    hps = {k: _hp_value(v) for k, v in env.hyperparameters.items()}
    channels = sorted(env.channels)
    facts: dict[str, object] = {
        "model_dir": dirs["model"], "channels": channels, "hps": hps, "hosts": list(env.hosts),
        "current_host": env.current_host, "num_gpus": len(env.gpus), "num_cpus": env.num_cpus, "num_neurons": 0,
        "network_interface_name": "eth0", "input_dir": dirs["input"], "input_config_dir": dirs["config"],
        "output_dir": dirs["output"], "output_data_dir": dirs["output_data"],
        "output_intermediate_dir": dirs["intermediate"], "resource_config": configs["resource"],
        "input_data_config": configs["input_data"], "user_args": user_args, "user_entry_point": entry_point or "",
        "module_name": os.path.splitext(os.path.basename(entry_point or ""))[0], "module_dir": code_dir,
        "log_level": 20, "current_instance_type": "spark-executor", "framework_module": "",
    }
    out = {f"SM_{k.upper()}": _env_value(v) for k, v in facts.items()}
    for name in channels:
        out[f"SM_CHANNEL_{name.upper()}"] = os.path.join(dirs["data"], name)
    for key, value in hps.items():
        out[f"SM_HP_{key.upper()}"] = _env_value(value)
    training_env = dict(facts)
    training_env["channel_input_dirs"] = {n: os.path.join(dirs["data"], n) for n in channels}
    training_env["job_name"] = env.job_name
    out["SM_TRAINING_ENV"] = json.dumps(training_env, sort_keys=True)
    return out


def _user_args(hyperparameters: dict[str, str]) -> list[str]:
    args = []
    for key, value in hyperparameters.items():
        args += [f"--{key}", value]
    return args


def run_user_code(spec: WorkerSpec, env: TrainingEnv, workdir: str, script_mode: bool) -> str:
    """Run the user's code for this worker; returns the local model folder."""
    plan = spec.script
    root = os.path.join(workdir, "opt_ml")
    dirs = _layout(root)
    code_dir = os.path.join(workdir, "code")
    os.makedirs(code_dir, exist_ok=True)
    if plan.source_archive:
        with tarfile.open(fileobj=io.BytesIO(plan.source_archive), mode="r:gz") as tar:
            tar.extractall(code_dir, filter="data")
    _stage_channel_files(env, dirs["data"])
    configs = _config_files(env, dirs)
    master, port = rendezvous(env.collectives, env.address)
    child_env = dict(os.environ)
    child_env.update(plan.environment)
    child_env.update({"SAGEMAKER_BASE_DIR": root, "TRAINING_JOB_NAME": env.job_name or "",
                      "MASTER_ADDR": master, "MASTER_PORT": str(port), "RANK": str(env.rank),
                      "LOCAL_RANK": "0", "WORLD_SIZE": str(env.world_size),
                      "CUDA_VISIBLE_DEVICES": ",".join(env.gpus), "PYTHONUNBUFFERED": "1"})
    if script_mode:
        user_args = _user_args(env.hyperparameters)
        child_env.update(script_environment(env, dirs, configs, plan.entry_point, code_dir, user_args))
        entry = os.path.join(code_dir, plan.entry_point)
        if not os.path.isfile(entry):
            raise UserCodeFailed(f"entry point {plan.entry_point} is not in the source folder")
        command = [sys.executable, entry, *user_args]
    else:
        command = [part.format(base_dir=root, model_dir=dirs["model"], code_dir=code_dir) for part in plan.command]
    _run(command, code_dir, child_env, env, plan.metric_definitions, os.path.join(dirs["output"], "failure"))
    return dirs["model"]


def _run(command: list[str], cwd: str, child_env: dict[str, str], env: TrainingEnv,
         metric_definitions: list[dict[str, str]], failure_file: str) -> None:
    patterns = [(d["Name"], re.compile(d["Regex"])) for d in metric_definitions]
    tail: collections.deque[str] = collections.deque(maxlen=40)
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", bufsize=1, preexec_fn=_die_with_parent)
    except OSError as exc:
        raise UserCodeFailed(f"could not start {command[0]}: {exc}") from None

    def pump(stream, keep: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            env.reporter.log(line)
            if keep:
                tail.append(line)
            for name, pattern in patterns:
                match = pattern.search(line)
                if match:
                    with contextlib.suppress(IndexError, ValueError):
                        env.reporter.metric(name, float(match.group(1)))

    readers = [threading.Thread(target=pump, args=(proc.stdout, False), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, True), daemon=True)]
    for t in readers:
        t.start()
    try:
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    for t in readers:
        t.join(timeout=10)
    if code != 0:
        reason = ""
        if os.path.exists(failure_file):
            with open(failure_file, errors="replace") as f:
                reason = f.read(FAILURE_REASON_CHARS).strip()
        if not reason:
            reason = "\n".join(tail).strip()[-FAILURE_REASON_CHARS:] or "(no output)"
        how = f"signal {-code}" if code < 0 else f"status {code}"
        raise UserCodeFailed(f"{os.path.basename(command[0]) if command else 'process'} exited with {how}: {reason}")
