"""LDA (SageMaker ``lda``): spectral topic recovery from two streamed passes merged across workers, then
(``refinement_passes``, not SageMaker's) passes of variational EM that refine the topics.

See :mod:`.spectral` for the method. The training loop is :class:`~algorithms.builtin.base.MergeablePass`'s
pieces twice: pass 1 (the range finder of the pair moment) and pass 2 (moments in its basis), each streamed over
this worker's shards in blocks and summed across workers; rank 0 recovers the topics and every worker gets
its model. ``test:pwll``, the test channel's per-word log-likelihood, is split among the workers.
"""

from __future__ import annotations

import numpy as np

from ...batch import Batch
from ...training.collectives import State
from ..bag_of_words import Documents, iter_documents
from ..base import MergeablePass
from ..registry import register
from ..topic_words import read_vocabulary
from .inference import infer
from .kernels import NumpyLDAKernels, lda_kernels
from .model import LDAModel
from .params import HYPERPARAMETERS, TOPIC_SMOOTHING, check_topics
from .spectral import (
    extended_topics,
    projected_state,
    projected_update,
    range_basis,
    range_state,
    range_update,
    recover,
    select,
    sketch_width,
)
from .tensor import orthogonal_als

BLOCK_ROWS = 4096  # documents per streamed block (the result does not depend on it: moments are sums)
_SEED = 0x1DA


