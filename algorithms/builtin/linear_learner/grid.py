"""The ``num_models`` settings trained side by side: one model as configured, the rest close to it.

SageMaker documents ``num_models`` as "one model is trained according to the given training
parameters (regularization, optimizer, loss), and the rest by close parameters". Model 0 is the
configured one. The others vary, fastest first:

- the learning rate: x1, x sqrt(10), / sqrt(10), x10 of the configured (or auto) rate (small data
  sets favour the larger rates, large ones the smaller);
- the regularization, 8 settings: L2 from ``wd_levels`` with the configured L1, then L1 from
  ``l1_levels`` with the configured L2 (a configured value v > 0 explores v/10, v*10, 0, v*100;
  0 or auto explores 1e-5 .. 1e-2);
- with ``positive_example_weight_mult=auto``, the positive-class weight cycles through 1, the
  balancing weight and their geometric mean.

So 32 models cover 4 learning rates x 8 regularizations. Past 32, the pattern repeats with the
learning rates shifted by sqrt(3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LR_FACTORS = (1.0, 10**0.5, 10**-0.5, 10.0)
_AUTO_WD = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
_AUTO_L1 = (0.0, 1e-5, 1e-4, 1e-3)


@dataclass(frozen=True)
class ModelGrid:
    """Per-model settings, each an array of length ``num_models``."""

    learning_rate: np.ndarray
    wd: np.ndarray
    l1: np.ndarray
    positive_weight: np.ndarray

    @property
    def size(self) -> int:
        return len(self.learning_rate)

    def describe(self, m: int) -> dict[str, float]:
        return {
            "learning_rate": float(self.learning_rate[m]),
            "wd": float(self.wd[m]),
            "l1": float(self.l1[m]),
            "positive_example_weight_mult": float(self.positive_weight[m]),
        }


def _levels(value: float, auto_levels: tuple[float, ...]) -> tuple[float, ...]:
    if value > 0:
        return (value, value / 10, value * 10, 0.0, value * 100)
    return auto_levels


def build_grid(
    num_models: int,
    learning_rate: float,
    wd: float,
    l1: float,
    positive_weight: float | str,
    balanced_weight: float = 1.0,
) -> ModelGrid:
    """The settings of ``num_models`` models; model 0 uses exactly the given values."""
    wd_levels = _levels(wd, _AUTO_WD)
    l1_levels = _levels(l1, _AUTO_L1)
    regs = [(w, l1_levels[0]) for w in wd_levels] + [(wd_levels[0], v) for v in l1_levels[1:]]
    regs = regs[:8]
    if positive_weight == "auto":
        weights = (1.0, balanced_weight, float(np.sqrt(balanced_weight)))
    elif positive_weight == "balanced":
        weights = (balanced_weight,)
    else:
        weights = (float(positive_weight),)
    lr, wds, l1s, pws = [], [], [], []
    per_cycle = len(LR_FACTORS) * len(regs)
    for m in range(num_models):
        cycle = m // per_cycle
        shift = 3.0 ** (((cycle + 1) // 2) * (0.5 if cycle % 2 else -0.5))
        lr.append(learning_rate * LR_FACTORS[m % len(LR_FACTORS)] * shift)
        w, v = regs[(m // len(LR_FACTORS)) % len(regs)]
        wds.append(w)
        l1s.append(v)
        pws.append(weights[m % len(weights)])
    return ModelGrid(np.array(lr), np.array(wds), np.array(l1s), np.array(pws))
