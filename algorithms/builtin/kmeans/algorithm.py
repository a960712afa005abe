"""K-Means (SageMaker ``kmeans``): web-scale mini-batch k-means over the stream, reduced to k at the end.

Each worker streams its shards once per epoch and keeps ``K = k * extra_center_factor`` centers, moved
by mini-batch averaging (each center is the running, optionally decayed, mean of the points assigned
to it). Alongside the centers it keeps, per center, the count, sum and sum of squared norms of the
points it took this epoch: a summary of the data whose size does not depend on the number of records.
Summaries from all workers are concatenated (the merge), and rank 0 reduces the ``K * workers``
weighted group means to ``k`` centers with k-means++ seeding and Lloyd iterations (the "local Lloyd"),
keeping the best of ``local_lloyd_num_trials`` runs. The data itself is never held.

``train:msd`` is computed from the summaries of the last epoch: the mean squared distance of the
training records to the final centers when each record goes where its group went (an upper bound of
the exact value, which would need another pass; with ``half_life_time_size`` records weigh as decayed).
``test:msd`` / ``test:ssd`` are exact, on the ``test`` channel, each worker scoring part of its files.

``init_method`` seeds the streaming centers from the first mini-batch (more batches if it is smaller
than ``K``); ``local_lloyd_init_method`` seeds the final reduction. Computation runs on the worker's
array backend (numpy; torch on a GPU worker), the final reduction in numpy on the small summary.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...backend import Backend
from ...batch import Batch
from ...hyperparameters import AUTO, Hyperparameter, HyperparameterError, HyperparameterSpec
from ...training.collectives import State
from ..base import MergeablePass
from ..registry import register
from .lloyd import INIT_METHODS, kmeans_plus_plus, random_centers, squared_distances, weighted_kmeans
from .model import KMeansModel, closest_centers

EVAL_METRICS = ("msd", "ssd")
AUTO_CENTER_FACTOR = 10  # SageMaker's observed auto value ("shrinking 80 centers into 8")
MIN_AUTO_CENTERS = 200  # auto also keeps at least this many centers, so small k still gets a fine summary...
AUTO_CENTER_BUDGET = 1 << 22  # ...as long as the centers hold at most this many values (32 MiB of float64)
AUTO_NUM_TRIALS = 10  # SageMaker's observed auto value
_SEED = 0x5EED

HYPERPARAMETERS = HyperparameterSpec([
    Hyperparameter("k", int, required=True, low=1, low_open=True, doc="Number of clusters."),
    Hyperparameter("feature_dim", int, low=1,
                   doc="Number of features; required unless the train channel's manifest records it."),
    Hyperparameter("mini_batch_size", int, default=5000, low=1, doc="Records per mini-batch update."),
    Hyperparameter("epochs", int, default=1, low=1, doc="Passes over the training data."),
    Hyperparameter("init_method", str, default="random", choices=INIT_METHODS,
                   doc="How the streaming centers are seeded from the first mini-batch."),
    Hyperparameter("extra_center_factor", int, default=AUTO, low=1, auto=True,
                   doc="Streaming keeps k * extra_center_factor centers and reduces them to k at the end. "
                       f"auto: {AUTO_CENTER_FACTOR}, raised towards {MIN_AUTO_CENTERS} centers while they "
                       "stay small (32 MiB)."),
    Hyperparameter("local_lloyd_max_iter", int, default=300, low=1,
                   doc="Maximum Lloyd iterations of the final reduction."),
    Hyperparameter("local_lloyd_tol", float, default=0.0001, low=0.0, high=1.0,
                   doc="Relative change of the weighted ssd below which the final Lloyd stops."),
    Hyperparameter("local_lloyd_init_method", str, default="kmeans++", choices=INIT_METHODS,
                   doc="Seeding of the final reduction."),
    Hyperparameter("local_lloyd_num_trials", int, default=AUTO, low=1, auto=True,
                   doc=f"Runs of the final reduction; the lowest ssd wins. auto: {AUTO_NUM_TRIALS}."),
    Hyperparameter("half_life_time_size", int, default=0, low=0,
                   doc="Records after which a record's weight in its center's mean halves; 0: no decay."),
    Hyperparameter("eval_metrics", list, default=["msd"],
                   doc='Metrics on the test channel: a JSON list of "msd" and/or "ssd".'),
    Hyperparameter("force_dense", bool, default=True,
                   doc="Densify sparse mini-batches before computing (SageMaker's SDK always sends True)."),
])


def num_centers(k: int, extra_center_factor: Any, feature_dim: int) -> int:
    """How many centers the streaming phase keeps.

    auto: ``k * 10`` (SageMaker's), raised up to 200 centers for small k, which makes the summary finer
    at little cost, unless the centers would then exceed ``AUTO_CENTER_BUDGET`` values.
    """
    if extra_center_factor in (None, AUTO):
        affordable = AUTO_CENTER_BUDGET // (k * feature_dim)
        return k * max(AUTO_CENTER_FACTOR, min(math.ceil(MIN_AUTO_CENTERS / k), affordable))
    return k * int(extra_center_factor)


def check_eval_metrics(values: list[str]) -> list[str]:
    metrics = [str(v).strip().lower() for v in values]
    bad = [m for m in metrics if m not in EVAL_METRICS]
    if bad or not metrics:
        raise HyperparameterError("eval_metrics", f'must be a list of "msd" and/or "ssd", got {values!r}')
    return metrics


@register
class KMeans(MergeablePass):
    name = "kmeans"
    hyperparameters = HYPERPARAMETERS
    model_class = KMeansModel
    channels = ("train", "test")

    def __init__(self, env):
        super().__init__(env)
        self.eval_metrics = check_eval_metrics(self.hp["eval_metrics"])
        self.k = int(self.hp["k"])
        self.num_centers = num_centers(self.k, self.hp["extra_center_factor"], self.feature_dim)
        trials = self.hp["local_lloyd_num_trials"]
        self.num_trials = AUTO_NUM_TRIALS if trials in (None, AUTO) else int(trials)
        self.half_life = int(self.hp["half_life_time_size"])
        self.backend: Backend = env.backend
        self.rng = np.random.default_rng([_SEED, env.rank])

    @classmethod
    def validate(cls, hyperparameters):
        values = super().validate(hyperparameters)
        check_eval_metrics(values["eval_metrics"])
        return values

    # The streaming contract -------------------------------------------------------------------------
    def init(self) -> State:
        d, empty = self.feature_dim, np.zeros(0)
        return {"centers": np.zeros((0, d)), "weights": empty, "counts": empty, "sums": np.zeros((0, d)),
                "sq_norms": empty}

    def update(self, state: State, batch: Batch) -> State:
        """One mini-batch step: seed missing centers, relocate starved ones, move centers to running means."""
        if len(batch) == 0:
            return state
        if batch.feature_dim != self.feature_dim:
            raise ValueError(f"a training batch has {batch.feature_dim} features; "
                             f"feature_dim is {self.feature_dim}")
        features = batch.features
        if sp.issparse(features) and self.hp["force_dense"]:
            features = features.toarray()
        if len(state["centers"]) < self.num_centers:
            state = self._add_centers(state, features)
        if self.half_life > 0:
            decay = 0.5 ** (len(batch) / self.half_life)
            state = {key: (value if key == "centers" else value * decay) for key, value in state.items()}
        be = self.backend
        dtype = np.float32 if features.dtype == np.float32 else np.float64
        x = be.asarray(features, dtype=dtype)
        x64 = be.float64(x)
        x_norms = be.row_sq_norms(x64)
        labels, distances = self._assign(x, dtype, x_norms, state["centers"])
        state, moved = self._relocate(state, features, x64, be.to_numpy(x_norms), be.to_numpy(distances),
                                      be.to_numpy(be.bincount(labels, None, len(state["centers"]))))
        if moved:
            labels, _ = self._assign(x, dtype, x_norms, state["centers"])
        k = len(state["centers"])
        counts = be.to_numpy(be.bincount(labels, None, k))
        sums = be.to_numpy(be.segment_sum(x64, labels, k))
        sq_norms = be.to_numpy(be.bincount(labels, x_norms, k))
        weights = state["weights"]
        centers = state["centers"].copy()
        hit = counts > 0
        centers[hit] = (weights[hit, None] * centers[hit] + sums[hit]) / (weights[hit] + counts[hit])[:, None]
        return {"centers": centers, "weights": weights + counts, "counts": state["counts"] + counts,
                "sums": state["sums"] + sums, "sq_norms": state["sq_norms"] + sq_norms}

    def merge(self, states: list[State]) -> State:
        """The union of the workers' summaries."""
        return {key: np.concatenate([s[key] for s in states]) for key in states[0]}

    def finalize(self, state: State) -> KMeansModel:
        """Reduce the summary's weighted group means to ``k`` centers (the local Lloyd)."""
        self.check_summary(state)
        points, weights = group_means(state)
        result = weighted_kmeans(points, weights, self.k, np.random.default_rng(_SEED),
                                 init=self.hp["local_lloyd_init_method"],
                                 max_iter=self.hp["local_lloyd_max_iter"], tol=self.hp["local_lloyd_tol"],
                                 trials=self.num_trials)
        return KMeansModel(self.env.hyperparameters, self.feature_dim, result.centers)

    def check_summary(self, state: State) -> None:
        """Fail (on every worker alike) when the merged summary cannot give k clusters."""
        records = float(state["counts"].sum())
        if records <= 0:
            raise ValueError("k-means found no training records in the train channel")
        if self.half_life == 0 and records < self.k:
            raise ValueError(f"k={self.k} but the training data holds {records:.0f} records")

    # Pieces ------------------------------------------------------------------------------------------
    def _assign(self, x, dtype, x_norms, centers: np.ndarray):
        """Closest center of each row and the squared distance to it (backend arrays)."""
        be = self.backend
        # argmin over centers of ‖c‖² - 2 x·c (‖x‖² is the same for every center of a row)
        centers_t = be.asarray(np.ascontiguousarray(-2.0 * centers.T), dtype=dtype)
        scores = be.matmul(x, centers_t)
        scores += be.asarray(np.einsum("ij,ij->i", centers, centers), dtype=dtype)[None, :]
        labels, best = be.argmin_rows(scores)
        return labels, be.float64(best) + x_norms

    def _relocate(self, state: State, features, x64, x_norms: np.ndarray, distances: np.ndarray,
                  batch_counts: np.ndarray) -> tuple[State, bool]:
        """Move centers the stream no longer needs to regions of this batch that no center serves.

        A greedy swap, as in k-means local search: a candidate row drawn with probability proportional
        to its squared distance (k-means++ style) replaces the center whose records (its weight plus the
        batch rows it serves) are cheapest to fold into its nearest neighbour, when the batch's cost
        drops by more than that fold costs. The folded group's statistics join the neighbour's, so no
        record leaves the summary. This keeps a stream whose order is not random (sorted by key, one
        class per shard) from being summarized by centers seeded in its first mini-batch only; on a
        stationary stream the test rarely passes and costs little.
        """
        centers = state["centers"]
        k = len(centers)
        if k < 2:
            return state, False
        be = self.backend
        distances = np.maximum(distances, 0.0)
        out, weights = state, state["weights"]
        trials = 2 + int(np.log(k))
        moved = False
        for _ in range(max(1, k // self.k)):
            pairwise = squared_distances(centers, centers)
            np.fill_diagonal(pairwise, np.inf)
            nearest = pairwise.argmin(axis=1)
            fold_costs = (weights + batch_counts) * pairwise[np.arange(k), nearest]
            j = int(fold_costs.argmin())
            total = distances.sum()
            if not total > fold_costs[j]:  # no candidate can gain more than the whole batch costs
                break
            cumulative = np.cumsum(distances)
            picks = np.searchsorted(cumulative, self.rng.random(trials) * total)
            picks = np.minimum(picks, len(distances) - 1)
            rows = features[picks]
            candidates = np.asarray(rows.toarray() if sp.issparse(rows) else rows, dtype=np.float64)
            candidates_t = be.asarray(np.ascontiguousarray(candidates.T), dtype=np.float64)
            to_candidates = be.to_numpy(be.matmul(x64, candidates_t))
            to_candidates *= -2.0
            to_candidates += x_norms[:, None]
            to_candidates += np.einsum("ij,ij->i", candidates, candidates)[None, :]
            np.maximum(to_candidates, 0.0, out=to_candidates)
            gains = np.maximum(distances[:, None] - to_candidates, 0.0).sum(axis=0)
            best = int(gains.argmax())
            if not gains[best] > fold_costs[j]:
                break
            if not moved:  # copy on first write
                out = {key: value.copy() for key, value in state.items()}
                centers, weights = out["centers"], out["weights"]
            m = int(nearest[j])
            if weights[j] > 0:
                centers[m] = (weights[m] * centers[m] + weights[j] * centers[j]) / (weights[m] + weights[j])
            for key in ("weights", "counts", "sums", "sq_norms"):
                out[key][m] += out[key][j]
                out[key][j] = 0.0
            centers[j] = candidates[best]
            batch_counts[m] += batch_counts[j]
            batch_counts[j] = np.count_nonzero(to_candidates[:, best] < distances)
            distances = np.minimum(distances, to_candidates[:, best])
            moved = True
        return out, moved

    def _add_centers(self, state: State, features) -> State:
        """Seed centers from this batch's rows until there are ``num_centers`` (init_method)."""
        rows = sp.csr_matrix(features, dtype=np.float64) if sp.issparse(features) else features
        need = min(self.num_centers - len(state["centers"]), rows.shape[0])
        if self.hp["init_method"] == "kmeans++":
            new = kmeans_plus_plus(rows, np.ones(rows.shape[0]), need, self.rng,
                                   existing=state["centers"] if len(state["centers"]) else None)
        else:
            new = random_centers(rows, np.ones(rows.shape[0]), need, self.rng)
        zeros = np.zeros(need)
        return {"centers": np.concatenate([state["centers"], new]),
                "weights": np.concatenate([state["weights"], zeros]),
                "counts": np.concatenate([state["counts"], zeros]),
                "sums": np.concatenate([state["sums"], np.zeros_like(new)]),
                "sq_norms": np.concatenate([state["sq_norms"], zeros])}

    def _next_epoch(self, state: State) -> State:
        """Keep the centers and their weights; the per-epoch statistics start over."""
        out = dict(state)
        out["counts"] = np.zeros_like(state["counts"])
        out["sums"] = np.zeros_like(state["sums"])
        out["sq_norms"] = np.zeros_like(state["sq_norms"])
        return out

    def _share_centers(self, state: State) -> State:
        """Between epochs: every worker continues from the same ``num_centers`` centers (rank 0 reduces)."""
        collectives = self.env.collectives
        states = collectives.allgather_state({"centers": state["centers"], "weights": state["weights"]})
        shared = None
        if collectives.rank == 0:
            centers = np.concatenate([s["centers"] for s in states])
            weights = np.concatenate([s["weights"] for s in states])
            keep = weights > 0
            centers, weights = centers[keep], weights[keep]
            if len(centers) > self.num_centers:
                result = weighted_kmeans(centers, weights, self.num_centers, np.random.default_rng(_SEED),
                                         init="kmeans++", max_iter=self.hp["local_lloyd_max_iter"],
                                         tol=self.hp["local_lloyd_tol"], trials=1)
                labels, _ = closest_centers(centers, result.centers)
                weights = np.bincount(labels, weights=weights, minlength=self.num_centers)
                centers = result.centers
            shared = {"centers": centers, "weights": weights}
        shared = collectives.broadcast_state(shared)
        zeros = np.zeros(len(shared["centers"]))
        return {"centers": shared["centers"], "weights": shared["weights"], "counts": zeros,
                "sums": np.zeros_like(shared["centers"]), "sq_norms": zeros.copy()}

    # Driver ------------------------------------------------------------------------------------------
    def train(self) -> KMeansModel:
        train = self.env.require_channel("train")
        collectives = self.env.collectives
        epochs = self.epochs()
        state = self.init()
        for epoch in range(epochs):
            if epoch:
                state = self._share_centers(state) if collectives.world_size > 1 else self._next_epoch(state)
            state = self.stream(train.batches(self.batch_size()), state, epoch, epochs)
        merged = self.merged(state)
        self.check_summary(merged)
        result = None
        if collectives.rank == 0:
            model = self.finalize(merged)
            ssd, records = summary_ssd(merged, model.centroids)
            result = {"centroids": model.centroids, "train": np.array([ssd, records])}
        result = collectives.broadcast_state(result)
        model = KMeansModel(self.env.hyperparameters, self.feature_dim, result["centroids"])
        ssd, records = result["train"]
        if records > 0:
            self.env.reporter.metric("train:msd", float(ssd / records), epoch=epochs - 1)
        self.evaluate(model)
        return model

    def evaluate(self, model: KMeansModel) -> dict[str, float]:
        """Exact ``test:msd`` / ``test:ssd`` on the test channel, the work split among the workers."""
        test = self.env.channel("test")
        if test is None:
            return {}
        collectives = self.env.collectives
        totals = np.zeros(2)
        for batch in test.worker_batches(self.batch_size(), collectives.rank, collectives.world_size):
            model.check_features(batch)
            _, d2 = closest_centers(batch.features, model.centroids)
            totals += (d2.sum(), len(d2))
        ssd, records = collectives.allreduce(totals)
        if records == 0:
            return {}
        metrics = {"test:msd": float(ssd / records), "test:ssd": float(ssd)}
        for name in self.eval_metrics:
            self.env.reporter.metric(f"test:{name}", metrics[f"test:{name}"])
        return metrics


def group_means(state: State) -> tuple[np.ndarray, np.ndarray]:
    """The summary as weighted points: each center's mean of the records it took, weighted by their count."""
    counts = state["counts"]
    taken = counts > 0
    return state["sums"][taken] / counts[taken, None], counts[taken]


def summary_ssd(state: State, centers: np.ndarray) -> tuple[float, float]:
    """Sum of squared distances of the summarized records to ``centers``, each group at its closest one."""
    counts = state["counts"]
    taken = counts > 0
    if not taken.any():
        return 0.0, 0.0
    sums, sq_norms, counts = state["sums"][taken], state["sq_norms"][taken], counts[taken]
    labels, _ = closest_centers(sums / counts[:, None], centers)
    chosen = centers[labels]
    ssd = sq_norms - 2.0 * np.einsum("ij,ij->i", sums, chosen)
    ssd += counts * np.einsum("ij,ij->i", chosen, chosen)
    return float(np.maximum(ssd, 0.0).sum()), float(counts.sum())


__all__ = ["HYPERPARAMETERS", "KMeans", "num_centers"]
