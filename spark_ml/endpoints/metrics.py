"""Endpoint metrics in Prometheus format, shared by an endpoint's router workers through prometheus-client.

The router workers are separate processes, so they record in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set before the library loads); ``/metrics`` and the autoscaler read
the sum over all workers. The names mirror SageMaker's CloudWatch metrics: ``Invocations``,
``Invocation4XXErrors``, ``Invocation5XXErrors``, ``ModelLatency``, ``OverheadLatency`` per variant.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass

INVOCATIONS = "spark_ml_endpoint_invocations"
ERRORS_4XX = "spark_ml_endpoint_invocation_4xx_errors"
ERRORS_5XX = "spark_ml_endpoint_invocation_5xx_errors"
RETRIES = "spark_ml_endpoint_retries"
MODEL_LATENCY = "spark_ml_endpoint_model_latency_seconds"
OVERHEAD_LATENCY = "spark_ml_endpoint_overhead_latency_seconds"
INSTANCES = "spark_ml_endpoint_instances"
WEIGHT = "spark_ml_endpoint_variant_weight"
NO_VARIANT = "-"  # label of requests rejected before a variant was chosen (auth, size)

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class RouterMetrics:
    """The router's instruments; create only after ``PROMETHEUS_MULTIPROC_DIR`` is set in this process."""

    def __init__(self, endpoint: str):
        from prometheus_client import Counter, Histogram

        labels = ("endpoint", "variant")
        self.endpoint = endpoint
        self.invocations = Counter(INVOCATIONS, "Requests routed to a variant", labels)
        self.errors_4xx = Counter(ERRORS_4XX, "Requests answered with a 4xx status", labels)
        self.errors_5xx = Counter(ERRORS_5XX, "Requests answered with a 5xx status", labels)
        self.retries = Counter(
            RETRIES, "Attempts repeated on another instance after a connection failure", labels
        )
        self.model_latency = Histogram(
            MODEL_LATENCY, "Round trip from the router to the instance", labels, buckets=LATENCY_BUCKETS
        )
        self.overhead_latency = Histogram(
            OVERHEAD_LATENCY,
            "Time in the router besides the model's round trip",
            labels,
            buckets=LATENCY_BUCKETS,
        )
        self._children: dict[str, tuple] = {}

    def of(self, variant: str):
        """(invocations, 4xx, 5xx, retries, model latency, overhead latency) children for one variant."""
        children = self._children.get(variant)
        if children is None:
            key = (self.endpoint, variant)
            children = (
                self.invocations.labels(*key),
                self.errors_4xx.labels(*key),
                self.errors_5xx.labels(*key),
                self.retries.labels(*key),
                self.model_latency.labels(*key),
                self.overhead_latency.labels(*key),
            )
            self._children[variant] = children
        return children


def render(multiproc_dir: str, extra_collectors=()) -> bytes:
    """The Prometheus text exposition of every worker's metrics (plus ``extra_collectors``)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiproc_dir)
    for collector in extra_collectors:
        registry.register(collector)
    return generate_latest(registry)


class TableCollector:
    """Gauges from a router worker's current routing table: instances and weight per variant."""

    def __init__(self, endpoint: str, table):
        self.endpoint, self.table = endpoint, table

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        instances = GaugeMetricFamily(
            INSTANCES, "Instances serving a variant", labels=["endpoint", "variant"]
        )
        weight = GaugeMetricFamily(
            WEIGHT, "Current traffic weight of a variant", labels=["endpoint", "variant"]
        )
        for v in self.table.variants:
            instances.add_metric([self.endpoint, v.name], len(v.instances))
            weight.add_metric([self.endpoint, v.name], v.weight)
        yield instances
        yield weight


def invocation_counts(multiproc_dir: str) -> dict[str, float]:
    """Total invocations per variant so far, summed over router workers (for the autoscaler)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    totals: dict[str, float] = defaultdict(float)
    if not os.path.isdir(multiproc_dir):
        return totals
    for family in MultiProcessCollector(None, path=multiproc_dir).collect():
        if family.name != INVOCATIONS:
            continue
        for sample in family.samples:
            if sample.name == INVOCATIONS + "_total":
                totals[sample.labels.get("variant", "")] += sample.value
    return totals


@dataclass
class VariantMetrics:
    """One variant's numbers as read from ``/metrics``; latencies in milliseconds."""

    variant: str
    invocations: float = 0.0
    errors_4xx: float = 0.0
    errors_5xx: float = 0.0
    retries: float = 0.0
    instances: float = 0.0
    weight: float = 0.0
    model_latency_mean_ms: float = math.nan
    overhead_latency_mean_ms: float = math.nan
    model_latency_p50_ms: float = math.nan
    model_latency_p99_ms: float = math.nan


def parse(text: str) -> dict[str, VariantMetrics]:
    """Per-variant summary of a ``/metrics`` page (quantiles estimated from histogram buckets)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, VariantMetrics] = {}
    sums: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], float] = defaultdict(float)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    scalar = {
        INVOCATIONS + "_total": "invocations",
        ERRORS_4XX + "_total": "errors_4xx",
        ERRORS_5XX + "_total": "errors_5xx",
        RETRIES + "_total": "retries",
        INSTANCES: "instances",
        WEIGHT: "weight",
    }
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            variant = s.labels.get("variant")
            if variant is None or variant == NO_VARIANT:
                continue
            vm = out.setdefault(variant, VariantMetrics(variant))
            if s.name in scalar:
                setattr(vm, scalar[s.name], getattr(vm, scalar[s.name]) + s.value)
            elif s.name.endswith("_sum"):
                sums[(s.name[:-4], variant)] += s.value
            elif s.name.endswith("_count"):
                counts[(s.name[:-6], variant)] += s.value
            elif s.name == MODEL_LATENCY + "_bucket":
                buckets[variant].append((float(s.labels["le"]), s.value))
    for variant, vm in out.items():
        for name, attr in (
            (MODEL_LATENCY, "model_latency_mean_ms"),
            (OVERHEAD_LATENCY, "overhead_latency_mean_ms"),
        ):
            n = counts.get((name, variant), 0.0)
            if n:
                setattr(vm, attr, 1e3 * sums[(name, variant)] / n)
        vm.model_latency_p50_ms = 1e3 * _quantile(buckets[variant], 0.5)
        vm.model_latency_p99_ms = 1e3 * _quantile(buckets[variant], 0.99)
    return out


def _quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """Histogram quantile as Prometheus' histogram_quantile computes it (linear within a bucket)."""
    points = sorted(cumulative)
    if not points or points[-1][1] <= 0:
        return math.nan
    rank = q * points[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in points:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound
