"""Registry of the built-in algorithms, by their SageMaker names."""

from __future__ import annotations

from .base import Algorithm, Model, Output

_ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
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
    """Import every module of this package; each algorithm module registers its class on import."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")

__all__ = ["Algorithm", "Model", "Output", "get", "names", "register"]
