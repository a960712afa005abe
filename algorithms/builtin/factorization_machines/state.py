"""The FM training state: parameters, Adam moments and this epoch's tallies, as a dict of numpy arrays.

Layout (``d`` = feature_dim, ``k`` = num_factors):

- ``w0`` (1,), ``theta`` (d, 1 + k): column 0 of ``theta`` is the linear weights ``w``, the rest is ``V``;
- ``m_w0``, ``v_w0``, ``m_theta``, ``v_theta``: Adam's first and second moments; ``t`` (1,): Adam steps;
- ``rows`` (1,): records this worker trained on this epoch; ``counts`` (d,): records per feature that had
  it non-zero (dense rows count for every feature, since weight decay touches every row of ``theta``);
- ``stats``: this epoch's progressive training metric sums (see :mod:`.metrics`).

Workers start every epoch from the same parameters, train on their own shards, then merge: each row of
``theta`` (and of its moments) becomes the average of the workers' rows weighted by how many records
touched that feature on each worker, so a feature seen by one worker only keeps that worker's update
instead of half of it. ``w0`` is weighted by records. With one worker the merge is the identity.
"""

from __future__ import annotations

import numpy as np

from ...training.collectives import State
from .metrics import num_stats
from .params import FMConfig

SEED = 20171129  # SageMaker has no seed hyperparameter; every worker must draw the same initial model
_ROW_KEYS = ("theta", "m_theta", "v_theta")
_BIAS_KEYS = ("w0", "m_w0", "v_w0")


def initial_state(cfg: FMConfig) -> State:
    rng = np.random.default_rng(SEED)
    d, k = cfg.feature_dim, cfg.num_factors
    theta = np.empty((d, 1 + k), dtype=np.float32)
    theta[:, 0] = cfg.linear.initial(rng, (d,))
    theta[:, 1:] = cfg.factors.initial(rng, (d, k))
    state = {"w0": cfg.bias.initial(rng, (1,)), "theta": theta,
             "m_w0": np.zeros(1, np.float32), "v_w0": np.zeros(1, np.float32),
             "m_theta": np.zeros_like(theta), "v_theta": np.zeros_like(theta),
             "t": np.zeros(1, np.int64)}
    return reset_epoch(state, cfg)


def reset_epoch(state: State, cfg: FMConfig) -> State:
    """Zero the per-epoch tallies (after a merge, before the next epoch)."""
    out = dict(state)
    out["rows"] = np.zeros(1, np.float64)
    out["counts"] = np.zeros(cfg.feature_dim, np.float64)
    out["stats"] = np.zeros(num_stats(cfg.binary), np.float64)
    return out


def touched_rows(state: State) -> State:
    """What a worker sends for the merge: the scalars, and only the rows of θ its data touched this epoch.

    Rows no record touched are still the epoch's starting rows, the same on every worker, so they need
    not travel: for sparse high-dimensional data the exchange is O(touched rows), not O(feature_dim).
    """
    rows = np.flatnonzero(state["counts"] > 0)
    out = {key: state[key] for key in (*_BIAS_KEYS, "t", "rows", "stats")}
    out["touched"] = rows.astype(np.int64)
    out["touched_counts"] = state["counts"][rows]
    for key in _ROW_KEYS:
        out[key] = state[key][rows]
    return out


def merge_touched(local: State, parts: list[State]) -> State:
    """The merged state from every worker's :func:`touched_rows` (by rank) and this worker's own state."""
    out: State = {}
    rows = np.array([float(p["rows"][0]) for p in parts])
    total_rows = rows.sum()
    for key in _BIAS_KEYS:
        if total_rows > 0:
            acc = sum(r * p[key].astype(np.float64) for r, p in zip(rows, parts, strict=True))
            out[key] = (acc / total_rows).astype(np.float32)
        else:
            out[key] = local[key].copy()
    union = np.unique(np.concatenate([p["touched"] for p in parts]))
    positions = [np.searchsorted(union, p["touched"]) for p in parts]
    weight_sum = np.zeros(len(union))
    for pos, part in zip(positions, parts, strict=True):
        weight_sum[pos] += part["touched_counts"]
    for key in _ROW_KEYS:
        acc = np.zeros((len(union), local[key].shape[1]))
        for pos, part in zip(positions, parts, strict=True):
            acc[pos] += (part["touched_counts"] / weight_sum[pos])[:, None] * part[key]
        merged = local[key].copy()
        merged[union] = acc
        out[key] = merged
    counts = np.zeros(local["counts"].shape[0])
    counts[union] = weight_sum
    out["t"] = np.max([p["t"] for p in parts], axis=0)
    out["rows"] = np.array([total_rows])
    out["counts"] = counts
    out["stats"] = np.sum([p["stats"] for p in parts], axis=0)
    return out
