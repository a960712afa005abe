"""``deploy``: one call from a trained model to an endpoint and an :class:`EndpointModel` scoring through it.

Creation policies as in sagemaker-spark: ``CREATE_ON_CONSTRUCT`` (create now and wait),
``CREATE_ON_TRANSFORM`` (create on the first ``transform``), ``DO_NOT_CREATE`` (the endpoint must
exist). Deploying to an endpoint that already exists adds the model as a new variant (or replaces
the variant of the same name) through ``update_endpoint``, so two ``deploy`` calls make an A/B test.
A Spark Model class can implement ``deploy`` as ``return hosting.deploy(self, endpointName, ...)``:
any object with a ``model_location`` / ``modelLocation`` / ``artifact_location`` attribute (or
``getModelLocation()``), a saved artifact path, or an ``algorithms`` Model works.
"""

from __future__ import annotations

import os
import uuid

from ..endpoints import api
from ..endpoints.registry import NotFound, ProductionVariant

CREATE_ON_CONSTRUCT = "CREATE_ON_CONSTRUCT"
CREATE_ON_TRANSFORM = "CREATE_ON_TRANSFORM"
DO_NOT_CREATE = "DO_NOT_CREATE"
POLICIES = (CREATE_ON_CONSTRUCT, CREATE_ON_TRANSFORM, DO_NOT_CREATE)


def model_location(model) -> str:
    """Where a model's artifact is: a path/URI as is; a Model object saved into the model store first."""
    if isinstance(model, str | os.PathLike):
        return os.fspath(model)
    for attr in ("model_location", "modelLocation", "artifact_location"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    getter = getattr(model, "getModelLocation", None)
    if callable(getter):
        return getter()
    from algorithms.builtin.base import Model

    if isinstance(model, Model):
        from algorithms.builtin import save_model

        from ..home import local_model_store

        path = os.path.join(local_model_store(), f"{model.algorithm}-{uuid.uuid4().hex[:12]}")
        save_model(model, path)
        return path
    raise TypeError(f"cannot find the artifact of a {type(model).__name__}; pass its path or a Model")


def deploy(
    model,
    endpoint_name: str,
    instance_count: int = 1,
    variant_name: str = "AllTraffic",
    initial_weight: float = 1.0,
    *,
    creation_policy: str = CREATE_ON_CONSTRUCT,
    model_name: str | None = None,
    environment: dict[str, str] | None = None,
    features_col: str = "features",
    wait_timeout: float = 300.0,
    endpoint_options: dict | None = None,
    **transformer_params,
):
    """Host ``model`` as variant ``variant_name`` of ``endpoint_name``; returns an :class:`EndpointModel`.

    ``endpoint_options`` go to :func:`create_endpoint` (host, port, auth_token, router_workers, …);
    other keyword arguments are EndpointModel Params (serializer, concurrency, errorPolicy, …).
    """
    from .transformer import EndpointModel

    if creation_policy not in POLICIES:
        raise ValueError(f"creation_policy must be one of {POLICIES}, got {creation_policy!r}")
    transformer = EndpointModel(endpoint=endpoint_name, featuresCol=features_col, **transformer_params)
    token = (endpoint_options or {}).get("auth_token")
    if isinstance(token, str):
        transformer.setAuthToken(token)
    if creation_policy == DO_NOT_CREATE:
        api.describe_endpoint(endpoint_name)  # NotFound names it
        return transformer
    location = model_location(model) if creation_policy == CREATE_ON_CONSTRUCT else None

    def create() -> None:
        where = location or model_location(model)
        ensure_variant(
            where,
            endpoint_name,
            variant_name,
            instance_count,
            initial_weight,
            model_name=model_name,
            environment=environment,
            wait_timeout=wait_timeout,
            endpoint_options=endpoint_options,
        )
        if token is True:
            transformer.setAuthToken(api.endpoint_token(endpoint_name))

    if creation_policy == CREATE_ON_CONSTRUCT:
        create()
    else:
        transformer.setBeforeTransform(create)
    return transformer


def ensure_variant(
    location: str,
    endpoint_name: str,
    variant_name: str = "AllTraffic",
    instance_count: int = 1,
    initial_weight: float = 1.0,
    *,
    model_name: str | None = None,
    environment: dict[str, str] | None = None,
    wait_timeout: float = 300.0,
    endpoint_options: dict | None = None,
) -> api.EndpointDescription:
    """Create the endpoint with this variant, or move an existing endpoint to a config that has it."""
    suffix = uuid.uuid4().hex[:8]
    model_name = model_name or f"{endpoint_name}-{variant_name}-{suffix}".replace("_", "-")[:63]
    api.create_model(model_name, location, environment=environment)
    variant = ProductionVariant(variant_name, model_name, int(instance_count), float(initial_weight))
    config_name = f"{endpoint_name}-{suffix}"[:63]
    try:
        current = api.describe_endpoint(endpoint_name)
    except NotFound:
        api.create_endpoint_config(config_name, [variant])
        return api.create_endpoint(
            endpoint_name, config_name, wait_timeout=wait_timeout, **(endpoint_options or {})
        )
    variants = [
        ProductionVariant(
            v.variant_name,
            v.model,
            max(v.current_instance_count, v.desired_instance_count, 1),
            v.desired_weight,
        )
        for v in current.variants
        if v.variant_name != variant_name
    ]
    api.create_endpoint_config(config_name, variants + [variant])
    return api.update_endpoint(endpoint_name, config_name, wait_timeout=wait_timeout)


def deploy_variants(
    endpoint_name: str,
    variants: dict[str, tuple],
    *,
    environment: dict[str, str] | None = None,
    wait_timeout: float = 300.0,
    endpoint_options: dict | None = None,
    **transformer_params,
):
    """Create an endpoint with several variants at once: ``{variant: (model, instance_count, weight)}``.

    The A/B form of :func:`deploy` (one start instead of one update per added variant).
    """
    from .transformer import EndpointModel

    suffix = uuid.uuid4().hex[:8]
    production = []
    for variant, (model, count, weight) in variants.items():
        name = f"{endpoint_name}-{variant}-{suffix}".replace("_", "-")[:63]
        api.create_model(name, model_location(model), environment=environment)
        production.append(ProductionVariant(variant, name, int(count), float(weight)))
    config_name = f"{endpoint_name}-{suffix}"[:63]
    api.create_endpoint_config(config_name, production)
    api.create_endpoint(endpoint_name, config_name, wait_timeout=wait_timeout, **(endpoint_options or {}))
    transformer = EndpointModel(endpoint=endpoint_name, **transformer_params)
    token = api.endpoint_token(endpoint_name)
    if token:
        transformer.setAuthToken(token)
    return transformer
