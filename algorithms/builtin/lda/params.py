"""LDA's hyperparameters: SageMaker's names, defaults and ranges."""

from __future__ import annotations

from ...hyperparameters import Hyperparameter, HyperparameterError, HyperparameterSpec

HYPERPARAMETERS = HyperparameterSpec([
    Hyperparameter("num_topics", int, required=True, low=1, doc="Number of topics to find."),
    Hyperparameter("feature_dim", int, low=1,
                   doc="Size of the vocabulary (the length of each word-count vector); required unless the train "
                       "channel's manifest records it."),
    Hyperparameter("mini_batch_size", int, low=1,
                   doc="The total number of documents in the train channel, as SageMaker asks for it; here it is "
                       "only checked against the documents counted (a mismatch is logged), since the moments are "
                       "summed over however many documents stream by."),
    Hyperparameter("alpha0", float, default=1.0, low=0.0, low_open=True,
                   doc="Initial guess for the sum of the Dirichlet prior's parameters (the topic-mixture "
                       "concentration); small values give documents few topics each."),
    Hyperparameter("max_restarts", int, default=10, low=1,
                   doc="Random restarts of the tensor decomposition (ALS); the best fit is kept."),
    Hyperparameter("max_iterations", int, default=1000, low=1,
                   doc="Most ALS iterations per restart."),
    Hyperparameter("tol", float, default=1e-8, low=0.0, low_open=True,
                   doc="ALS stops once the relative change of its fit is below this."),
    Hyperparameter("refinement_passes", int, default=1, low=0, high=100,
                   doc="Not SageMaker's: streamed passes of variational EM that refine the spectral topics (each "
                       "infers every document's mixture and re-estimates the topics from the expected word "
                       "counts). 0 keeps the spectral topics as they are, as SageMaker's LDA does; one pass "
                       "markedly improves held-out likelihood for about the cost of scoring the corpus once."),
])

TOPIC_SMOOTHING = 0.1  # pseudo-count of every word in every topic when refined topics are re-estimated


def check_topics(num_topics: int, feature_dim: int) -> None:
    if num_topics > feature_dim:
        raise HyperparameterError("num_topics", f"must be at most feature_dim ({feature_dim}), got {num_topics}")


__all__ = ["HYPERPARAMETERS", "TOPIC_SMOOTHING", "check_topics"]
