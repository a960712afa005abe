"""Hosting: inference endpoints with weighted production variants, autoscaling, and Spark transformers.

Objects as in SageMaker: a model (:func:`create_model`), an endpoint config of
:class:`ProductionVariant` s (:func:`create_endpoint_config`), an endpoint (:func:`create_endpoint`)
run by a detached supervisor: a router in front of each variant's model server instances. Those
names come from :mod:`spark_ml.endpoints`, the Spark-free control plane. The Spark side is
:class:`EndpointModel` (:mod:`spark_ml.hosting.transformer`) and :func:`deploy`; they are imported on
first use, so importing this package does not load pyspark.
"""

from .. import endpoints as _endpoints
from ..endpoints import *  # noqa: F403 - the control plane's public names are hosting's too

_LAZY = {  # these load pyspark, or numpy and pyarrow for it: import them on first use
    "EndpointModel": "transformer",
    "OutputSpec": "http_batching",
    "deploy": "deployment",
    "deploy_variants": "deployment",
    "CREATE_ON_CONSTRUCT": "deployment",
    "CREATE_ON_TRANSFORM": "deployment",
    "DO_NOT_CREATE": "deployment",
    "run_ab_demo": "demo",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_LAZY, *_endpoints.__all__]
