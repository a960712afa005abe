"""The built-in algorithms by their SageMaker names.

Each built-in's module registers its :class:`~algorithms.builtin.base.Algorithm` class with
:func:`register` when imported; :func:`get` imports the modules listed in :data:`MODULES` on first use, so
looking up one algorithm does not need the others' dependencies loaded in advance.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Algorithm

MODULES = (  # under algorithms.builtin
    "kmeans", "pca", "linear_learner", "factorization_machines", "xgboost", "lda", "ntm", "randomcutforest", "knn",
    "seq2seq",
)

_ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make ``cls`` trainable and loadable under its ``name``."""
    _ALGORITHMS[cls.name] = cls
    return cls


def get(name: str) -> type[Algorithm]:
    _load_all()
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; built-ins: {', '.join(sorted(_ALGORITHMS))}") from None


def names() -> list[str]:
    _load_all()
    return sorted(_ALGORITHMS)


def _load_all() -> None:
    for module in MODULES:
        importlib.import_module(f"{__package__}.{module}")
