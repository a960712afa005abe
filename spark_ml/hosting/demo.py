"""The hosting half of ``make demo``: two models behind one endpoint as A/B variants, scored from Spark."""

from __future__ import annotations

import time


def run_ab_demo(
    df,
    models: dict[str, str],
    endpoint_name: str = "spark-ml-demo",
    features_col: str = "features",
    instance_count: int = 1,
    keep: bool = False,
    environment: dict[str, str] | None = None,
    print_fn=print,
) -> dict:
    """Deploy ``{variant: model artifact}`` 50/50 (equal weights), score ``df`` through the endpoint, print
    the traffic split and latencies from the endpoint's metrics; deletes the endpoint unless ``keep``.

    Returns ``{"rows", "seconds", "split": {variant: rows}, "metrics": {variant: VariantMetrics}}``.
    """
    from ..endpoints import api
    from ..endpoints.cli import format_metrics
    from ..endpoints.client import endpoint_metrics
    from .deployment import deploy_variants

    started = time.perf_counter()
    model = deploy_variants(
        endpoint_name,
        {v: (path, instance_count, 1.0) for v, path in models.items()},
        environment=environment,
        featuresCol=features_col,
        variantCol="variant",
        maxBatchRows=max(1, df.count() // 64 or 1),
    )
    print_fn(
        f"endpoint {endpoint_name} up with variants {', '.join(models)} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    try:
        started = time.perf_counter()
        scored = model.transform(df).cache()
        rows = scored.count()
        seconds = time.perf_counter() - started
        split = {r["variant"]: r["count"] for r in scored.groupBy("variant").count().collect()}
        scored.unpersist()
        print_fn(f"scored {rows} rows through the endpoint in {seconds:.2f} s; rows per variant: {split}")
        metrics = endpoint_metrics(endpoint_name)
        print_fn(format_metrics(metrics))
        return {"rows": rows, "seconds": seconds, "split": split, "metrics": metrics}
    finally:
        if not keep:
            api.delete_endpoint(endpoint_name)
