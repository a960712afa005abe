"""Hosting: inference endpoints with weighted production variants, autoscaling, and Spark transformers.

Objects as in SageMaker: a model (:func:`create_model`), an endpoint config of
:class:`ProductionVariant` s (:func:`create_endpoint_config`), an endpoint (:func:`create_endpoint`)
run by a detached supervisor: a router in front of each variant's model server instances. The Spark
side is :class:`EndpointModel` (import it from ``spark_ml.hosting.transformer``; it needs pyspark) and
:func:`deploy`. Nothing imported here loads pyspark.
"""

from .api import (
    EndpointDescription,
    EndpointError,
    VariantDescription,
    create_endpoint,
    create_endpoint_config,
    create_model,
    delete_endpoint,
    delete_endpoint_config,
    delete_model,
    delete_scaling_policy,
    describe_endpoint,
    describe_endpoint_config,
    describe_model,
    endpoint_token,
    list_endpoint_configs,
    list_endpoints,
    list_models,
    put_scaling_policy,
    start_endpoint,
    stop_endpoint,
    update_endpoint,
    update_endpoint_weights_and_capacities,
    wait_for_endpoint,
)
from .client import InvocationError, endpoint_metadata, endpoint_metrics, invoke_endpoint
from .registry import EndpointConfig, HostedModel, ProductionVariant, ScalingPolicy

_LAZY = {  # these load pyspark; import them on first use
    "EndpointModel": "transformer",
    "OutputSpec": "transformer",
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


__all__ = [
    "CREATE_ON_CONSTRUCT",
    "CREATE_ON_TRANSFORM",
    "DO_NOT_CREATE",
    "EndpointModel",
    "OutputSpec",
    "deploy",
    "deploy_variants",
    "run_ab_demo",
    "EndpointConfig",
    "EndpointDescription",
    "EndpointError",
    "HostedModel",
    "InvocationError",
    "ProductionVariant",
    "ScalingPolicy",
    "VariantDescription",
    "create_endpoint",
    "create_endpoint_config",
    "create_model",
    "delete_endpoint",
    "delete_endpoint_config",
    "delete_model",
    "delete_scaling_policy",
    "describe_endpoint",
    "describe_endpoint_config",
    "describe_model",
    "endpoint_metadata",
    "endpoint_metrics",
    "endpoint_token",
    "invoke_endpoint",
    "list_endpoint_configs",
    "list_endpoints",
    "list_models",
    "put_scaling_policy",
    "start_endpoint",
    "stop_endpoint",
    "update_endpoint",
    "update_endpoint_weights_and_capacities",
    "wait_for_endpoint",
]
