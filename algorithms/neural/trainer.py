"""The training loop the neural built-ins share: DDP across the job's workers, AMP, checkpoints, early stopping.

An algorithm supplies a :class:`Task`: its network, its optimizer and schedule, this worker's training
batches, the loss of one batch, and an evaluation. :class:`Trainer` does the rest, the same way for every
network:

- **Device and workers.** The network runs on the worker's torch device (:func:`algorithms.backend.torch_backend`:
  its GPU when Spark gave it one, else the CPU). With more than one worker, the trainer joins the
  torch.distributed group the runtime bootstraps (gloo on CPU, NCCL on GPU) and wraps the network in
  ``DistributedDataParallel``; every worker starts from rank 0's weights.
- **Uneven shards.** Workers agree before every update whether any of them still has fresh batches (one
  small all-reduce); a worker whose shards ran out goes round them again, as ``DistributedSampler`` pads
  ranks with repeated samples. So every worker makes the same number of updates, and evaluations that fall
  in the middle of an epoch happen on all workers at once.
- **Evaluation, early stopping, best weights.** After every epoch (or every ``evaluate_every_steps``
  updates) the task's metrics are reported (SageMaker names, e.g. ``validation:accuracy``); the objective
  decides early stopping (``patience`` evaluations without a relative improvement above ``tolerance``,
  never before ``min_epochs``) and which weights are returned (the best evaluation's, with ``keep_best``).
- **Checkpoints.** Every ``checkpoint_every`` evaluations rank 0 writes the network, optimizer, schedule
  and loop counters to the job's checkpoint location; a re-run of a failed attempt (Spark re-runs a
  barrier stage whose task died) finds the latest one and resumes after it instead of from the start.
- **AMP.** ``amp=True`` trains under float16 autocast with a gradient scaler on CUDA; on a CPU worker it
  trains in float32 and says so.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..backend import torch_backend
from ..training.env import TrainingEnv
from ..training.reporter import failures_reported_first
from .checkpoints import CheckpointStore
from .optim import Schedule


@dataclass
class TrainSettings:
    max_epochs: int
    min_epochs: int = 0
    max_steps: int | None = None  # stop after this many updates, whatever the epoch
    evaluate_every_steps: int | None = None  # None: evaluate when an epoch ends
    objective: str | None = None  # the metric that early stopping and the best weights follow; a "train:" metric
    # (the epoch's training statistics) works when evaluations happen at the end of epochs
    maximize: bool = False
    patience: int | None = None  # evaluations without improvement before stopping; None: never early
    tolerance: float = 0.0  # relative improvement of the objective that counts as one
    checkpoint_every: int = 1  # evaluations between checkpoints; 0: no checkpoints
    clip_gradient: float | None = None  # element-wise clipping of the gradients (MXNet's clip_gradient)
    amp: bool = False
    keep_best: bool = True
    seed: int = 0


class Task(Protocol):
    """What an algorithm gives the trainer."""

    def network(self) -> Any:
        """A fresh ``torch.nn.Module`` (built the same on every worker; the trainer seeds torch first)."""

    def optimizer(self, parameters: Iterable[Any]) -> Any:
        """The torch optimizer for these parameters."""

    def schedule(self, optimizer: Any) -> Schedule | None:
        """The learning-rate schedule, or None for a fixed rate."""

    def batches(self, epoch: int) -> Iterator[tuple[int, Any]]:
        """This worker's training batches of ``epoch``, as ``(records, batch)``; an epoch's order may depend on
        the epoch number, and must be the same every time it is asked for (a resumed epoch replays it)."""

    def loss(self, network: Any, batch: Any, device: Any) -> tuple[Any, dict[str, tuple[float, float]]]:
        """The batch's loss to minimize (a scalar tensor, mean over the batch) and training statistics as
        ``{metric: (sum, count)}``; the trainer reports ``train:<metric>`` = Σsum / Σcount over workers."""

    def evaluate(self, network: Any, device: Any) -> dict[str, float]:
        """Metrics (SageMaker names, e.g. ``validation:accuracy``), the same on every worker (reduce them
        through the collectives). Called on every worker at once; the network is in eval mode."""

    # Optional: ``num_batches(epoch) -> int``, this worker's batches in ``epoch`` (what ``batches`` will yield),
    # lets the workers agree on the epoch's length once instead of before every update.
    # Optional: ``training_metric(name, mean) -> float`` turns a training statistic's mean over the epoch into
    # the reported value (Seq2Seq reports the perplexity exp(mean cross-entropy)); without it the mean is.


@dataclass
class TrainingOutcome:
    network: Any  # the plain module (not the DDP wrapper), holding the returned weights
    epochs: int  # epochs started
    steps: int  # updates made
    best: dict[str, float] | None  # the metrics of the evaluation whose weights were kept
    resumed_from: dict[str, Any] | None  # the checkpoint this attempt started from


class Trainer:
    def __init__(self, env: TrainingEnv, settings: TrainSettings):
        self.env = env
        self.settings = settings
        self.backend = torch_backend(env.device)
        self.torch = self.backend.torch
        self.device = self.backend.torch_device
        self.store = CheckpointStore(env.checkpoint_dir) if env.checkpoint_dir and settings.checkpoint_every else None
        self.distributed = env.world_size > 1

    # --------------------------------------------------------------------------------------------------
    def fit(self, task: Task) -> TrainingOutcome:
        torch, s, env = self.torch, self.settings, self.env
        torch.manual_seed(s.seed)
        np.random.seed(s.seed % (2**32))
        if self.device.type == "cpu" and env.num_cpus:  # no more threads than the CPUs Spark gave this task
            torch.set_num_threads(max(1, min(torch.get_num_threads(), int(env.num_cpus))))
        network = task.network().to(self.device)
        optimizer = task.optimizer(network.parameters())
        schedule = task.schedule(optimizer) or Schedule()
        amp = s.amp and self.device.type == "cuda"
        if s.amp and not amp:
            env.reporter.log("float16 training needs a GPU; this worker trains in float32")
        scaler = torch.amp.GradScaler("cuda") if amp else None
        group = self._join_group()
        try:
            with failures_reported_first(env.reporter):
                model = network
                if self.distributed:
                    from torch.nn.parallel import DistributedDataParallel

                    cuda = self.device.type == "cuda"
                    model = DistributedDataParallel(network, device_ids=[self.device.index] if cuda else None)
                loop = _LoopState()
                resumed = self._resume(network, optimizer, schedule, scaler, loop)
                self._train(task, model, network, optimizer, schedule, scaler, loop)
                if s.keep_best and loop.best_weights is not None:
                    network.load_state_dict(loop.best_weights)
                return TrainingOutcome(network, loop.epoch, loop.step, loop.best_metrics, resumed)
        finally:
            if group is not None:
                group.destroy_process_group()

    # --------------------------------------------------------------------------------------------------
    def _train(self, task, model, network, optimizer, schedule, scaler, loop: _LoopState) -> None:
        torch, s, env = self.torch, self.settings, self.env
        while loop.epoch < s.max_epochs and not loop.stopped:
            epoch = loop.epoch
            model.train()
            sums: dict[str, list[float]] = {}
            seen = 0
            batches = _Rounds(task, epoch, skip=loop.batch_in_epoch)
            planned = self._planned_batches(task, epoch)
            while True:
                batch = batches.next_fresh_or_repeat()
                if planned is not None:  # every worker knows the epoch's length: no agreement per update
                    if loop.batch_in_epoch >= planned:
                        break
                elif not self._anyone_has_fresh(batches.fresh):
                    break
                if batch is None:
                    raise RuntimeError(f"worker {env.rank} has no training records, so it cannot take part "
                                       "in data-parallel training; give every worker a shard")
                records, data = batch
                optimizer.zero_grad(set_to_none=True)
                with (torch.autocast(self.device.type, dtype=torch.float16) if scaler is not None
                      else contextlib.nullcontext()):
                    loss, stats = task.loss(model, data, self.device)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if s.clip_gradient:
                    torch.nn.utils.clip_grad_value_(network.parameters(), s.clip_gradient)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                loop.step += 1
                loop.batch_in_epoch += 1
                schedule.after_step(loop.step)
                if batches.fresh:
                    seen += records
                    for name, (total, count) in stats.items():
                        acc = sums.setdefault(name, [0.0, 0.0])
                        acc[0] += float(total)
                        acc[1] += float(count)
                env.reporter.progress(seen, epoch, _total(env), s.max_epochs)
                if s.max_steps is not None and loop.step >= s.max_steps:
                    loop.stopped = True
                    break
                if s.evaluate_every_steps and loop.step % s.evaluate_every_steps == 0:
                    self._evaluate(task, model, network, optimizer, schedule, scaler, loop)
                    model.train()
                    if loop.stopped:
                        break
            loop.train_metrics = self._report_training(sums, epoch, getattr(task, "training_metric", None))
            loop.epoch += 1
            loop.batch_in_epoch = 0
            schedule.after_epoch(epoch)
            last = loop.stopped or loop.epoch >= s.max_epochs
            if (not s.evaluate_every_steps or last) and loop.evaluated_at != loop.step:
                self._evaluate(task, model, network, optimizer, schedule, scaler, loop)

    def _evaluate(self, task, model, network, optimizer, schedule, scaler, loop: _LoopState) -> None:
        torch, s, env = self.torch, self.settings, self.env
        model.eval()
        with torch.no_grad():
            metrics = {name: float(value) for name, value in task.evaluate(network, self.device).items()}
        loop.evaluated_at = loop.step
        loop.evaluations += 1
        at_epoch = loop.epoch if loop.batch_in_epoch else loop.epoch - 1
        for name, value in metrics.items():
            env.reporter.metric(name, value, epoch=at_epoch, step=loop.step)
        value = metrics.get(s.objective, loop.train_metrics.get(s.objective)) if s.objective else None
        if s.objective and value is None:
            raise ValueError(f"the evaluation did not compute {s.objective}, the objective")
        lower_is_better = None if value is None else (-value if s.maximize else value)
        schedule.after_evaluation(lower_is_better)
        improved = lower_is_better is not None and _better(lower_is_better, loop.best, s.tolerance)
        if lower_is_better is None or improved or loop.best is None:
            loop.best = lower_is_better if lower_is_better is not None else loop.best
            loop.best_metrics = dict(metrics)
            loop.bad = 0
            if s.keep_best:
                loop.best_weights = copy.deepcopy({k: v.detach().cpu() for k, v in network.state_dict().items()})
        else:
            loop.bad += 1
        if s.patience is not None and loop.bad >= s.patience and loop.epoch >= s.min_epochs:
            env.reporter.log(f"early stopping: {s.objective} has not improved by more than "
                             f"{s.tolerance:g} (relative) in {s.patience} evaluations; best "
                             f"{loop.best_metrics.get(s.objective)}")
            loop.stopped = True
        if self.store is not None and loop.evaluations % s.checkpoint_every == 0:
            self._checkpoint(network, optimizer, schedule, scaler, loop)

    # --------------------------------------------------------------------------------------------------
    def _checkpoint(self, network, optimizer, schedule, scaler, loop: _LoopState) -> None:
        if self.env.rank == 0:
            state = {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "loop": loop.counters(),
                     "best_weights": loop.best_weights or {}, "best_metrics": loop.best_metrics or {}}
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            self.store.save(state, loop.evaluations, {"epoch": loop.epoch, "step": loop.step,
                                                      "batch_in_epoch": loop.batch_in_epoch})
        self.env.collectives.barrier()  # a re-run finds a checkpoint every worker got past

    def _resume(self, network, optimizer, schedule, scaler, loop: _LoopState) -> dict[str, Any] | None:
        if self.store is None:
            return None
        index = self.env.collectives.broadcast_object_json(self.store.latest() if self.env.rank == 0 else None)
        if index is None:
            return None
        state = self.store.load(index, map_location=self.device)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        loop.restore(state["loop"])
        loop.best_weights = state["best_weights"] or None
        loop.best_metrics = state["best_metrics"] or None
        self.env.reporter.log(f"resumed from checkpoint {index['number']} at epoch {loop.epoch}"
                              f"{f', batch {loop.batch_in_epoch}' if loop.batch_in_epoch else ''} "
                              f"(update {loop.step}) of an earlier attempt")
        return index

    # --------------------------------------------------------------------------------------------------
    def _join_group(self):
        if not self.distributed:
            return None
        from ..training.distributed import init_torch_process_group

        return init_torch_process_group(self.env.collectives, self.env.address, self.device.type)

    def _planned_batches(self, task, epoch: int) -> int | None:
        """The epoch's updates when the task can count its batches ahead (``num_batches(epoch)``): the most any
        worker has, agreed in one all-reduce, instead of one small all-reduce before every update."""
        count = getattr(task, "num_batches", None)
        if count is None:
            return None
        own = int(count(epoch))
        if not self.distributed:
            return own
        return int(self.env.collectives.allreduce(np.array([own], np.float64), op="max")[0])

    def _anyone_has_fresh(self, fresh: bool) -> bool:
        if not self.distributed:
            return fresh
        torch = self.torch
        flag = torch.tensor([1 if fresh else 0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _report_training(self, sums: dict[str, list[float]], epoch: int, convert=None) -> dict[str, float]:
        names = sorted(sums)
        if self.distributed:  # every worker reports the names rank 0 saw (all compute the same statistics)
            names = self.env.collectives.broadcast_object_json(names)
        totals = np.array([v for name in names for v in sums.get(name, (0.0, 0.0))], dtype=np.float64)
        if self.distributed:
            totals = self.env.collectives.allreduce(totals)
        reported = {}
        for i, name in enumerate(names):
            total, count = totals[2 * i], totals[2 * i + 1]
            if count > 0:
                value = float(total / count)
                reported[f"train:{name}"] = convert(name, value) if convert else value
                self.env.reporter.metric(f"train:{name}", reported[f"train:{name}"], epoch=epoch)
        return reported


@dataclass
class _LoopState:
    epoch: int = 0  # the epoch in progress (or next)
    step: int = 0
    batch_in_epoch: int = 0
    evaluations: int = 0
    evaluated_at: int = -1
    bad: int = 0
    best: float | None = None
    best_metrics: dict[str, float] | None = None
    best_weights: dict[str, Any] | None = None
    stopped: bool = False
    train_metrics: dict[str, float] = field(default_factory=dict)  # the last epoch's train: metrics

    def counters(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                "evaluations": self.evaluations, "bad": self.bad,
                "best": float("nan") if self.best is None else self.best, "stopped": self.stopped}

    def restore(self, counters: dict[str, Any]) -> None:
        self.epoch, self.step = int(counters["epoch"]), int(counters["step"])
        self.batch_in_epoch, self.evaluations = int(counters["batch_in_epoch"]), int(counters["evaluations"])
        self.bad, self.stopped = int(counters["bad"]), bool(counters["stopped"])
        self.evaluated_at = self.step
        best = float(counters["best"])
        self.best = None if math.isnan(best) else best


class _Rounds:
    """An epoch's batches of this worker, then its batches again (``fresh`` false) while others still train."""

    def __init__(self, task: Task, epoch: int, skip: int = 0):
        self.task, self.epoch = task, epoch
        self.fresh = True
        self._it = iter(task.batches(epoch))
        self._any = False
        for _ in range(skip):
            if next(self._it, None) is None:
                break
            self._any = True

    def next_fresh_or_repeat(self) -> tuple[int, Any] | None:
        item = next(self._it, None)
        if item is not None:
            self._any = True
            return item
        self.fresh = False
        if not self._any:
            return None
        self._it = iter(self.task.batches(self.epoch))
        return next(self._it, None)


def _better(value: float, best: float | None, tolerance: float) -> bool:
    if best is None:
        return True
    return value < best - tolerance * abs(best)


def _total(env: TrainingEnv) -> int | None:
    train = env.channel("train")
    return None if train is None else train.num_records


__all__ = ["Task", "TrainSettings", "Trainer", "TrainingOutcome"]
