"""Weighted k-means on a small set of points: k-means++ seeding and Lloyd iterations (numpy).

This is the "local Lloyd" of SageMaker's k-means: it runs on the streamed summary (a few hundred or
thousand weighted centers), never on the data, so plain numpy in float64 is the right tool. Seeding
also picks the streaming centers from a first mini-batch, whose rows may be sparse (scipy CSR): they
stay sparse, only the chosen rows become dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

INIT_METHODS = ("random", "kmeans++")


def _sq_norms(points) -> np.ndarray:
    if sp.issparse(points):
        return np.asarray(points.multiply(points).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", points, points)


def _rows(points, index) -> np.ndarray:
    """Rows of ``points`` as a dense float64 array."""
    rows = points[index]
    return np.asarray(rows.toarray() if sp.issparse(rows) else rows, dtype=np.float64)


def squared_distances(points, centers: np.ndarray, point_norms: np.ndarray | None = None) -> np.ndarray:
    """``(n, k)`` squared Euclidean distances, clamped at zero; ``points`` dense or CSR."""
    d2 = np.asarray(points @ centers.T, dtype=np.float64)
    d2 *= -2.0
    d2 += (_sq_norms(points) if point_norms is None else point_norms)[:, None]
    d2 += _sq_norms(centers)[None, :]
    return np.maximum(d2, 0.0, out=d2)


def assign(points: np.ndarray, centers: np.ndarray,
           point_norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index of the closest center of each point and the squared distance to it."""
    d2 = squared_distances(points, centers, point_norms)
    labels = d2.argmin(axis=1)
    return labels, d2[np.arange(len(points)), labels]


def kmeans_plus_plus(points, weights: np.ndarray, count: int, rng: np.random.Generator,
                     existing: np.ndarray | None = None) -> np.ndarray:
    """``count`` new centers chosen by greedy weighted k-means++ (after ``existing`` ones, if any).

    Each step draws ``2 + log(k)`` candidates with probability proportional to weight times squared
    distance to the chosen centers and keeps the one that lowers the potential most. When every point
    already sits on a center, the remaining picks are drawn by weight alone.
    """
    n, d = points.shape
    out = np.empty((count, d))
    if count == 0 or n == 0:
        return out[:0]
    weights = np.asarray(weights, dtype=np.float64)
    trials = 2 + int(np.log(max(count + (0 if existing is None else len(existing)), 2)))
    start = 0
    if existing is None or len(existing) == 0:
        first = rng.choice(n, p=weights / weights.sum())
        out[0] = _rows(points, [first])[0]
        closest = squared_distances(points, out[:1])[:, 0]
        start = 1
    else:
        closest = squared_distances(points, existing).min(axis=1)
    for i in range(start, count):
        potential = weights * closest
        total = potential.sum()
        if not total > 0:
            out[i] = _rows(points, [rng.choice(n, p=weights / weights.sum())])[0]
            continue
        cumulative = np.cumsum(potential)
        candidates = np.minimum(np.searchsorted(cumulative, rng.random(trials) * cumulative[-1]), n - 1)
        candidate_rows = _rows(points, candidates)
        candidate_d2 = squared_distances(points, candidate_rows).T
        np.minimum(candidate_d2, closest[None, :], out=candidate_d2)
        best = int((candidate_d2 @ weights).argmin())
        out[i] = candidate_rows[best]
        closest = candidate_d2[best]
    return out


def random_centers(points, weights: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct points drawn with probability proportional to weight (repeats only if too few)."""
    positive = np.flatnonzero(weights > 0)
    p = weights[positive] / weights[positive].sum()
    take = min(count, len(positive))
    chosen = positive[rng.choice(len(positive), size=take, replace=False, p=p)]
    if take < count:
        chosen = np.concatenate([chosen, positive[rng.choice(len(positive), size=count - take, p=p)]])
    return _rows(points, chosen).copy()


def weighted_sums(points: np.ndarray, weights: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``(k, d)`` sums of ``weights * points`` grouped by label."""
    n = len(labels)
    indicator = sp.csr_matrix((weights, (labels, np.arange(n))), shape=(k, n))
    return np.asarray(indicator @ points)


@dataclass
class LloydResult:
    centers: np.ndarray
    cost: float  # weighted sum of squared distances of the points to their closest center
    iterations: int


def lloyd(points: np.ndarray, weights: np.ndarray, centers: np.ndarray, max_iter: int,
          tol: float) -> LloydResult:
    """Weighted Lloyd iterations from ``centers``; stops when the cost improves by at most ``tol`` (relative).

    A center that loses all its points moves to the point that currently costs the most, so the result
    always has ``len(centers)`` useful centers when there are that many distinct points.
    """
    centers = np.array(centers, dtype=np.float64)
    k = len(centers)
    previous = np.inf
    iterations = 0
    point_norms = _sq_norms(points)
    while iterations < max_iter:
        iterations += 1
        labels, d2 = assign(points, centers, point_norms)
        cost = float(weights @ d2)
        mass = np.bincount(labels, weights=weights, minlength=k)
        sums = weighted_sums(points, weights, labels, k)
        filled = mass > 0
        centers[filled] = sums[filled] / mass[filled, None]
        empty = np.flatnonzero(~filled)
        if len(empty):
            far = np.argsort(weights * d2)[::-1][: len(empty)]
            centers[empty[: len(far)]] = points[far]
        if not len(empty) and (cost == 0 or (np.isfinite(previous) and previous - cost <= tol * previous)):
            break
        previous = cost
    _, d2 = assign(points, centers, point_norms)
    return LloydResult(centers, float(weights @ d2), iterations)


def weighted_kmeans(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator,
                    init: str = "kmeans++", max_iter: int = 300, tol: float = 1e-4,
                    trials: int = 10) -> LloydResult:
    """Best of ``trials`` runs of seeding plus Lloyd, by weighted cost."""
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {', '.join(INIT_METHODS)}, got {init!r}")
    if trials < 1 or max_iter < 1:
        raise ValueError(f"trials and max_iter must be at least 1, got {trials} and {max_iter}")
    points = np.asarray(points, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if not (weights > 0).any():
        raise ValueError("weighted k-means needs at least one point of positive weight")
    results = []
    for _ in range(trials):
        if init == "kmeans++":
            seeds = kmeans_plus_plus(points, weights, k, rng)
        else:
            seeds = random_centers(points, weights, k, rng)
        results.append(lloyd(points, weights, seeds, max_iter, tol))
    return min(results, key=lambda r: r.cost)
