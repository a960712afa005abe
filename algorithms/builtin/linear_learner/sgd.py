"""``num_models`` linear models trained together by mini-batch SGD: one weight matrix, one GEMM per batch.

Weights live in the normalized feature space as a ``(feature_dim, num_models * K)`` matrix (K is 1,
or the number of classes); column ``m * K + k`` is output k of model m. Normalization is applied to
the weights rather than to the data, ``z = x @ (W / scale) - (mean / scale) @ W + b``, so dense and
sparse batches are used as they are read and sparse ones are never densified. Models differ in
learning rate, L1/L2 and positive-class weight (:mod:`.grid`); their columns never mix, so
a model that diverges does not disturb the others.

Optimizers (per column, so each model keeps its own rate): sgd with momentum, adam and rmsprop.
L1 is applied as a proximal (soft-threshold) step scaled like the gradient step, which gives exact
zeros. :meth:`SGDEnsemble.state` / :meth:`SGDEnsemble.load_state` move everything that workers
average each epoch as numpy arrays.

Only the models still in training (``models``, ascending ids) have columns: :meth:`SGDEnsemble.keep`
drops the others (models that diverged, or that the driver stopped training), so their cost goes with
them. ``M`` stays the number of models of the grid; arrays indexed by model id have length ``M``.
"""

from __future__ import annotations

import numpy as np

from ...training.collectives import State
from .grid import ModelGrid
from .kernels import Ops
from .losses import Loss
from .params import LinearConfig
from .scaler import Scaler

_EPS = 1e-8
_INIT_SEED = 20240611  # every worker starts from the same weights


