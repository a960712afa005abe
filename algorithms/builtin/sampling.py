"""Uniform samples of a streamed channel that merge exactly across workers (Random Cut Forest, k-NN).

A sample here is the ``size`` rows with the smallest random keys ("bottom-k" sampling): every row gets an
independent key uniform in (0, 1), one per lane (a lane is one independent sample: a tree of the forest, or
the one k-NN sample). Keeping the ``size`` smallest keys of a stream is reservoir sampling without replacement,
and it is what makes the merge exact: the rows with the smallest keys of the union of several workers' rows are
among the rows each worker kept, so merging the workers' samples (keeping the ``size`` smallest keys of their
union) gives the very sample one worker would have drawn from the whole channel with the same keys. That is a
uniform sample of the whole channel, whatever the number of workers and however the rows were split among them:
the weighted reservoir merge, with the weights carried by the keys instead of by per-worker row counts.

Once a lane holds ``size`` rows, a new row only enters if its key is below the lane's threshold ``tau`` (the
``size``-th smallest key so far), so keys are not drawn for every row: the rows whose key falls below ``tau``
form a Bernoulli(``tau``) process along the stream, their positions are drawn as geometric gaps and their keys
uniform in (0, ``tau``). That has exactly the distribution of drawing every key, at a cost proportional to the
rows that enter (about ``size * ln(rows / size)`` per lane) rather than to the rows streamed. Memory is bounded
by ``lanes * size`` rows (plus a buffer of half as many), never by the data.

The state is a dict of numpy arrays (the :class:`~algorithms.builtin.base.MergeablePass` contract):
``keys`` (lanes, capacity; inf in unused slots), ``rows`` (lanes, capacity, dim) float32, ``labels`` (lanes,
capacity) when kept, ``fill`` (slots used per lane), ``tau`` and ``seen`` (rows streamed).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..training.collectives import State


def empty_sample(lanes: int, size: int, dim: int, labels: bool = False) -> State:
    """The state of a sampler that has seen no row yet."""
    if lanes < 1 or size < 1:
        raise ValueError(f"a sample needs at least one lane and one row, got {lanes} lanes of {size}")
    capacity = size + max(size // 2, 256)
    state = {"keys": np.full((lanes, capacity), np.inf), "rows": np.zeros((lanes, capacity, dim), np.float32),
             "fill": np.zeros(lanes, np.int64), "tau": np.ones(lanes), "seen": np.zeros(1)}
    if labels:
        state["labels"] = np.zeros((lanes, capacity))
    return state


def add_rows(state: State, size: int, features, rng: np.random.Generator, labels: np.ndarray | None = None) -> State:
    """``state`` with a batch of rows (a dense array or CSR matrix, and labels when the sample keeps them) folded
    into every lane; ``rng`` must draw independently on every worker (seed it with the worker's rank)."""
    rows = features.shape[0]
    if rows == 0:
        return state
    if "labels" in state and labels is None:
        raise ValueError("this sample keeps labels, but the batch has none")
    lanes = state["keys"].shape[0]
    lane, position, key = _candidates(state["tau"], rows, rng)
    state["seen"] = state["seen"] + rows
    if not len(lane):
        return state
    counts = np.bincount(lane, minlength=lanes)
    if (state["fill"] + counts > state["keys"].shape[1]).any():
        state = compact(state, size)
        need = int((state["fill"] + counts).max())
        if need > state["keys"].shape[1]:
            state = _grow(state, need)
    # each candidate's slot: its lane's fill plus its rank among the lane's candidates (sorted by lane)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = state["fill"][lane] + (np.arange(len(lane)) - first[lane])
    chosen = features[position]
    state["rows"][lane, slot] = chosen.toarray() if sp.issparse(chosen) else chosen
    state["keys"][lane, slot] = key
    if "labels" in state:
        state["labels"][lane, slot] = np.asarray(labels, np.float64).reshape(rows, -1)[position, 0]
    state["fill"] = state["fill"] + counts
    full = state["fill"] >= size
    if full.any():  # keys above a lane's size-th smallest can never be among its size smallest
        kth = np.partition(state["keys"][full], size - 1, axis=1)[:, size - 1]
        state["tau"][full] = np.minimum(state["tau"][full], kth)
    return state


def _candidates(tau: np.ndarray, rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lane, row, key) of the rows whose key falls below their lane's threshold, sorted by lane then row:
    along the rows, a Bernoulli(tau) process, whose gaps are geometric with parameter tau."""
    lanes = len(tau)
    expected = rows * tau
    width = min(rows, int(np.ceil((expected + 6.0 * np.sqrt(expected + 1.0) + 8.0).max())))
    positions = np.cumsum(rng.geometric(tau[:, None], size=(lanes, width)), axis=1) - 1
    short = np.flatnonzero(positions[:, -1] < rows - 1)
    while len(short):  # a lane drew fewer gaps than it needed (rare): draw more for it
        extra = positions[short, -1:] + np.cumsum(rng.geometric(tau[short, None], size=(len(short), width)), axis=1)
        padded = np.full((lanes, width), rows, np.int64)
        padded[short] = extra
        positions = np.concatenate([positions, padded], axis=1)
        short = short[extra[:, -1] < rows - 1]
    lane, column = np.nonzero(positions < rows)
    return lane, positions[lane, column], rng.random(len(lane)) * tau[lane]


def compact(state: State, size: int) -> State:
    """The same sample holding only each lane's ``size`` smallest keys, ascending (inf-padded)."""
    keys, index = _smallest(state["keys"], size)
    lanes = np.arange(keys.shape[0])[:, None]
    out = {"keys": keys, "rows": state["rows"][lanes, index], "fill": np.isfinite(keys).sum(axis=1),
           "tau": np.array(state["tau"], copy=True), "seen": np.array(state["seen"], copy=True)}
    if "labels" in state:
        out["labels"] = state["labels"][lanes, index]
    return out


def _grow(state: State, capacity: int) -> State:
    lanes, current = state["keys"].shape
    extra = capacity - current
    state = dict(state)
    state["keys"] = np.concatenate([state["keys"], np.full((lanes, extra), np.inf)], axis=1)
    state["rows"] = np.concatenate([state["rows"], np.zeros((lanes, extra, state["rows"].shape[2]), np.float32)],
                                   axis=1)
    if "labels" in state:
        state["labels"] = np.concatenate([state["labels"], np.zeros((lanes, extra))], axis=1)
    return state


def _smallest(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per lane, the ``size`` smallest keys in ascending order and where they were."""
    take = min(size, keys.shape[1])
    if take < keys.shape[1]:
        index = np.argpartition(keys, take - 1, axis=1)[:, :take]
        index = np.take_along_axis(index, np.argsort(np.take_along_axis(keys, index, axis=1), axis=1), axis=1)
    else:
        index = np.argsort(keys, axis=1)
    return np.take_along_axis(keys, index, axis=1), index


def merge_samples(states: list[State], size: int) -> State:
    """The sample of the union of the states' rows: per lane, the ``size`` smallest keys of them all."""
    joined = {"keys": np.concatenate([s["keys"] for s in states], axis=1),
              "rows": np.concatenate([s["rows"] for s in states], axis=1),
              "tau": np.min([s["tau"] for s in states], axis=0),
              "seen": np.sum([s["seen"] for s in states], axis=0)}
    if "labels" in states[0]:
        joined["labels"] = np.concatenate([s["labels"] for s in states], axis=1)
    return compact(joined, size)


def sampled_rows(state: State) -> tuple[np.ndarray, np.ndarray | None]:
    """A compacted state's rows ``(lanes, count, dim)`` and labels ``(lanes, count)``: every lane holds
    ``count = min(size, rows seen)`` rows."""
    count = int(state["fill"].min())
    labels = state["labels"][:, :count] if "labels" in state else None
    return state["rows"][:, :count], labels


__all__ = ["add_rows", "compact", "empty_sample", "merge_samples", "sampled_rows"]