@register
class LDA(MergeablePass):
    name = "lda"
    hyperparameters = HYPERPARAMETERS
    model_class = LDAModel
    channels = ("train", "test", "auxiliary")

    def __init__(self, env):
        super().__init__(env)
        self.k = int(self.hp["num_topics"])
        check_topics(self.k, self.feature_dim)
        self.components = extended_topics(self.k, self.feature_dim)
        self.width = sketch_width(self.k, self.feature_dim)
        self.alpha0 = float(self.hp["alpha0"])
        self.ops = lda_kernels(env.backend)
        self.phase = 1
        self._basis = None  # the device copy of Ω (pass 1) or Q (pass 2)

    @classmethod
    def validate(cls, hyperparameters):
        values = super().validate(hyperparameters)
        if values.get("feature_dim") is not None:
            check_topics(values["num_topics"], values["feature_dim"])
        return values

    # The streaming contract -------------------------------------------------------------------------
    def init(self) -> State:
        state = range_state if self.phase == 1 else projected_state
        return {**state(self.feature_dim, self.width), "empty": np.zeros(1)}

    def update(self, state: State, batch: Documents | Batch) -> State:
        docs = batch if isinstance(batch, Documents) else _documents(batch)
        ops = self.ops
        state = {key: ops.asarray(value, dtype=np.float64) for key, value in state.items()}
        empty = state.pop("empty") + docs.empty
        if docs.counts.shape[0]:
            step = range_update if self.phase == 1 else projected_update
            state = step(ops, state, docs, self._basis)
        return {**state, "empty": empty}

    def merge(self, states: list[State]) -> State:
        return {key: np.sum([s[key] for s in states], axis=0) for key in states[0]}

    def finalize(self, state: State) -> LDAModel:
        raise RuntimeError("LDA is finalized from both passes' states (train())")

    # Driver ------------------------------------------------------------------------------------------
    def train(self) -> LDAModel:
        collectives, reporter = self.env.collectives, self.env.reporter
        vocabulary = read_vocabulary(self.env.channel("auxiliary"), self.feature_dim)
        omega = np.random.default_rng(_SEED).standard_normal((self.feature_dim, self.width))
        first = self._pass(1, omega)
        documents = float(first["docs"][0])
        empty = float(first["empty"][0])
        if empty:
            reporter.log(f"skipped {empty:.0f} empty document(s) of the train channel (no words)")
        reporter.metric("train:empty_documents", empty)
        if documents < 1 or first["docs"][2] < 1:
            raise ValueError(f"the train channel holds {documents:.0f} document(s) with words and "
                             f"{float(first['docs'][2]):.0f} with three or more; LDA needs documents of at least "
                             "three words")
        declared = self.hp.get("mini_batch_size")
        if declared is not None and int(declared) != int(documents + empty):
            reporter.log(f"mini_batch_size says {int(declared)} documents; the train channel holds "
                         f"{int(documents + empty)} (the moments use all of them)")
        basis = collectives.broadcast(range_basis(first, omega, self.alpha0) if collectives.rank == 0 else None)
        second = self._pass(2, basis)
        if second["docs"][0] != first["docs"][0]:
            raise ValueError(f"the train channel held {first['docs'][0]:.0f} documents in the first pass and "
                             f"{second['docs'][0]:.0f} in the second; it must not change during training")
        arrays = None
        if collectives.rank == 0:
            arrays = self._recover(first, second, basis)
        arrays = collectives.broadcast_state(arrays)
        model = LDAModel(self.env.hyperparameters, self.feature_dim, arrays["alpha"], arrays["topics"],
                         vocabulary, self.env.backend)
        reporter.metric("train:tensor_residual", float(arrays["residual"][0]))
        for refinement in range(int(self.hp["refinement_passes"])):
            model = self._refine(model, refinement)
        if vocabulary is not None:
            for i, words in enumerate(model.top_words(10)):
                reporter.log(f"topic {i} (alpha {model.alpha[i]:.4g}): {' '.join(words)}")
        self.evaluate(model)
        return model

    def _pass(self, phase: int, basis: np.ndarray) -> State:
        self.phase = phase
        self._basis = self.ops.asarray(basis, dtype=np.float64)
        train = self.env.require_channel("train")
        state = self.stream(iter_documents(train, BLOCK_ROWS), self.init(), epoch=phase - 1, epochs=2)
        return self.merged({key: self.ops.to_numpy(value) for key, value in state.items()})

    def _refine(self, model: LDAModel, refinement: int) -> LDAModel:
        """One pass of variational EM: every document's mixture under the current topics (E-step), the topics
        re-estimated from the expected word counts summed over all workers' documents (M-step)."""
        topics_t, alpha = model._on_device()
        stats = self.ops.zeros((self.feature_dim, len(model.alpha)))
        train = self.env.require_channel("train")
        seen = 0
        for docs in iter_documents(train, BLOCK_ROWS):
            if docs.counts.shape[0]:
                stats = stats + infer(self.ops, docs.counts, topics_t, alpha, with_stats=True)[2]
            seen += len(docs)
            self.env.reporter.progress(seen, 2 + refinement, train.num_records, None)
        stats = self.env.collectives.allreduce(self.ops.to_numpy(stats))
        topics = model.topics * stats.T + TOPIC_SMOOTHING
        topics /= topics.sum(axis=1, keepdims=True)
        return LDAModel(model.hyperparameters, self.feature_dim, model.alpha, topics, model.vocabulary,
                        self.env.backend)

    def _recover(self, first: State, second: State, basis: np.ndarray) -> State:
        rng = np.random.default_rng(_SEED + 1)
        hp = self.hp

        def decompose(tensor):
            result = orthogonal_als(tensor, int(hp["max_restarts"]), int(hp["max_iterations"]), float(hp["tol"]),
                                    rng, keep=self.k)
            self.env.reporter.log(f"tensor decomposition: {self.components} components, residual "
                                  f"{result.residual:.4g} after {result.iterations} ALS iterations of the best "
                                  f"of {hp['max_restarts']} starts")
            return result.weights, result.factors, result.residual

        recovered = recover(NumpyLDAKernels(), first, second, basis, self.alpha0, self.components, decompose)
        alpha, topics = select(recovered, self.k)
        return {"alpha": alpha, "topics": topics, "residual": np.array([recovered.fit])}

    def evaluate(self, model: LDAModel) -> dict[str, float]:
        """``test:pwll``: the mean log-likelihood per word of the test documents, each word under its document's
        inferred mixture (the work split among the workers)."""
        test = self.env.channel("test")
        if test is None:
            return {}
        collectives = self.env.collectives
        totals = np.zeros(3)
        part = test.worker_batches(BLOCK_ROWS, collectives.rank, collectives.world_size)
        for batch in part:
            model.check_features(batch)
            docs = _documents(batch, "test channel, row")
            if docs.counts.shape[0]:
                loglik, words = model.log_likelihood(docs.counts)
                totals += (loglik, words, 0.0)
            totals[2] += docs.empty
        loglik, words, _ = collectives.allreduce(totals)
        if words == 0:
            return {}
        pwll = float(loglik / words)
        self.env.reporter.metric("test:pwll", pwll)
        return {"test:pwll": pwll}


def _documents(batch: Batch, place: str = "row") -> Documents:
    from ..bag_of_words import documents

    return documents(batch.features, place)


__all__ = ["LDA"]
