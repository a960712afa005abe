"""A worker's channel as XGBoost data: streamed through ``xgboost.DataIter`` into a ``QuantileDMatrix``.

Each pass over the iterator re-reads this worker's shard files a block at a time, so memory holds the
quantized matrix plus one block, never the raw channel. Every block's labels are checked for the
objective as they pass, and errors name the channel, the file and the record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import xgboost as xgb
from xgboost import collective

from ...batch import Batch
from ...channel import CSV, RECORDIO_PROTOBUF, base_content_type
from ...reader import iter_file_batches
from ...text_formats import LIBSVM_TYPES, csv_label_size, is_text, iter_text_file_batches, text_feature_dim
from ...training.env import ChannelInput

BLOCK_BYTES = 64 << 20  # bytes read (and about the dense feature bytes) per DataIter batch


class DataError(ValueError):
    """Bad training data: names the channel, file and record."""


@dataclass
class LabelRule:
    """What labels an objective accepts."""

    objective: str
    num_class: int | None = None

    def check(self, labels: np.ndarray, where) -> None:
        objective = self.objective
        if labels.ndim == 2 and not (objective == "survival:aft" and labels.shape[1] == 2):
            raise DataError(f"{where(0)}: labels are vectors of {labels.shape[1]} values; {objective} takes one "
                            "label per record" + (" (survival:aft also takes [lower, upper] pairs)"
                                                  if objective == "survival:aft" else ""))
        flat = labels if labels.ndim == 1 else labels.reshape(-1)
        if objective == "survival:aft":
            bad = np.isnan(flat) | (flat < 0)
            if bad.any():
                row = int(np.argmax(bad)) // (labels.shape[1] if labels.ndim == 2 else 1)
                raise DataError(f"{where(row)}: survival:aft labels (times) must be ≥ 0 (use inf for a missing "
                                "upper bound)")
            return
        finite = np.isfinite(flat)
        if not finite.all():
            i = int(np.argmax(~finite))
            raise DataError(f"{where(i)}: the label is {flat[i]} (labels must be finite numbers)")
        bad, rule = self._violations(flat)
        if bad is not None and bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where(i)}: label {flat[i]:g} is out of range for objective {objective}: {rule}")

    def _violations(self, y: np.ndarray):
        objective = self.objective
        if objective in ("binary:logistic", "binary:logitraw", "binary:hinge", "reg:logistic"):
            hint = "" if objective == "reg:logistic" else " (for more classes use multi:softprob with num_class)"
            return (y < 0) | (y > 1), f"labels must be in [0, 1]{hint}"
        if objective.startswith("multi:"):
            k = int(self.num_class or 0)
            return (y < 0) | (y >= k) | (y != np.floor(y)), \
                f"with num_class={k} labels must be the integers 0..{k - 1}"
        if objective in ("count:poisson", "reg:tweedie"):
            return y < 0, "labels must be ≥ 0"
        if objective == "reg:gamma":
            return y <= 0, "labels must be > 0"
        if objective == "reg:squaredlogerror":
            return y <= -1, "labels must be > -1"
        if objective.startswith("rank:"):
            return y < 0, "relevance degrees must be ≥ 0"
        return None, ""


class ChannelData(xgb.DataIter):
    """One worker's part of a channel as XGBoost batches (re-read on every pass)."""

    def __init__(self, channel: ChannelInput, feature_dim: int, rule: LabelRule | None, csv_weights: bool,
                 needs_qid: bool):
        super().__init__(release_data=True)
        self.channel = channel
        self.feature_dim = feature_dim
        self.rule = rule
        self.csv_weights = csv_weights and base_content_type(channel.content_type) == CSV
        self.needs_qid = needs_qid
        self.rows = 0
        self.classes_seen = 0  # largest label + 1, for classification
        self._batches: Iterator[Batch] | None = None
        self._passes = 0
        self._last_qid: int | None = None

    # xgboost.DataIter -----------------------------------------------------------------------------------
    def reset(self) -> None:
        self._batches = None

    def next(self, input_data) -> bool:
        if self._batches is None:
            self._passes += 1
            self.rows = 0
            self._last_qid = None
            self._batches = self.batches()
        batch = next(self._batches, None)
        if batch is None:
            return False
        kwargs = {"data": batch.features, "label": batch.labels}
        if batch.labels is not None and batch.labels.ndim == 2:  # survival:aft bounds
            kwargs["label"] = None
            kwargs["label_lower_bound"] = batch.labels[:, 0]
            kwargs["label_upper_bound"] = batch.labels[:, 1]
        elif self.rule is not None and self.rule.objective == "survival:aft":
            kwargs["label_lower_bound"] = kwargs["label_upper_bound"] = batch.labels
            kwargs["label"] = None
        if batch.weights is not None:
            kwargs["weight"] = batch.weights
        if self.needs_qid:
            kwargs["qid"] = batch.qid
        input_data(**kwargs)
        return True

    # the stream -----------------------------------------------------------------------------------------
    def batches(self) -> Iterator[Batch]:
        """Checked batches of this worker's files; one empty batch when it has no rows (it still takes part)."""
        stream = self._checked()
        if self.needs_qid:
            stream = _whole_queries(stream)
        empty = True
        for batch in stream:
            self.rows += len(batch)
            empty = False
            yield batch
        if empty:
            yield self._empty()

    def _checked(self) -> Iterator[Batch]:
        for path in self.channel.files:
            record = 0
            for batch in self._file_batches(path):
                if not len(batch):
                    continue
                batch = self._prepared(batch, path, record)
                record += len(batch)
                yield batch

    def _file_batches(self, path: str) -> Iterator[Batch]:
        ctype = base_content_type(self.channel.content_type)
        dense_width = self.feature_dim + (1 if self.csv_weights else 0)
        rows = max(1024, BLOCK_BYTES // (4 * max(1, dense_width)))
        if ctype == RECORDIO_PROTOBUF:
            return iter_file_batches(path, rows, feature_dim=self.feature_dim, chunk_bytes=BLOCK_BYTES)
        if is_text(ctype):
            width = dense_width if ctype == CSV else self.feature_dim
            return iter_text_file_batches(path, self.channel.content_type, width, block_bytes=BLOCK_BYTES)
        raise DataError(f"channel {self.channel.name}: XGBoost reads application/x-recordio-protobuf, text/csv "
                        f"and text/libsvm, not {self.channel.content_type}")

    def _prepared(self, batch: Batch, path: str, first: int) -> Batch:
        def where(i: int) -> str:
            return f"channel {self.channel.name}, {path}, record {first + i}"

        if self.csv_weights:
            weights = np.asarray(batch.features[:, 0], np.float32)
            batch = Batch(np.ascontiguousarray(batch.features[:, 1:]), batch.labels, weights, batch.qid)
        if batch.feature_dim != self.feature_dim:
            if sp.issparse(batch.features) and batch.feature_dim < self.feature_dim:
                batch = Batch(sp.csr_matrix(batch.features, shape=(len(batch), self.feature_dim)), batch.labels,
                              batch.weights, batch.qid)
            else:
                raise DataError(f"{where(0)}: records have {batch.feature_dim} features, but the channel has "
                                f"{self.feature_dim}")
        if self.rule is not None:
            if batch.labels is None:
                raise DataError(f"{where(0)}: records have no label; XGBoost trains on labeled data (CSV: the "
                                "label is the first column; libsvm: the first token)")
            self.rule.check(np.asarray(batch.labels), where)
            if self.rule.objective.startswith(("binary:", "multi:")):
                self.classes_seen = max(self.classes_seen, int(np.max(batch.labels)) + 1)
        if batch.weights is not None:
            bad = ~(np.asarray(batch.weights) >= 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"{where(i)}: instance weight {batch.weights[i]} must be a number ≥ 0")
        if self.needs_qid:
            if batch.qid is None:
                raise DataError(f"{where(0)}: {self.rule.objective if self.rule else 'ranking'} needs query ids: "
                                "write the channel as text/libsvm with qid:<id> on every row")
            qid = np.asarray(batch.qid)
            steps = np.diff(qid if self._last_qid is None else np.concatenate([[self._last_qid], qid]))
            if (steps < 0).any():
                i = int(np.argmax(steps < 0)) - (0 if self._last_qid is None else 1) + 1
                raise DataError(f"{where(max(i, 0))}: query ids must not decrease within a worker's data (rows of "
                                "one query together, queries sorted)")
            self._last_qid = int(qid[-1])
        features = batch.features
        if not sp.issparse(features) and features.dtype not in (np.float32, np.float64):
            batch = Batch(features.astype(np.float32), batch.labels, batch.weights, batch.qid)
        return batch

    def _empty(self) -> Batch:
        labels = np.zeros(0, np.float32)
        qid = np.zeros(0, np.int64) if self.needs_qid else None
        return Batch(np.zeros((0, self.feature_dim), np.float32), labels, None, qid)


def _whole_queries(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Batches cut at query boundaries: XGBoost takes a query split across two batches for two queries."""
    held: Batch | None = None
    for batch in batches:
        if held is not None:
            batch = Batch.concat([held, batch])
        last = batch.qid[-1]
        cut = len(batch) - int(np.argmax(batch.qid[::-1] != last)) if (batch.qid != last).any() else 0
        if cut:
            yield batch.slice(0, cut)
        held = batch.slice(cut, len(batch))
    if held is not None and len(held):
        yield held


def local_feature_dim(channel: ChannelInput, csv_weights: bool) -> int | None:
    """This worker's feature count: the manifest's, else read from its text files."""
    if channel.feature_dim is not None:
        return int(channel.feature_dim)
    ctype = base_content_type(channel.content_type)
    if is_text(ctype) and channel.files:
        dim = text_feature_dim(channel.files, channel.content_type)
        if ctype == CSV:
            if csv_label_size(channel.content_type) != 1:
                raise DataError(f"channel {channel.name}: XGBoost needs the label in the first CSV column "
                                "(label_size=1)")
            if csv_weights:
                dim -= 1
        return dim
    return None


def agreed_feature_dim(channel: ChannelInput, csv_weights: bool) -> int:
    """The channel's feature count, agreed by every worker through XGBoost's collective (libsvm: the largest
    index anyone saw; recordIO-protobuf without a manifest: the first record's)."""
    mine = local_feature_dim(channel, csv_weights)
    if mine is None:
        mine = _first_record_dim(channel)
    known = mine if mine is not None else -1
    both = collective.allreduce(np.array([known, -known if known >= 0 else -(2 ** 62)], np.int64),
                                collective.Op.MAX)
    largest, smallest = int(both[0]), -int(both[1])
    if largest < 0:
        raise DataError(f"channel {channel.name} holds no records")
    mixed = known >= 0 and smallest != largest
    if mixed and base_content_type(channel.content_type) not in LIBSVM_TYPES:
        raise DataError(f"channel {channel.name}: workers' files hold different feature counts "
                        f"({smallest} and {largest})")
    return largest


def _first_record_dim(channel: ChannelInput) -> int | None:
    for path in channel.files:
        for batch in iter_file_batches(path, 1):
            return batch.feature_dim
    return None
