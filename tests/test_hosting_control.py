"""Control plane without processes: registry, validation, routing choices, autoscaling, metrics."""

import math
import random
from collections import Counter

import pytest
from serving_support import write_models

from spark_ml import hosting
from spark_ml.endpoints.autoscaler import TargetTracker
from spark_ml.endpoints.metrics import _quantile, parse
from spark_ml.endpoints.registry import ProductionVariant, Registry, ScalingPolicy
from spark_ml.endpoints.routes import Balancer, NoVariant, RouteInstance, RouteVariant, RoutingTable


def test_models_and_configs_are_kept_in_the_registry(spark_ml_home, tmp_path):
    paths = write_models(str(tmp_path / "m"))
    hosting.create_model("km", paths["test-kmeans"])
    hosting.create_model("byo", command=["my-server", "--port", "{port}"], environment={"A": "1"})
    hosting.create_model("remote", url="http://127.0.0.1:9")
    assert [(m.name, m.kind) for m in hosting.list_models()] == [
        ("byo", "command"),
        ("km", "artifact"),
        ("remote", "url"),
    ]
    assert hosting.describe_model("byo").environment == {"A": "1"}
    config = hosting.create_endpoint_config(
        "cfg", [ProductionVariant("A", "km", 2, 3.0), ProductionVariant("B", "byo")]
    )
    assert hosting.describe_endpoint_config("cfg") == config
    assert (spark_ml_home / "registry.db").exists()
    with pytest.raises(ValueError, match="already exists"):
        hosting.create_model("km", paths["test-kmeans"])
    with pytest.raises(LookupError, match="no model named 'ghost'"):
        hosting.create_endpoint_config("bad", [ProductionVariant("A", "ghost")])
    with pytest.raises(ValueError, match="not a model artifact"):
        hosting.create_model("empty", str(tmp_path))
    hosting.delete_endpoint_config("cfg")
    hosting.delete_model("remote")
    assert [c.name for c in hosting.list_endpoint_configs()] == []
    assert [m.name for m in hosting.list_models()] == ["byo", "km"]


def test_validation_names_the_fault(spark_ml_home, tmp_path):
    with pytest.raises(ValueError, match="initial_instance_count must be >= 1"):
        ProductionVariant("A", "m", 0)
    with pytest.raises(ValueError, match="initial_weight must be >= 0"):
        ProductionVariant("A", "m", 1, -1)
    with pytest.raises(ValueError, match="variant_name"):
        ProductionVariant("a b", "m")
    with pytest.raises(ValueError, match="1-63 letters"):
        hosting.create_model("bad name", url="http://x")
    for url in ("https://models.example:8443", "http://127.0.0.1:9/v1/model"):  # the router speaks plain HTTP at /
        with pytest.raises(ValueError, match=r"url must be http://host\[:port\]"):
            hosting.create_model("remote2", url=url)
    with pytest.raises(ValueError, match="min_capacity <= max_capacity"):
        ScalingPolicy(min_capacity=3, max_capacity=2)
    paths = write_models(str(tmp_path / "m"))
    hosting.create_model("km", paths["test-kmeans"])
    with pytest.raises(ValueError, match="variant names repeat"):
        hosting.create_endpoint_config("c", [ProductionVariant("A", "km"), ProductionVariant("A", "km")])
    with pytest.raises(ValueError, match="positive initial_weight"):
        hosting.create_endpoint_config("c", [ProductionVariant("A", "km", 1, 0)])
    hosting.create_endpoint_config("c", [ProductionVariant("A", "km")])
    with pytest.raises(ValueError, match="exposes it beyond this machine; pass auth_token"):
        hosting.create_endpoint("e", "c", host="0.0.0.0")
    assert Registry().endpoints() == []  # nothing was started or half-written


def table(*variants):
    return RoutingTable(
        1,
        [
            RouteVariant(
                name, weight, [RouteInstance(f"{name}-{k}", f"http://x/{name}{k}") for k in range(count)]
            )
            for name, weight, count in variants
        ],
    )


def test_weighted_choice_follows_the_weights():
    random.seed(3)
    balancer = Balancer(table(("A", 1.0, 1), ("B", 3.0, 1), ("C", 0.0, 1)))
    counts = Counter(balancer.variant(None).name for _ in range(20000))
    assert counts["C"] == 0
    # 3:1 split; 5 standard deviations of a binomial(20000, 0.25) is ~306
    assert abs(counts["A"] - 5000) < 306
    assert balancer.variant("C").name == "C"  # a weight-0 variant can still be targeted
    with pytest.raises(NoVariant, match="unknown target variant 'D'"):
        balancer.variant("D")
    with pytest.raises(NoVariant, match="no variant has a positive weight"):
        Balancer(table(("A", 0.0, 1))).variant(None)


def test_least_outstanding_requests_and_ejection():
    balancer = Balancer(table(("A", 1.0, 3)))
    variant = balancer.by_name["A"]
    balancer.outstanding.update({"A-0": 2, "A-1": 0, "A-2": 1})
    assert balancer.instance(variant).instance_id == "A-1"
    assert balancer.instance(variant, tried={"A-1"}).instance_id == "A-2"
    balancer.eject(variant.instances[1])
    assert balancer.instance(variant).instance_id == "A-2"  # ejected: used only when nothing else is left
    assert balancer.instance(variant, tried={"A-0", "A-2"}).instance_id == "A-1"
    assert balancer.instance(variant, tried={"A-0", "A-1", "A-2"}) is None
    balancer.load(table(("A", 1.0, 1)))
    assert set(balancer.ejected_until) == set()


def test_routing_table_round_trips(tmp_path):
    t = table(("A", 0.5, 2))
    t.settings = {"timeout": 3.0}
    t.write(str(tmp_path / "routes.json"))
    assert RoutingTable.read(str(tmp_path / "routes.json")) == t


