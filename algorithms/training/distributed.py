"""Bootstrap framework collectives (torch.distributed, XGBoost's tracker) through the barrier's allgather."""

from __future__ import annotations

import socket
from contextlib import closing, contextmanager

from .collectives import Collectives


def free_port(host: str = "") -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rendezvous(collectives: Collectives, host: str) -> tuple[str, int]:
    """Rank 0's ``(host, free port)``, agreed by every worker."""
    address = {"host": host, "port": free_port()} if collectives.rank == 0 else None
    agreed = collectives.broadcast_object_json(address)
    return agreed["host"], int(agreed["port"])


def init_torch_process_group(collectives: Collectives, host: str, device: str = "cpu", timeout_s: float = 600):
    """``torch.distributed.init_process_group`` over TCP at rank 0: gloo on CPU, NCCL on GPU."""
    import datetime

    import torch.distributed as dist

    master, port = rendezvous(collectives, host)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend, init_method=f"tcp://{master}:{port}", rank=collectives.rank,
                            world_size=collectives.world_size, timeout=datetime.timedelta(seconds=timeout_s))
    return dist


@contextmanager
def xgboost_communicator(collectives: Collectives, host: str, timeout_s: int = 600):
    """XGBoost's collective for this worker: rank 0 runs the tracker; everyone joins with its arguments."""
    from xgboost import collective
    from xgboost.tracker import RabitTracker

    tracker = None
    if collectives.rank == 0:
        tracker = RabitTracker(n_workers=collectives.world_size, host_ip=host, sortby="task", timeout=timeout_s)
        tracker.start()
        args = {k: v for k, v in tracker.worker_args().items()}
    else:
        args = None
    args = collectives.broadcast_object_json(args)
    args["dmlc_task_id"] = f"{collectives.rank:05d}"
    try:
        with collective.CommunicatorContext(**args):
            yield
        if tracker is not None:  # only after success: on failure the peers may never check out
            tracker.wait_for(timeout_s)
    finally:
        if tracker is not None:
            tracker.free()