class SGDEnsemble:
    def __init__(self, ops: Ops, config: LinearConfig, grid: ModelGrid, scaler: Scaler, loss: Loss):
        self.ops = ops
        self.config = config
        self.grid = grid
        self.loss = loss.scaled(scaler.label_scale)
        self.M = grid.size
        self.K = config.outputs_per_model
        self.d = config.feature_dim
        self.multiclass = config.predictor_type == "multiclass_classifier"
        self.binary = config.predictor_type == "binary_classifier"
        self.label_mean = scaler.label_mean
        self.label_scale = scaler.label_scale
        K = self.K
        inv_scale = 1.0 / scaler.feature_scale
        self._inv_scale = ops.asarray(inv_scale.reshape(-1, 1)) if config.normalize_data else None
        centered = scaler.feature_mean * inv_scale
        self._centered_mean = ops.asarray(centered.reshape(1, -1)) if np.any(centered != 0) else None
        self.lr = np.repeat(grid.learning_rate, K)  # per column, numpy
        self._wd = ops.asarray(np.repeat(grid.wd, K))
        self._bias_wd = ops.asarray(np.repeat(grid.wd, K) * config.bias_wd_mult)
        self._l1 = ops.asarray(np.repeat(grid.l1, K)) if np.any(grid.l1 > 0) else None
        self._has_wd = bool(np.any(grid.wd > 0))
        pw = grid.positive_weight
        self._pos_weight = ops.asarray(pw.reshape(1, -1) - 1.0) if self.binary and np.any(pw != 1) else None
        self._class_weight = None
        if self.multiclass and config.balance_multiclass_weights:
            self._class_weight = ops.asarray(scaler.class_weights())
        rng = np.random.default_rng(_INIT_SEED)
        shape = (self.d, self.M * K)
        if config.init_method == "normal":
            w0 = rng.normal(0.0, config.init_sigma, shape)
        else:
            w0 = rng.uniform(-config.init_scale, config.init_scale, shape)
        self.W = ops.asarray(w0)
        self.b = ops.full((self.M * K,), config.init_bias if config.use_bias else 0.0)
        self.slots: dict[str, object] = {}
        for name in self._slot_names():
            self.slots[name + "_W"] = ops.zeros(shape)
            self.slots[name + "_b"] = ops.zeros((self.M * K,))
        self.t = 0.0  # updates so far (averaged across workers)
        self.active = np.ones(self.M, dtype=bool)  # models that have not diverged
        self.models = np.arange(self.M)  # the models in training, one block of K columns each
        self._lr_cols = None
        self._lr_key = None
        self.epoch = 0
        self.updates_per_epoch: float | None = None
        self.reset_epoch_stats()

    # bookkeeping ------------------------------------------------------------------------------------
    def _slot_names(self) -> tuple[str, ...]:
        opt = self.config.optimizer
        if opt == "adam":
            return ("m", "v")
        if opt == "rmsprop":
            return ("v", "mom") if self.config.momentum > 0 else ("v",)
        return ("mom",) if self.config.momentum > 0 else ()

    @property
    def live(self) -> int:
        """How many models are in training."""
        return len(self.models)

    def columns(self, blocks: np.ndarray) -> np.ndarray:
        """The column indices of the given blocks of K columns (model ids in a full layout, or positions
        among the models in training)."""
        return (np.asarray(blocks, dtype=np.int64)[:, None] * self.K + np.arange(self.K)[None, :]).ravel()

    def keep(self, models: np.ndarray) -> None:
        """Train only ``models`` (ids, a subset of :attr:`models`) from now on: drop the others' columns."""
        models = np.unique(np.asarray(models, dtype=np.int64))
        if not np.isin(models, self.models).all():
            raise ValueError("keep() takes models that are still in training")
        if len(models) == self.live:
            return
        where = np.searchsorted(self.models, models)
        cols = self.columns(where)
        ops = self.ops
        index = ops.as_index(cols)
        self.W = ops.take_columns(self.W, index)
        self.b = ops.take_columns(self.b, index)
        for name, value in self.slots.items():
            self.slots[name] = ops.take_columns(value, index)
        self.lr = self.lr[cols]
        self._wd = ops.take_columns(self._wd, index)
        self._bias_wd = ops.take_columns(self._bias_wd, index)
        if self._l1 is not None:
            self._l1 = ops.take_columns(self._l1, index)
        if self._pos_weight is not None:
            self._pos_weight = ops.take_columns(self._pos_weight, index)
        self.loss_sum = ops.take_columns(self.loss_sum, ops.as_index(where))
        self.models = models
        self._lr_key = None

    def reset_epoch_stats(self) -> None:
        self.rows = 0
        self.loss_sum = self.ops.zeros((self.live,))

    def state(self) -> State:
        """Everything workers average after an epoch (weights, optimizer slots) or add (loss, rows)."""
        ops = self.ops
        out = {
            "W": ops.to_numpy(self.W),
            "b": ops.to_numpy(self.b),
            "t": np.array([self.t]),
            "rows": np.array([float(self.rows)]),
            "loss_sum": ops.to_numpy(self.loss_sum).astype(np.float64),
        }
        for name, value in self.slots.items():
            out["slot_" + name] = ops.to_numpy(value)
        return out

    def load_state(self, state: State) -> None:
        ops = self.ops
        self.W = ops.copy(state["W"])  # owned and writeable: the optimizers update in place
        self.b = ops.copy(state["b"])
        self.t = float(state["t"][0])
        for name in self.slots:
            self.slots[name] = ops.copy(state["slot_" + name])

    @staticmethod
    def merge(states: list[State]) -> State:
        """Row-weighted average of the models (workers that saw no rows do not count); sums of the stats."""
        rows = np.array([float(s["rows"][0]) for s in states])
        weights = rows / rows.sum() if rows.sum() > 0 else np.full(len(states), 1.0 / len(states))
        out: State = {}
        for key in states[0]:
            if key in ("rows", "loss_sum"):
                out[key] = np.sum([s[key] for s in states], axis=0)
            else:
                acc = sum(w * s[key].astype(np.float64) for w, s in zip(weights, states, strict=True))
                out[key] = acc.astype(states[0][key].dtype)
        return out

    # learning rate -----------------------------------------------------------------------------------
    def _learning_rates(self):
        """Per-column rates for this update: the models' rates times the scheduler's decay."""
        c = self.config
        if not c.use_lr_scheduler:
            steps = 0
        elif c.lr_scheduler_step is None:
            steps = self.epoch
        else:
            steps = int(self.t // c.lr_scheduler_step)
        if self._lr_key != steps:
            decayed = self.lr * c.lr_scheduler_factor**steps
            floor = (
                self.lr / 100.0
                if c.lr_scheduler_minimum_lr is None
                else np.minimum(self.lr, c.lr_scheduler_minimum_lr)
            )
            rates = np.maximum(decayed, floor)
            self._lr_cols = (self.ops.asarray(rates), self.ops.asarray(rates * c.bias_lr_mult))
            self._lr_key = steps
        return self._lr_cols

    # the math --------------------------------------------------------------------------------------
    def margins(self, x, W=None, b=None):
        """Normalized-space outputs ``(n, M * K)`` of every model for features ``x`` (backend array)."""
        ops = self.ops
        W = self.W if W is None else W
        b = self.b if b is None else b
        Ws = W * self._inv_scale if self._inv_scale is not None else W
        z = ops.matmul(x, Ws)
        if self._centered_mean is not None:
            b = b - ops.matmul(self._centered_mean, W)[0]
        return z + b

    def shaped(self, z):
        """``(n, models)`` or ``(n, models, C)`` view of margins, as the losses take them."""
        return z.reshape(z.shape[0], z.shape[1] // self.K, self.K) if self.multiclass else z

    def labels(self, y: np.ndarray):
        """Backend labels in the loss's space: normalized column for regression, indices for multiclass."""
        ops = self.ops
        if self.multiclass:
            return ops.as_index(y)
        y = np.asarray(y, dtype=np.float64)
        if self.label_mean != 0.0 or self.label_scale != 1.0:
            y = (y - self.label_mean) / self.label_scale
        return ops.asarray(y.reshape(-1, 1))

    def step(self, x, y) -> None:
        """One SGD update of every model on a mini-batch (backend features, labels from :meth:`labels`)."""
        ops = self.ops
        n = x.shape[0]
        if n == 0:
            return
        z = self.margins(x)
        value, dz = self.loss.value_grad(ops, self.shaped(z), y, want_value=True)
        self.loss_sum += ops.colsum(value.reshape(n, self.live))
        if self._pos_weight is not None:
            dz *= 1.0 + y * self._pos_weight
        if self._class_weight is not None:
            dz *= self._class_weight[y].reshape(n, 1, 1)
        g = dz.reshape(n, self.live * self.K)
        g *= 1.0 / n
        gsum = ops.colsum(g)
        gW = ops.t_matmul(x, g)
        if self._inv_scale is not None:
            gW *= self._inv_scale
        if self._centered_mean is not None:
            gW -= self._centered_mean.reshape(-1, 1) * gsum.reshape(1, -1)
        if self._has_wd:
            gW += self._wd * self.W
        self.rows += n
        self.t += 1.0
        gb = gsum + self._bias_wd * self.b if self.config.use_bias else None
        self._apply(gW, gb)

    def _apply(self, gW, gb) -> None:
        """The optimizer's update of weights (and bias), in place; then L1's proximal step."""
        ops, c, slots = self.ops, self.config, self.slots
        lr, lr_b = self._learning_rates()
        opt = c.optimizer
        if opt == "adam":
            correction = float(np.sqrt(1.0 - c.beta_2**self.t) / (1.0 - c.beta_1**self.t))
            step = ops.adam_(
                self.W, gW, slots["m_W"], slots["v_W"], lr * correction, c.beta_1, c.beta_2, _EPS
            )
            if gb is not None:
                ops.adam_(self.b, gb, slots["m_b"], slots["v_b"], lr_b * correction, c.beta_1, c.beta_2, _EPS)
        elif opt == "rmsprop":
            step = ops.rmsprop_(self.W, gW, slots["v_W"], slots.get("mom_W"), lr, c.beta_2, c.momentum, _EPS)
            if gb is not None:
                ops.rmsprop_(self.b, gb, slots["v_b"], slots.get("mom_b"), lr_b, c.beta_2, c.momentum, _EPS)
        else:
            ops.sgd_(self.W, gW, slots.get("mom_W"), lr, c.momentum)
            if gb is not None:
                ops.sgd_(self.b, gb, slots.get("mom_b"), lr_b, c.momentum)
            step = lr
        if self._l1 is not None:
            ops.soft_threshold_(self.W, step * self._l1)

    # after an epoch ----------------------------------------------------------------------------------
    def end_epoch(self) -> np.ndarray:
        """Drop models whose weights stopped being finite; returns the models (by id) that diverged now."""
        ops = self.ops
        finite = ops.isfinite_columns(self.W).reshape(self.live, self.K).all(axis=1)
        finite &= ops.isfinite_columns(self.b.reshape(1, -1)).reshape(self.live, self.K).all(axis=1)
        diverged = np.zeros(self.M, dtype=bool)
        diverged[self.models[~finite]] = True
        if diverged.any():
            self.active &= ~diverged
            self.keep(self.models[finite])
        self.epoch += 1
        return diverged

    def copy_models(self, W, b, models: np.ndarray):
        """``(W, b)`` of all M models with the columns of ``models`` (ids in training) set to this ensemble's."""
        ops = self.ops
        where = np.searchsorted(self.models, models)
        target, source = ops.as_index(self.columns(models)), ops.as_index(self.columns(where))
        W, b = ops.copy(W), ops.copy(b)
        W[:, target] = ops.take_columns(self.W, source)
        b[target] = ops.take_columns(self.b, source)
        return W, b

    def model_weights(self, W, b, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Model m in the original feature and label space: ``coefficients (d, K)``, ``intercept (K,)``."""
        ops = self.ops
        cols = slice(m * self.K, (m + 1) * self.K)
        w = ops.to_numpy(W[:, cols]).astype(np.float64)
        bias = ops.to_numpy(b[cols]).astype(np.float64)
        inv_scale = ops.to_numpy(self._inv_scale).astype(np.float64) if self._inv_scale is not None else 1.0
        coef = w * inv_scale
        intercept = bias.copy()
        if self._centered_mean is not None:
            intercept -= ops.to_numpy(self._centered_mean).astype(np.float64)[0] @ w
        coef *= self.label_scale
        intercept = intercept * self.label_scale + self.label_mean
        return coef, intercept
