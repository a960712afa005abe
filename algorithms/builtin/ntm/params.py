"""NTM's hyperparameters: SageMaker's names, defaults and ranges."""

from __future__ import annotations

import math
from typing import Any

from ...hyperparameters import AUTO, Hyperparameter, HyperparameterError, HyperparameterSpec

ACTIVATIONS = ("sigmoid", "tanh", "relu")
OPTIMIZERS = ("adadelta", "sgd", "adam", "adagrad", "rmsprop")

HYPERPARAMETERS = HyperparameterSpec([
    Hyperparameter("num_topics", int, required=True, low=2, high=1000, doc="Number of topics (the latent size)."),
    Hyperparameter("feature_dim", int, low=1,
                   doc="Size of the vocabulary (SageMaker allows up to 1,000,000); required unless the train "
                       "channel's manifest records it."),
    Hyperparameter("encoder_layers", list, default=AUTO, auto=True,
                   doc="Sizes of the encoder's hidden layers, comma-separated; auto means "
                       "[3 × num_topics, 2 × num_topics]."),
    Hyperparameter("encoder_layers_activation", str, default="sigmoid", choices=ACTIVATIONS,
                   doc="Activation of the encoder's hidden layers."),
    Hyperparameter("epochs", int, default=50, low=1, high=100, doc="Most passes over the training data."),
    Hyperparameter("learning_rate", float, default=0.001, low=1e-6, high=1.0,
                   doc="Learning rate of the optimizer (adadelta, as MXNet's, does not use one)."),
    Hyperparameter("mini_batch_size", int, default=256, low=1, high=10000, doc="Documents per update."),
    Hyperparameter("optimizer", str, default="adadelta", choices=OPTIMIZERS, doc="The optimizer."),
    Hyperparameter("num_patience_epochs", int, default=3, low=1, high=10,
                   doc="Early stopping: epochs without an improvement of the loss larger than tolerance "
                       "(validation:total_loss with a validation channel, train:total_loss without)."),
    Hyperparameter("tolerance", float, default=0.001, low=1e-6, high=0.1,
                   doc="Early stopping: the relative improvement of the loss that counts as one."),
    Hyperparameter("batch_norm", bool, default=False, doc="Batch normalization after each encoder layer."),
    Hyperparameter("clip_gradient", str, default="Infinity",
                   doc="Gradients are clipped element-wise to [-clip_gradient, clip_gradient]; at least 1e-3, "
                       "Infinity (the default) for no clipping."),
    Hyperparameter("rescale_gradient", float, default=1.0, low=1e-3, high=1.0,
                   doc="Gradients are multiplied by this before clipping and the update."),
    Hyperparameter("weight_decay", float, default=0.0, low=0.0, high=1.0, doc="L2 weight decay."),
    Hyperparameter("sub_sample", float, default=1.0, low=0.0, high=1.0, low_open=True,
                   doc="Fraction of the training documents sampled for each epoch."),
])


def clip_value(raw: Any) -> float | None:
    """``clip_gradient`` as a number, None for no clipping (Infinity)."""
    problem = f"must be a number of at least 1e-3 or Infinity, got {raw!r}"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise HyperparameterError("clip_gradient", problem) from None
    if math.isnan(value) or value < 1e-3:
        raise HyperparameterError("clip_gradient", problem)
    return None if math.isinf(value) else value


def encoder_sizes(raw: Any, num_topics: int) -> list[int]:
    """The encoder's hidden layer sizes."""
    if raw in (None, AUTO):
        return [3 * num_topics, 2 * num_topics]
    problem = f"must be auto or a list of positive integers, got {raw!r}"
    try:
        sizes = [int(str(v).strip()) for v in raw]
    except ValueError:
        raise HyperparameterError("encoder_layers", problem) from None
    if not sizes or min(sizes) < 1:
        raise HyperparameterError("encoder_layers", problem)
    return sizes


__all__ = ["ACTIVATIONS", "HYPERPARAMETERS", "OPTIMIZERS", "clip_value", "encoder_sizes"]
