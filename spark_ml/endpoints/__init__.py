"""The endpoint control plane: models, endpoint configs, endpoints, and the processes that serve them.

Everything here runs without Spark: the API and the ``spark-ml endpoints`` CLI write the desired state
into the registry; a detached supervisor per endpoint (``python -m spark_ml.endpoints.supervisor``)
starts and watches its router workers (``python -m spark_ml.endpoints.router``) and model server
instances (``python -m algorithms.serving``). None of them may load pyspark or py4j (a test guards
this), so an endpoint starts fast and runs where Spark is not installed. The Spark side (the
``EndpointModel`` transformer, ``deploy``) is :mod:`spark_ml.hosting`, which re-exports these names.
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

__all__ = [
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
