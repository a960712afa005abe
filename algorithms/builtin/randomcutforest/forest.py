"""Random cut trees (Guha et al., ICML 2016) as flat arrays: built all trees at once, scored all trees at once.

**Building.** Each tree is built from its own sample. A node holding more than one distinct point takes the
bounding box of its points, picks a dimension with probability proportional to the box's range along it and
a cut uniform along that range (one uniform draw over the summed ranges gives both), and sends points with
``x[dim] <= cut`` left, the others right. Leaves hold one point (with its multiplicity: duplicates share a
leaf). The trees grow level by level, every tree's frontier in one set of numpy operations (segment minima
and maxima by ``reduceat``, one stable sort to split the segments), so building costs a few dozen numpy calls
per level, not a Python call per node.

**Arrays** (every tree's nodes in one numbering, breadth first; ``roots[t]`` is tree ``t``'s root):
``feature``/``threshold`` (the cut; leaves have threshold +inf), ``children`` (n_nodes, 2) (a leaf points to
itself), ``parent`` (-1 at a root), ``mass`` (points under the node), ``lo``/``hi`` (n_nodes, d) the tight
bounding box of those points (float32, exact: the points are float32), ``range_sum`` (the box's summed
ranges), ``ratio_max`` (below).

**Scoring: expected collusive displacement.** Inserting a point ``x`` into a tree (the RRCF insertion) walks
down from the root; at node ``v`` a random cut on the box of ``v``'s points extended by ``x`` separates ``x``
from them with probability ``p_v = out_v / (range_v + out_v)``, ``out_v`` being the L1 distance from ``x`` to the
box (``sum_i max(lo_i, x_i) - min(hi_i, x_i)``); otherwise ``x`` follows ``v``'s cut. Separated at ``v_k``,
``x`` becomes a leaf whose sibling holds ``n_k`` points, and its collusive displacement (rrcf's ``codisp``: the
largest ratio, along the path to the root, of the sibling's size to the size of the subtree holding ``x``) is
``max(n_k, M_k)`` with ``M_k = max_{j <= k} (n_{j-1} - n_j) / (n_j + 1)``, which depends on ``v_k`` only
(``ratio_max``). The score of a tree is the expectation over the insertion's randomness,
``sum_k p_k prod_{j<k}(1 - p_j) max(n_k, M_k)``, exact and deterministic: rrcf's insert/codisp/forget
averaged over many draws, without the draws.

Boxes are nested along the path, so ``p_v = 0`` for a prefix of it (``x`` inside the box) and positive below.
Scoring therefore first descends to the leaf with one comparison per level (the cut's feature only), then
walks back up computing ``p_v`` until ``x`` is inside a box, where the recursion ``E = p c + (1 - p) E`` stops
changing. Inliers leave their boxes a level or two above their leaf, so the per-dimension work is a few nodes
per tree, not the whole path. Every tree and every row of a batch move together (pairs ``tree * rows + row``),
so a batch costs a few numpy calls per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_PAIRS = 1 << 16  # (row, tree) pairs scored together: the working arrays stay in cache
DENSE_LEVELS = 3  # boxes above the leaf compared on every feature before only the features still outside


@dataclass
class Forest:
    """The flat arrays of a forest (see the module docstring)."""

    roots: np.ndarray  # (trees,) int32
    feature: np.ndarray  # (n_nodes,) int32
    threshold: np.ndarray  # (n_nodes,) float64
    children: np.ndarray  # (n_nodes, 2) int32
    parent: np.ndarray  # (n_nodes,) int32
    mass: np.ndarray  # (n_nodes,) float64
    lo: np.ndarray  # (n_nodes, d) float32
    hi: np.ndarray  # (n_nodes, d) float32
    range_sum: np.ndarray  # (n_nodes,) float64
    ratio_max: np.ndarray  # (n_nodes,) float64

    ARRAYS = ("roots", "feature", "threshold", "children", "parent", "mass", "lo", "hi", "range_sum", "ratio_max")

    def __post_init__(self) -> None:
        n = len(self.feature)
        self.roots = np.ascontiguousarray(self.roots, np.int32)
        self.feature = np.ascontiguousarray(self.feature, np.int32)
        self.threshold = np.ascontiguousarray(self.threshold, np.float64)
        self.children = np.ascontiguousarray(self.children, np.int32).reshape(n, 2)
        self.parent = np.ascontiguousarray(self.parent, np.int32)
        self.mass = np.ascontiguousarray(self.mass, np.float64)
        self.lo = np.ascontiguousarray(self.lo, np.float32)
        self.hi = np.ascontiguousarray(self.hi, np.float32)
        self.range_sum = np.ascontiguousarray(self.range_sum, np.float64)
        self.ratio_max = np.ascontiguousarray(self.ratio_max, np.float64)
        for name in self.ARRAYS[1:]:
            if len(getattr(self, name)) != n:
                raise ValueError(f"random cut forest arrays disagree: {name} has {len(getattr(self, name))} "
                                 f"nodes, feature has {n}")
        if self.lo.shape != self.hi.shape or self.lo.ndim != 2:
            raise ValueError(f"random cut forest boxes must be (nodes, d), got {self.lo.shape} and {self.hi.shape}")
        # derived, for scoring: flat boxes, leaves, the codisp of a row cut off at each node
        self._lo_flat = self.lo.reshape(-1)
        self._hi_flat = self.hi.reshape(-1)
        self._lo_t = np.ascontiguousarray(self.lo.T)  # (d, n_nodes): one feature's bounds contiguous
        self._hi_t = np.ascontiguousarray(self.hi.T)
        self._flat_children = self.children.reshape(-1)
        self._is_leaf = self.children[:, 0] == np.arange(n)
        self._cut_off = np.maximum(self.mass, self.ratio_max)
        self._hash_weights = _hash_weights(self.dim)
        self._leaf_hash = _row_hash(self.lo, self._hash_weights)

    @property
    def num_trees(self) -> int:
        return len(self.roots)

    @property
    def num_nodes(self) -> int:
        return len(self.feature)

    @property
    def dim(self) -> int:
        return self.lo.shape[1]

    @property
    def tree_mass(self) -> float:
        """Points in each tree's sample (every tree has as many)."""
        return float(self.mass[self.roots[0]])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.ARRAYS}

    def tree_points(self, tree: int) -> np.ndarray:
        """The points tree ``tree`` was built from (each leaf's point repeated by its multiplicity)."""
        nodes = [int(self.roots[tree])]
        leaves = []
        while nodes:
            node = nodes.pop()
            if self._is_leaf[node]:
                leaves.append(node)
            else:
                nodes.extend(int(c) for c in self.children[node])
        leaves.sort()
        return np.repeat(self.lo[leaves], self.mass[leaves].astype(np.int64), axis=0)

    # scoring ------------------------------------------------------------------------------------------------
    def expected_codisp(self, x: np.ndarray) -> np.ndarray:
        """``(trees, rows)``: each tree's expected collusive displacement of each row of ``x`` (rows, d)."""
        x = np.ascontiguousarray(x, np.float32)
        rows = x.shape[0]
        out = np.empty((self.num_trees, rows))
        step = max(1, CHUNK_PAIRS // self.num_trees)
        for start in range(0, rows, step):
            part = x[start:start + step]
            out[:, start:start + len(part)] = self._chunk(part).reshape(self.num_trees, len(part))
        return out

    def summed_codisp(self, x: np.ndarray) -> np.ndarray:
        """``(rows,)``: the trees' expected collusive displacements of each row, summed tree by tree in tree order
        (what scores need), a chunk of rows at a time so memory stays bounded by the chunk."""
        x = np.ascontiguousarray(x, np.float32)
        total = np.zeros(x.shape[0])
        step = max(1, CHUNK_PAIRS // self.num_trees)
        for start in range(0, x.shape[0], step):
            part = x[start:start + step]
            per_tree = self._chunk(part).reshape(self.num_trees, len(part))
            sums = total[start:start + len(part)]
            for tree_values in per_tree:
                sums += tree_values
        return total

    def _chunk(self, x: np.ndarray) -> np.ndarray:
        rows, trees = x.shape[0], self.num_trees
        point = np.tile(np.arange(rows, dtype=np.int64), trees)  # pair p = tree * rows + row
        leaf = self._descend(x, point)
        return self._ascend(x, point, leaf)

    def _descend(self, x: np.ndarray, point: np.ndarray) -> np.ndarray:
        """The leaf each (row, tree) pair reaches by following the cuts (``x[feature] > threshold``: right)."""
        flat = x.reshape(-1).astype(np.float64)
        node = np.repeat(self.roots.astype(np.int64), x.shape[0])
        leaf = node.copy()
        active = np.flatnonzero(~self._is_leaf[node])
        node, base = node[active], point[active] * self.dim
        while len(active):
            node = self._flat_children[2 * node + (flat[base + self.feature[node]] > self.threshold[node])]
            done = self._is_leaf[node]
            if done.any():
                leaf[active[done]] = node[done]
                keep = ~done
                active, node, base = active[keep], node[keep], base[keep]
        return leaf

    def _ascend(self, x: np.ndarray, point: np.ndarray, leaf: np.ndarray) -> np.ndarray:
        """Expected codisp per pair: from the leaf up, ``E = p c + (1 - p) E`` while the row is outside the box.

        Going up, boxes only grow, so a feature the row lies within stays so. The first ``DENSE_LEVELS`` boxes
        above the leaf are compared on every feature (most features are outside such small boxes); after that
        only the features the row was still outside of are looked at again (``entries``), a handful per pair
        instead of ``d`` per level. Per-feature distances are float32 (exact: float32 differences, as the JVM
        scorer computes them), summed in float64 feature by feature in feature order."""
        d = self.dim
        # the leaf: a row equal to its point is a duplicate (never cut off); any other row is cut off there
        duplicate = self._row_hash(x)[point] == self._leaf_hash[leaf]
        maybe = np.flatnonzero(duplicate)
        if len(maybe):
            same = (x[point[maybe]] == self.lo[leaf[maybe]]).all(axis=1)
            duplicate[maybe[~same]] = False
        expected = np.where(duplicate, self.ratio_max[leaf], self._cut_off[leaf])
        pair = np.flatnonzero(~duplicate & (self.parent[leaf] >= 0))
        if not len(pair):
            return expected
        node = self.parent[leaf[pair]]
        values = np.ascontiguousarray(x.T)[:, point[pair]]  # (d, pairs): sums over axis 0 go feature by feature
        for _ in range(DENSE_LEVELS):
            gaps = np.maximum(self._lo_t[:, node], values)
            gaps -= np.minimum(self._hi_t[:, node], values)
            going = self._step(expected, pair, node, gaps.sum(axis=0, dtype=np.float64))
            if going is None:
                return expected
            pair, node, values, gaps = pair[going], self.parent[node[going]], values[:, going], gaps[:, going]
        entry_dim, entry_pair = np.nonzero(gaps > 0)
        order = np.argsort(entry_pair, kind="stable")  # pair-major, features in order within a pair
        entry_pair, entry_dim = entry_pair[order].astype(np.int32), entry_dim[order].astype(np.int32)
        entry_value = values[entry_dim, entry_pair]
        while True:
            at = (node.astype(np.int64) * d)[entry_pair] + entry_dim
            gaps = np.maximum(self._lo_flat[at], entry_value)
            gaps -= np.minimum(self._hi_flat[at], entry_value)
            going = self._step(expected, pair, node, np.bincount(entry_pair, weights=gaps, minlength=len(pair)))
            if going is None:
                return expected
            renumber = (np.cumsum(going) - 1).astype(np.int32)
            kept = going[entry_pair] & (gaps > 0)
            entry_pair, entry_dim, entry_value = renumber[entry_pair[kept]], entry_dim[kept], entry_value[kept]
            pair, node = pair[going], self.parent[node[going]]

    def _step(self, expected: np.ndarray, pair: np.ndarray, node: np.ndarray,
              outside: np.ndarray) -> np.ndarray | None:
        """One node per pair: fold its separation probability into ``expected``; which pairs go on up (None:
        none)."""
        p = outside / (self.range_sum[node] + outside)
        expected[pair] = p * self._cut_off[node] + (1.0 - p) * expected[pair]
        going = (p > 0) & (self.parent[node] >= 0)  # outside this box and not at the root: on to the parent
        return going if going.any() else None

    def _row_hash(self, x: np.ndarray) -> np.ndarray:
        return _row_hash(x, self._hash_weights)


def _hash_weights(dim: int) -> np.ndarray:
    return np.random.default_rng(0x5CF).uniform(0.5, 1.5, dim)


def _row_hash(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A weighted sum of each row's values, summed feature by feature, so equal rows get bit-equal sums: a
    cheap first test of equality."""
    out = np.zeros(x.shape[0])
    for i in range(x.shape[1]):
        out += x[:, i].astype(np.float64) * weights[i]
    return out


def build_forest(samples: np.ndarray, rng: np.random.Generator) -> Forest:
    """Random cut trees, one per sample: ``samples`` is (trees, points, d), float32."""
    samples = np.ascontiguousarray(samples, np.float32)
    trees, m, d = samples.shape
    if m < 1:
        raise ValueError("a random cut tree needs at least one point")
    points = samples.reshape(trees * m, d)
    capacity = trees * (2 * m - 1)
    feature = np.zeros(capacity, np.int32)
    threshold = np.full(capacity, np.inf)
    children = np.zeros((capacity, 2), np.int32)
    parent = np.full(capacity, -1, np.int32)
    mass = np.zeros(capacity)
    lo = np.zeros((capacity, d), np.float32)
    hi = np.zeros((capacity, d), np.float32)
    ratio_max = np.zeros(capacity)

    # the frontier: its nodes' ids, and their points as consecutive segments of `order`
    order = np.arange(trees * m)
    counts = np.full(trees, m, np.int64)
    ids = np.arange(trees, dtype=np.int64)
    mass[:trees] = m
    used = trees
    while len(ids):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        segment = np.repeat(np.arange(len(ids)), counts)
        values = points[order]
        box_lo = np.minimum.reduceat(values, starts, axis=0)
        box_hi = np.maximum.reduceat(values, starts, axis=0)
        lo[ids], hi[ids] = box_lo, box_hi
        ranges = box_hi.astype(np.float64) - box_lo.astype(np.float64)
        cumulative = np.cumsum(ranges, axis=1)
        total = cumulative[:, -1]
        split = (counts > 1) & (total > 0)
        leaves = ids[~split]
        children[leaves] = leaves[:, None]
        if not split.any():
            break
        # one uniform draw over the summed ranges picks the dimension (proportional to its range) and the cut
        s = np.flatnonzero(split)
        draw = np.minimum(rng.random(len(s)) * total[s], np.nextafter(total[s], 0))  # below the total
        dim = (cumulative[s] <= draw[:, None]).sum(axis=1)  # the first dimension whose cumulative range passes it
        below = np.take_along_axis(cumulative[s], dim[:, None], axis=1)[:, 0] - ranges[s, dim]
        low = box_lo[s, dim].astype(np.float64)
        high = box_hi[s, dim].astype(np.float64)
        cut = np.clip(low + (draw - below), low, np.nextafter(high, -np.inf))
        feature[ids[s]] = dim
        threshold[ids[s]] = cut
        # split each segment: points with x[dim] > cut go right; a stable sort keeps segments in node order
        splitting = split[segment]
        kept = order[splitting]
        seg = segment[splitting]
        local = np.full(len(ids), -1)
        local[s] = np.arange(len(s))
        rank = local[seg]
        right = points[kept, dim[rank]] > cut[rank]
        order = kept[np.argsort(2 * rank + right, kind="stable")]
        right_count = np.bincount(rank, weights=right, minlength=len(s)).astype(np.int64)
        left_count = counts[s] - right_count
        new_ids = used + np.arange(2 * len(s), dtype=np.int64)
        used += 2 * len(s)
        left_ids, right_ids = new_ids[0::2], new_ids[1::2]
        children[ids[s], 0], children[ids[s], 1] = left_ids, right_ids
        parent[left_ids], parent[right_ids] = ids[s], ids[s]
        mass[left_ids], mass[right_ids] = left_count, right_count
        parent_mass = counts[s].astype(np.float64)
        above = ratio_max[ids[s]]
        ratio_max[left_ids] = np.maximum(above, (parent_mass - left_count) / (left_count + 1.0))
        ratio_max[right_ids] = np.maximum(above, (parent_mass - right_count) / (right_count + 1.0))
        ids = new_ids
        counts = np.stack([left_count, right_count], axis=1).reshape(-1)
    n = used
    lo, hi = lo[:n], hi[:n]
    range_sum = np.zeros(n)
    for i in range(d):  # summed feature by feature, as the scorers do
        range_sum += hi[:, i].astype(np.float64) - lo[:, i].astype(np.float64)
    return Forest(np.arange(trees, dtype=np.int32), feature[:n], threshold[:n], children[:n], parent[:n], mass[:n],
                  lo, hi, range_sum, ratio_max[:n])


__all__ = ["Forest", "build_forest"]
