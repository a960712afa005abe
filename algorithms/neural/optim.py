"""SageMaker's optimizer and learning-rate schedule names, as torch optimizers and schedules.

The neural built-ins take MXNet-era names (``sgd``, ``nag``, ``adam``, ``rmsprop``, ``adagrad``,
``adadelta``) and schedules (steps at given epochs, reduce on plateau, ``1/t`` and ``1/sqrt(t)`` decay).
A :class:`Schedule` says when it moves (after each update, epoch or evaluation), so the trainer can drive
any of them without knowing which it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

OPTIMIZERS = ("sgd", "nag", "adam", "rmsprop", "adagrad", "adadelta")


def make_optimizer(name: str, params: Iterable[Any], *, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                   rho: float = 0.9):
    """A torch optimizer by SageMaker's name. ``rho`` is RMSProp's / Adadelta's decay (MXNet's ``gamma1``)."""
    import torch

    name = name.lower()
    if name in ("sgd", "nag"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=name == "nag" and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=rho, eps=eps, momentum=momentum, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=eps, weight_decay=weight_decay)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; one of {', '.join(OPTIMIZERS)}")


class Schedule:
    """A learning-rate schedule and the moments it moves at. Subclasses override the hooks they need."""

    def after_step(self, step: int) -> None:
        """After optimizer update number ``step`` (1-based)."""

    def after_epoch(self, epoch: int) -> None:
        """After epoch ``epoch`` (0-based) ended."""

    def after_evaluation(self, value: float | None) -> None:
        """After an evaluation whose objective (lower is better) was ``value``."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class _Wrapped(Schedule):
    def __init__(self, scheduler):
        self.scheduler = scheduler

    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state)


class StepsAtEpochs(_Wrapped):
    """Multiply the rate by ``factor`` after each epoch in ``epochs`` (Image Classification's
    ``lr_scheduler_step`` / ``lr_scheduler_factor``; epochs counted from 1, as SageMaker's are)."""

    def __init__(self, optimizer, epochs: Sequence[int], factor: float):
        import torch

        super().__init__(torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sorted(epochs), gamma=factor))

    def after_epoch(self, epoch):
        self.scheduler.step()


class ReduceOnPlateau(_Wrapped):
    """Multiply the rate by ``factor`` after ``patience`` evaluations without improvement (Seq2Seq's
    ``plateau_reduce``)."""

    def __init__(self, optimizer, factor: float, patience: int):
        import torch

        super().__init__(torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor,
                                                                    patience=patience))

    def after_evaluation(self, value):
        if value is not None and math.isfinite(value):
            self.scheduler.step(value)


class InverseTime(_Wrapped):
    """``lr / (1 + t / period)`` or ``lr / sqrt(1 + t / period)`` after ``t`` updates (Seq2Seq's
    ``fixed_rate_inv_t`` / ``fixed_rate_inv_sqrt_t``; ``period`` is its checkpoint interval)."""

    def __init__(self, optimizer, period: int, sqrt: bool = False):
        import torch

        period = max(1, int(period))
        power = 0.5 if sqrt else 1.0
        super().__init__(torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: (1.0 + t / period) ** -power))

    def after_step(self, step):
        self.scheduler.step()


__all__ = ["OPTIMIZERS", "InverseTime", "ReduceOnPlateau", "Schedule", "StepsAtEpochs", "make_optimizer"]