def track(policy, per_second, seconds, current, start=0.0, total=0.0, step=1.0, tracker=None):
    """Feed a steady rate for a while; returns (tracker, decisions, now, total)."""
    tracker = tracker or TargetTracker(policy)
    decisions = []
    now = start
    while now < start + seconds:
        tracker.observe(now, total)
        decision = tracker.decide(now, current)
        if decision is not None:
            decisions.append((now, decision.desired))
            current = decision.desired
        now += step
        total += per_second * step
    return tracker, decisions, now, total, current


def test_target_tracking_scales_out_then_holds_under_steady_load():
    policy = ScalingPolicy(
        target_value=60,
        min_capacity=1,
        max_capacity=5,
        scale_out_cooldown=30,
        scale_in_cooldown=120,
        metric_window=60,
    )
    # 3.5 requests/s = 210/min: ceil(210 / 60) = 4 instances, reached once the window has filled
    tracker, decisions, now, total, current = track(policy, 3.5, 600, current=1)
    assert decisions == [(60.0, 4)]
    assert current == 4  # and no flapping for the remaining nine minutes


def test_scale_in_waits_for_the_cooldown_and_keeps_a_margin():
    policy = ScalingPolicy(
        target_value=60,
        min_capacity=1,
        max_capacity=5,
        scale_out_cooldown=30,
        scale_in_cooldown=120,
        metric_window=60,
    )
    tracker, decisions, now, total, current = track(policy, 3.5, 100, current=1)
    assert current == 4
    # Load drops to 2.9/s = 174/min: 3 instances would run at 58/min, within 10% of the target: stay at 4.
    tracker, decisions, now, total, current = track(policy, 2.9, 400, current, now, total, tracker=tracker)
    assert decisions == [] and current == 4
    # Load drops to 1/s = 60/min: 2 instances run at 30/min. The window average falls gradually, so the
    # fleet steps down, each step a cooldown after the previous one, and settles at 2.
    tracker, decisions, now, total, current = track(policy, 1.0, 600, current, now, total, tracker=tracker)
    assert current == 2
    steps = [d for _, d in decisions]
    assert steps == sorted(steps, reverse=True) and steps[-1] == 2
    times = [t for t, _ in decisions]
    assert all(b - a >= 120 for a, b in zip(times, times[1:], strict=False))
    # Idle: down to min_capacity, never below.
    tracker, decisions, now, total, current = track(policy, 0.0, 600, current, now, total, tracker=tracker)
    assert current == 1 and all(d >= 1 for _, d in decisions)


def test_capacity_outside_the_bounds_is_corrected_and_scale_in_can_be_disabled():
    policy = ScalingPolicy(
        target_value=60, min_capacity=2, max_capacity=3, disable_scale_in=True, metric_window=10
    )
    tracker = TargetTracker(policy)
    assert tracker.decide(0.0, 1).desired == 2
    assert tracker.decide(0.0, 7).desired == 3
    _, decisions, *_ = track(policy, 0.0, 100, current=3, tracker=tracker)
    assert decisions == []


PAGE = """# HELP spark_ml_endpoint_invocations_total x
# TYPE spark_ml_endpoint_invocations_total counter
spark_ml_endpoint_invocations_total{endpoint="e",variant="A"} 30.0
spark_ml_endpoint_invocations_total{endpoint="e",variant="B"} 10.0
spark_ml_endpoint_invocations_total{endpoint="e",variant="-"} 0.0
# TYPE spark_ml_endpoint_invocation_4xx_errors_total counter
spark_ml_endpoint_invocation_4xx_errors_total{endpoint="e",variant="A"} 2.0
# TYPE spark_ml_endpoint_model_latency_seconds histogram
spark_ml_endpoint_model_latency_seconds_bucket{endpoint="e",le="0.001",variant="A"} 10.0
spark_ml_endpoint_model_latency_seconds_bucket{endpoint="e",le="0.002",variant="A"} 30.0
spark_ml_endpoint_model_latency_seconds_bucket{endpoint="e",le="+Inf",variant="A"} 30.0
spark_ml_endpoint_model_latency_seconds_count{endpoint="e",variant="A"} 30.0
spark_ml_endpoint_model_latency_seconds_sum{endpoint="e",variant="A"} 0.045
"""


def test_metrics_page_is_summarized_per_variant():
    m = parse(PAGE)
    assert set(m) == {"A", "B"}
    assert (m["A"].invocations, m["B"].invocations, m["A"].errors_4xx) == (30, 10, 2)
    assert m["A"].model_latency_mean_ms == pytest.approx(1.5)
    assert m["A"].model_latency_p50_ms == pytest.approx(1.25)  # 15th of 30 lies 1/4 into the second bucket
    assert math.isnan(m["B"].model_latency_mean_ms)
    assert _quantile([(1.0, 0.0)], 0.5) != _quantile([(1.0, 0.0)], 0.5)  # no observations: NaN


def test_cli_variant_spec_keeps_uri_paths_whole():
    from spark_ml.endpoints.cli import _variant_spec

    assert _variant_spec("A=/m/km:2:0.5", "AllTraffic") == ("A", "/m/km", 2, 0.5)
    assert _variant_spec("s3://bucket/models/km", "AllTraffic") == ("AllTraffic", "s3://bucket/models/km", 1, 1.0)
    assert _variant_spec("B=hdfs://nn:8020/m:3", "AllTraffic") == ("B", "hdfs://nn:8020/m", 3, 1.0)
    assert _variant_spec("/m/x::0.3", "AllTraffic") == ("AllTraffic", "/m/x", 1, 0.3)
