"""PCA (SageMaker ``pca``): principal components from mergeable summaries of the streamed rows.

``regular`` mode is exact: each worker accumulates ``n``, the mean and the centered scatter matrix
``Σ(x-μ)ᵀ(x-μ)`` (d×d, float64, merged across batches and workers with Chan's pairwise update, which
keeps full precision when the mean is large), and the top eigenvectors of the covariance are the
components. Use it while d² fits in memory.

``randomized`` mode never forms a d×d matrix, for large ``feature_dim``. It is a randomized subspace
iteration with Rayleigh-Ritz: ``ℓ = num_components + extra_components`` directions, one streamed pass
per iteration, each pass accumulating ``Σ Xᵀ(X Q)`` (d×ℓ), ``Σx``, ``Σ‖x‖²`` and ``n``, summed across
workers. The first pass starts from a random Gaussian ``Ω`` (a fixed seed, so every worker draws the
same one) and yields the mean; later passes center each row on it (sparse rows stay sparse), refine the
basis and yield Ritz values, and passes stop once the top ``num_components`` of those change by less
than ``RITZ_TOL`` (relative) or after ``MAX_PASSES``. A single sketch pass, as SageMaker's docs
describe, is far from the true variances on data whose spectrum decays slowly (tens of percent off on
scikit-learn's digits), hence the refinement passes; ``extra_components`` still trades memory for speed
of convergence.

Both modes give results that do not depend on how rows are grouped, so rows stream in blocks of
``max(mini_batch_size, BLOCK_ROWS)`` (slices of the reader's decoded chunks, never copied together): a
block's float64 copy stays in cache, and per-block Python overhead is paid ~250 times per million rows
instead of 2,000 times at SageMaker's default mini-batch of 500. Components are ordered by
decreasing singular value and their signs fixed so that each component's largest-magnitude loading is
positive (as scikit-learn does), so the same data gives the same model whatever the worker count or
input layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..backend import Backend
from ..batch import Batch
from ..hyperparameters import Hyperparameter, HyperparameterError, HyperparameterSpec
from ..training.collectives import State
from .base import MergeablePass, Model, Output
from .registry import register

MODES = ("regular", "randomized")
BLOCK_ROWS = 4096
RITZ_TOL = 1e-4
MAX_PASSES = 10
_SEED = 0x5CA

HYPERPARAMETERS = HyperparameterSpec([
    Hyperparameter("num_components", int, required=True, low=1, doc="Number of principal components."),
    Hyperparameter("feature_dim", int, low=1,
                   doc="Number of features; required unless the train channel's manifest records it."),
    Hyperparameter("mini_batch_size", int, default=500, low=1,
                   doc="Rows per block, at least; results do not depend on it (rows are summed)."),
    Hyperparameter("algorithm_mode", str, default="regular", choices=MODES,
                   doc="regular: exact, d×d scatter matrix; randomized: d×ℓ sketch refined over passes."),
    Hyperparameter("subtract_mean", bool, default=True,
                   doc="Center the data (in training and at inference)."),
    Hyperparameter("extra_components", int, default=-1, low=-1,
                   doc="Randomized mode: extra sketch directions; -1 means max(10, num_components)."),
    Hyperparameter("force_dense", bool, default=False,
                   doc="Densify sparse mini-batches before computing; sparse rows are otherwise used as is "
                       "(the results are the same)."),
])


def sketch_size(num_components: int, extra_components: int, feature_dim: int) -> int:
    """ℓ, the number of directions randomized mode tracks."""
    extra = max(10, num_components) if extra_components == -1 else extra_components
    return min(feature_dim, num_components + extra)


def _check_components(num_components: int, feature_dim: int) -> None:
    if num_components > feature_dim:
        raise HyperparameterError("num_components", f"must be at most feature_dim ({feature_dim}), "
                                  f"got {num_components}")


class PCAModel(Model):
    """Projects rows onto the principal components: SageMaker's ``projection`` (JSON: ``projections``).

    Arrays (SageMaker's names): ``s`` singular values of the centered training matrix (descending),
    ``v`` the components as columns ``(feature_dim, num_components)``, ``mean`` ``(1, feature_dim)``
    subtracted before projecting (zeros when ``subtract_mean`` is false); plus ``num_records`` and
    ``total_variance`` (the sum of all the covariance's eigenvalues) for explained-variance ratios.
    """

    algorithm = "pca"
    outputs = (Output("projection", kind="vector"),)
    json_envelope = "projections"

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, s: np.ndarray, v: np.ndarray,
                 mean: np.ndarray, num_records: float, total_variance: float):
        super().__init__(hyperparameters, feature_dim)
        self.s = np.asarray(s, dtype=np.float64).ravel()
        self.v = np.asarray(v, dtype=np.float64)
        self.mean = np.asarray(mean, dtype=np.float64).reshape(1, -1)
        if self.v.shape != (self.feature_dim, len(self.s)) or self.mean.shape[1] != self.feature_dim:
            raise ValueError(f"PCA arrays do not fit feature_dim {self.feature_dim}: v {self.v.shape}, "
                             f"s {self.s.shape}, mean {self.mean.shape}")
        self.num_records = float(num_records)
        self.total_variance = float(total_variance)
        self._offset = self.mean @ self.v  # (1, num_components), subtracted from x @ v

    @property
    def num_components(self) -> int:
        return len(self.s)

    @property
    def components(self) -> np.ndarray:
        """``(num_components, feature_dim)``: row ``i`` is the ``i``-th principal axis."""
        return self.v.T

    @property
    def singular_values(self) -> np.ndarray:
        return self.s

    @property
    def explained_variance(self) -> np.ndarray:
        """Variance along each component (``s² / (n - 1)``, as scikit-learn reports it)."""
        return self.s**2 / max(self.num_records - 1.0, 1.0)

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        total = self.total_variance / max(self.num_records - 1.0, 1.0)
        return self.explained_variance / total if total > 0 else np.zeros_like(self.s)

    def project(self, features) -> np.ndarray:
        """``(x - mean) @ v`` in float64 (sparse rows stay sparse)."""
        if sp.issparse(features):
            projected = np.asarray(sp.csr_matrix(features, dtype=np.float64) @ self.v)
        else:
            projected = np.asarray(features, dtype=np.float64) @ self.v
        projected -= self._offset
        return projected

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        return {"projection": self.project(batch.features).astype(np.float32)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"s": self.s, "v": self.v, "mean": self.mean, "num_records": np.array([self.num_records]),
                "total_variance": np.array([self.total_variance])}

    @classmethod
    def expected_arrays(cls, hyperparameters, feature_dim):
        n = hyperparameters.get("num_components")
        n = int(n) if n and str(n).isdigit() else None
        return {"s": (n,), "v": (feature_dim, n), "mean": (1, feature_dim), "num_records": (1,),
                "total_variance": (1,)}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(hyperparameters, feature_dim, arrays["s"], arrays["v"], arrays["mean"],
                   float(arrays["num_records"][0]), float(arrays["total_variance"][0]))


@register
class PCA(MergeablePass):
    name = "pca"
    hyperparameters = HYPERPARAMETERS
    model_class = PCAModel
    channels = ("train", "test")

    def __init__(self, env):
        super().__init__(env)
        self.num_components = int(self.hp["num_components"])
        _check_components(self.num_components, self.feature_dim)
        self.mode = self.hp["algorithm_mode"]
        self.subtract_mean = bool(self.hp["subtract_mean"])
        self.ell = sketch_size(self.num_components, int(self.hp["extra_components"]), self.feature_dim)
        self.backend: Backend = env.backend
        self.basis: np.ndarray | None = None  # randomized mode: the d×ℓ directions of the current pass
        self._basis_dev: Any = None
        self._shift_dev: Any = None  # randomized mode after the first pass: (mean, mean @ basis)
        self.passes = 0

    @classmethod
    def validate(cls, hyperparameters):
        values = super().validate(hyperparameters)
        if values.get("feature_dim") is not None:
            _check_components(values["num_components"], values["feature_dim"])
        return values

    def block_rows(self) -> int:
        return max(self.batch_size(), BLOCK_ROWS)

    # The streaming contract -------------------------------------------------------------------------
    def init(self) -> State:
        d = self.feature_dim
        if self.mode == "regular":
            return {"n": np.zeros(1), "mean": np.zeros(d), "scatter": np.zeros((d, d))}
        return {"n": np.zeros(1), "sum": np.zeros(d), "sq_sum": np.zeros(1), "y": np.zeros((d, self.ell))}

    def update(self, state: State, batch: Batch) -> State:
        rows = len(batch)
        if rows == 0:
            return state
        if batch.feature_dim != self.feature_dim:
            raise ValueError(f"a training batch has {batch.feature_dim} features; "
                             f"feature_dim is {self.feature_dim}")
        features = batch.features
        if sp.issparse(features) and self.hp["force_dense"]:
            features = features.toarray()
        be = self.backend
        state = {key: be.asarray(value, dtype=np.float64) if isinstance(value, np.ndarray) else value
                 for key, value in state.items()}
        x = be.float64(be.asarray(features))
        if self.mode == "regular":
            mean = be.col_sums(x) / rows
            if be.is_sparse(x):
                scatter = be.gram(x) - rows * (mean[:, None] * mean[None, :])
            else:
                scatter = be.gram(x - mean[None, :])
            batch_state = {"n": be.asarray(np.array([float(rows)])), "mean": mean, "scatter": scatter}
            return chan_merge(state, batch_state)
        if self._basis_dev is None:
            raise RuntimeError("randomized PCA: set the pass's basis before streaming (train() does)")
        projected = be.matmul(x, self._basis_dev)
        sq_norms = be.row_sq_norms(x)
        if self._shift_dev is None:
            y = be.t_matmul(x, projected)
        else:  # rows minus the mean, without densifying sparse rows: (x-μ)Q, then (x-μ)ᵀ((x-μ)Q)
            mu, mu_q = self._shift_dev
            projected = projected - mu_q[None, :]
            y = be.t_matmul(x, projected) - mu[:, None] * projected.sum(0)[None, :]
            sq_norms = sq_norms - 2.0 * be.matmul(x, mu[:, None])[:, 0] + (mu * mu).sum()
        return {"n": state["n"] + rows, "sum": state["sum"] + be.col_sums(x),
                "sq_sum": state["sq_sum"] + float(be.to_numpy(sq_norms).sum()), "y": state["y"] + y}

    def merge(self, states: list[State]) -> State:
        if self.mode == "regular":
            merged = states[0]
            for other in states[1:]:
                merged = chan_merge(merged, other)
            return merged
        return {key: np.sum([s[key] for s in states], axis=0) for key in states[0]}

    def finalize(self, state: State) -> PCAModel:
        """Regular mode: the top eigenpairs of the (centered) scatter matrix."""
        if self.mode != "regular":
            raise RuntimeError("randomized PCA is finalized by its passes (train())")
        n = float(state["n"][0])
        _check_records(n)
        scatter = np.array(state["scatter"], dtype=np.float64)
        mean = np.asarray(state["mean"], dtype=np.float64)
        if not self.subtract_mean:
            scatter += n * np.outer(mean, mean)
        scatter = (scatter + scatter.T) / 2.0
        values, vectors = np.linalg.eigh(scatter)
        top = np.argsort(values)[::-1][: self.num_components]
        return self._model(values[top], vectors[:, top], mean, n, float(np.trace(scatter)))

    # Driver ------------------------------------------------------------------------------------------
    def train(self) -> PCAModel:
        if self.mode == "regular":
            merged = self._pass()
            _check_records(float(merged["n"][0]))
            arrays = self.finalize(merged).to_arrays() if self.env.collectives.rank == 0 else None
        else:
            arrays = self._train_randomized()
        arrays = self.env.collectives.broadcast_state(arrays)
        model = PCAModel.from_arrays(arrays, self.env.hyperparameters, self.feature_dim)
        kept = float(model.explained_variance_ratio.sum())
        self.env.reporter.metric("train:explained_variance_ratio", kept)
        self.evaluate(model)
        return model

    def _pass(self) -> State:
        """One streamed pass over this worker's train shards, merged across workers (numpy state)."""
        train = self.env.require_channel("train")
        state = self.stream(train.blocks(self.block_rows()), self.init(), self.passes)
        self.passes += 1
        return self.merged({key: self.backend.to_numpy(value) for key, value in state.items()})

    def _set_basis(self, basis: np.ndarray, mean: np.ndarray | None = None) -> None:
        """The directions of the next pass and, once known, the mean its rows are centered on."""
        be = self.backend
        self.basis = basis
        self._basis_dev = be.asarray(basis, dtype=np.float64)
        self._shift_dev = None if mean is None else (be.asarray(mean, dtype=np.float64),
                                                      be.asarray(mean @ basis, dtype=np.float64))

    def _train_randomized(self) -> State | None:
        collectives = self.env.collectives
        self._set_basis(np.random.default_rng(_SEED).standard_normal((self.feature_dim, self.ell)))
        first = self._pass()
        n = float(first["n"][0])
        _check_records(n)
        # The first pass's product is uncentered (the mean was not known yet); later passes center each
        # row on the mean, so a large mean costs no precision there.
        mean = collectives.broadcast(first["sum"] / n if collectives.rank == 0 else None)
        y = np.asarray(first["y"], dtype=np.float64)
        if self.subtract_mean:
            y = y - n * np.outer(mean, mean @ self.basis)
        previous = None
        while True:
            decision = None
            if collectives.rank == 0:
                decision = {"basis": np.linalg.qr(y)[0]}
            basis = collectives.broadcast_state(decision)["basis"]
            self._set_basis(basis, mean if self.subtract_mean else None)
            merged = self._pass()
            if float(merged["n"][0]) != n:
                raise ValueError(f"the train channel held {n:.0f} records in the first pass and "
                                 f"{float(merged['n'][0]):.0f} in pass {self.passes}; it must not change")
            y = np.asarray(merged["y"], dtype=np.float64)
            total = float(merged["sq_sum"][0])
            ritz = self.basis.T @ y
            values, vectors = np.linalg.eigh((ritz + ritz.T) / 2.0)
            order = np.argsort(values)[::-1]
            values, vectors = values[order], vectors[:, order]
            top = values[: self.num_components]
            done = self.ell == self.feature_dim or self.passes >= MAX_PASSES
            if previous is not None:
                change = np.abs(top - previous) / np.maximum(np.abs(top), np.finfo(float).tiny)
                done = done or bool(change.max() <= RITZ_TOL)
            previous = top
            # Every rank holds the same merged sums, but only rank 0's decision counts: floating-point
            # results may differ across machines, and all workers must agree on whether to go on.
            stop = collectives.broadcast(np.array([done]) if collectives.rank == 0 else None)
            if bool(stop[0]):
                break
        self.env.reporter.log(f"randomized PCA: {self.passes} passes over the data (ℓ = {self.ell})")
        if collectives.rank != 0:
            return None
        components = self.basis @ vectors[:, : self.num_components]
        return self._model(top, components, mean, n, total).to_arrays()

    def _model(self, eigenvalues: np.ndarray, vectors: np.ndarray, mean: np.ndarray, n: float,
               total_variance: float) -> PCAModel:
        s = np.sqrt(np.maximum(eigenvalues, 0.0))
        vectors = flip_signs(np.asarray(vectors, dtype=np.float64))
        offset = mean if self.subtract_mean else np.zeros_like(mean)
        return PCAModel(self.env.hyperparameters, self.feature_dim, s, vectors, offset.reshape(1, -1), n,
                        max(total_variance, 0.0))

    def evaluate(self, model: PCAModel) -> dict[str, float]:
        """``test:explained_variance_ratio``: the share of the test rows' variance the components keep."""
        test = self.env.channel("test")
        if test is None:
            return {}
        collectives = self.env.collectives
        totals = np.zeros(3)  # Σ‖x-μ‖², Σ‖projection‖², records
        mean = model.mean.ravel()
        for batch in test.worker_batches(self.block_rows(), collectives.rank, collectives.world_size):
            model.check_features(batch)
            x = batch.features
            if sp.issparse(x):
                x = sp.csr_matrix(x, dtype=np.float64)
                x2 = np.asarray(x.multiply(x).sum(axis=1)).ravel()
                centered = x2 - 2.0 * np.asarray(x @ mean).ravel() + mean @ mean
            else:
                diff = np.asarray(x, dtype=np.float64) - mean
                centered = np.einsum("ij,ij->i", diff, diff)
            projected = model.project(x)
            totals += (centered.sum(), np.einsum("ij,ij->", projected, projected), len(batch))
        variance, kept, records = collectives.allreduce(totals)
        if records == 0 or variance <= 0:
            return {}
        ratio = float(kept / variance)
        self.env.reporter.metric("test:explained_variance_ratio", ratio)
        return {"test:explained_variance_ratio": ratio}


def chan_merge(a: State, b: State) -> State:
    """Combine two (n, mean, centered scatter) summaries exactly (Chan, Golub & LeVeque)."""
    na, nb = float(a["n"][0]), float(b["n"][0])
    if nb == 0:
        return a
    if na == 0:
        return b
    n = na + nb
    delta = b["mean"] - a["mean"]
    return {"n": np.array([n]), "mean": a["mean"] + delta * (nb / n),
            "scatter": a["scatter"] + b["scatter"] + (delta[:, None] * delta[None, :]) * (na * nb / n)}


def flip_signs(vectors: np.ndarray) -> np.ndarray:
    """Make each column's largest-magnitude entry positive (a deterministic sign for each component)."""
    if vectors.size == 0:
        return vectors
    rows = np.abs(vectors).argmax(axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def _check_records(n: float) -> None:
    if n < 2:
        raise ValueError(f"PCA needs at least 2 training records, the train channel held {n:.0f}")


__all__ = ["HYPERPARAMETERS", "PCA", "PCAModel", "chan_merge", "flip_signs", "sketch_size"]
