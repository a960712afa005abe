"""Endpoints as real processes: routing, variants, auth, limits, BYO servers, autoscaling, reliability."""

import json
import os
import pathlib
import signal
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import requests
from serving_support import BYO_SERVER, LOAD_GENERATOR, HostingHome, plugin_env, wait_for, write_models

from algorithms import tensor_codec
from algorithms.batch import Batch
from algorithms.builtin import load_model
from algorithms.serving.response_records import decode_outputs
from spark_ml import cli, hosting
from spark_ml.endpoints.api import _supervisor_alive
from spark_ml.hosting import ProductionVariant


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("hosting")
    with HostingHome(root / "home") as h:
        h.models = write_models(str(root / "models"))
        h.root = root
        yield h


@pytest.fixture(scope="module")
def endpoint(home):
    """Variant A: linear learner on 2 instances; B: k-means on 1; equal weights; 256 KiB body limit."""
    env = plugin_env()
    hosting.create_model("ll", home.models["test-linear-learner"], environment=env)
    hosting.create_model("km", home.models["test-kmeans"], environment=env)
    hosting.create_endpoint_config(
        "ab", [ProductionVariant("A", "ll", 2, 1.0), ProductionVariant("B", "km", 1, 1.0)]
    )
    description = hosting.create_endpoint("ab", "ab", max_payload_mb=0.25)
    assert description.status == "InService"
    return description


def post(url, body, ctype="text/csv", **headers):
    return requests.post(
        url + "/invocations", data=body, headers={"Content-Type": ctype, **headers}, timeout=30
    )


def test_weighted_split_variant_header_and_target_variant(endpoint):
    seen = Counter()
    for _ in range(200):
        r = post(endpoint.url, "1,2,3,4\n")
        assert r.status_code == 200
        variant = r.headers["X-Invoked-Production-Variant"]
        keys = set(r.json()["predictions"][0])
        assert keys == (
            {"score", "predicted_label"} if variant == "A" else {"closest_cluster", "distance_to_cluster"}
        )
        seen[variant] += 1
    assert abs(seen["A"] - 100) < 36  # 5 standard deviations of binomial(200, 1/2)
    r = post(endpoint.url, "1,2,3,4\n", **{"X-Target-Variant": "B"})
    assert (
        r.headers["X-Invoked-Production-Variant"] == "B" and "closest_cluster" in r.json()["predictions"][0]
    )
    r = post(endpoint.url, "1,2,3,4\n", **{"X-Target-Variant": "C"})
    assert r.status_code == 400 and "unknown target variant 'C'" in r.json()["error"]


def test_predictions_through_the_endpoint_equal_the_models_own(endpoint, home):
    x = np.random.default_rng(5).normal(size=(1000, 4)).astype(np.float32)
    for variant, algorithm in (("A", "test-linear-learner"), ("B", "test-kmeans")):
        r = post(
            endpoint.url,
            tensor_codec.encode_dense(x),
            "application/x-recordio-protobuf",
            Accept="application/x-recordio-protobuf",
            **{"X-Target-Variant": variant},
        )
        assert r.status_code == 200, r.text
        got = decode_outputs(r.content)
        expected = load_model(home.models[algorithm]).predict(Batch(x))
        for name, values in expected.items():
            np.testing.assert_array_equal(got[name], np.asarray(values, np.float32))


def routing_table(home, variants: set[str]):
    from spark_ml.endpoints.routes import RoutingTable

    for path in (home.root / "home").rglob("routes.json"):
        table = RoutingTable.read(str(path))
        if {v.name for v in table.variants} == variants:
            return table
    raise AssertionError(f"no routing table with variants {variants}")


def test_own_instances_take_bodies_through_shared_memory_byte_for_byte(endpoint, home):
    from algorithms.serving.handoff import AVAILABLE

    table = routing_table(home, {"A", "B"})
    assert all(bool(i.handoff) == AVAILABLE for v in table.variants for i in v.instances)
    instance = hosting.describe_endpoint("ab").variants[0].instances[0]
    rows = np.random.default_rng(3).normal(size=(8000, 4)).astype(np.float32)
    csv = ("\n".join(",".join(f"{v:.4f}" for v in r) for r in rows) + "\n").encode()
    assert 200_000 < len(csv) < 256 * 1024  # many reads into a slot, and a JSON answer beyond its response area
    proto = tensor_codec.encode_dense(rows[:1000])

    def chunked(body):  # no Content-Length: the router collects the chunks instead
        yield from (body[i : i + 10_000] for i in range(0, len(body), 10_000))

    for body, ctype, accept in ((csv, "text/csv", "application/json"), (b"1,2,3,4\n", "text/csv", None),
                                (proto, "application/x-recordio-protobuf", "application/x-recordio-protobuf")):
        headers = {"Content-Type": ctype, **({"Accept": accept} if accept else {})}
        direct = requests.post(instance.url + "/invocations", data=body, headers=headers, timeout=30)
        for data in (body, chunked(body)):
            r = requests.post(endpoint.url + "/invocations", data=data, headers={**headers, "X-Target-Variant": "A"},
                              timeout=30)
            assert r.status_code == 200 and r.content == direct.content
            assert r.headers["Content-Type"] == direct.headers["Content-Type"]


def test_oversized_negotiation_headers_get_431_and_nothing_else_is_disturbed(endpoint):
    r = post(endpoint.url, "1,2,3,4\n", Accept="application/json;" + "x" * 5000)
    assert r.status_code == 431 and "at most 4096 bytes" in r.json()["error"]
    assert post(endpoint.url, "1,2,3,4\n").status_code == 200


def read_answer(stream) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length, read from a shared buffered stream."""
    status, length = int(stream.readline().split()[1]), 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, stream.read(length)


def test_pipelined_requests_are_answered_in_order(endpoint):
    import socket

    host, port = endpoint.url[len("http://") :].split(":")
    bodies = [f"{k},0,0,{-k}\n".encode() for k in range(4)]
    wire = b"".join(
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nX-Target-Variant: A\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in bodies
    ) + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(wire)  # all in one write: the router parses them from one read
        stream = sock.makefile("rb")  # one reader for all answers (each may arrive in the others' reads)
        answers = [read_answer(stream) for _ in range(len(bodies) + 1)]
    expected = [post(endpoint.url, body, **{"X-Target-Variant": "A"}).content for body in bodies]
    assert answers == [(200, e) for e in expected] + [(200, b"")]
    assert len(set(expected)) == len(bodies)


@pytest.fixture(scope="module")
def slow(home):
    """Two instances of a model that sleeps as long as the first feature says; 1.5 s timeout."""
    marker = str(home.root / "slow.pid")
    hosting.create_model("slow", home.models["test-slow"], environment={**plugin_env(), "SLOW_MARKER": marker})
    hosting.create_endpoint_config("slow", [ProductionVariant("AllTraffic", "slow", 2)])
    d = hosting.create_endpoint("slow", "slow", timeout=1.5, router_workers=1)
    d.marker = marker
    yield d
    hosting.delete_endpoint("slow")


def test_a_timed_out_handoff_answers_504_and_its_instance_serves_on(slow, home):
    answers = [post(slow.url, "2.5,0,0,0\n")]
    answers += [post(slow.url, f"0,{k},0,0\n") for k in range(6)]  # both instances, one still asleep at first
    assert answers[0].status_code == 504 and "did not answer within 1.5 s" in answers[0].json()["error"]
    model = load_model(home.models["test-slow"])
    for k, r in enumerate(answers[1:]):
        want = model.predict(Batch(np.array([[0, k, 0, 0]], np.float32)))["score"][0]
        assert r.status_code == 200 and r.json()["predictions"][0]["score"] == pytest.approx(want, rel=1e-6)


def test_an_instance_killed_mid_request_is_retried_on_the_other(slow):
    import threading

    if os.path.exists(slow.marker):
        os.remove(slow.marker)
    box = {}
    thread = threading.Thread(target=lambda: box.update(r=post(slow.url, "1,0,0,0\n")))
    thread.start()
    wait_for(lambda: os.path.exists(slow.marker) and pathlib.Path(slow.marker).read_text(), what="a busy instance")
    busy = int(pathlib.Path(slow.marker).read_text())
    os.kill(busy, signal.SIGKILL)
    thread.join(30)
    assert box["r"].status_code == 200 and int(pathlib.Path(slow.marker).read_text()) != busy
    text = requests.get(slow.url + "/metrics", timeout=10).text
    retries = [line for line in text.splitlines() if "retr" in line and not line.startswith("#")]
    assert any(float(line.rsplit(" ", 1)[1]) >= 1 for line in retries), retries


def test_describe_list_metrics_and_cli(endpoint, capsys):
    d = hosting.describe_endpoint("ab")
    assert [(v.variant_name, v.current_instance_count, v.current_weight) for v in d.variants] == [
        ("A", 2, 1.0),
        ("B", 1, 1.0),
    ]
    assert all(i.status == "ready" and i.pid for v in d.variants for i in v.instances)
    before = hosting.endpoint_metrics("ab")
    for _ in range(5):
        post(endpoint.url, "1,2,3,4\n", **{"X-Target-Variant": "B"})
    post(endpoint.url, "1,2\n", **{"X-Target-Variant": "B"})
    after = hosting.endpoint_metrics("ab")
    assert after["B"].invocations - before["B"].invocations == 6
    assert after["B"].errors_4xx - before["B"].errors_4xx == 1
    assert after["A"].instances == 2 and after["B"].model_latency_mean_ms > 0
    text = requests.get(endpoint.url + "/metrics", timeout=10).text
    assert 'spark_ml_endpoint_invocations_total{endpoint="ab",variant="B"}' in text
    assert cli.main(["endpoints", "list"]) == 0
    assert "ab" in capsys.readouterr().out
    assert cli.main(["endpoints", "describe", "ab"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "InService"
    assert cli.main(["endpoints", "invoke", "ab", "--variant", "A", "--body", "1,2,3,4"]) == 0
    assert "predicted_label" in capsys.readouterr().out
    assert cli.main(["endpoints", "describe", "nope"]) == 1
    assert "no endpoint named 'nope'" in capsys.readouterr().err


def malformed_requests(url):
    """(body, headers) of many kinds of bad request."""
    big = b"1,2,3,4\n" * 40000  # 320 KB > the 256 KiB limit
    kinds = [
        (b"1,2,3,4\n1,2,x,4\n", {"Content-Type": "text/csv"}),
        (b"1,2,3\n", {"Content-Type": "text/csv"}),
        (b"{nope", {"Content-Type": "application/json"}),
        (b'{"instances": [[1, 2]]}', {"Content-Type": "application/json"}),
        (b'{"features": [1, 2, 3]}\n', {"Content-Type": "application/jsonlines"}),
        (b"\x0a\xd7\x23\xce\xff\xff\x00\x00garbage", {"Content-Type": "application/x-recordio-protobuf"}),
        (
            tensor_codec.encode_dense(np.ones((2, 3), np.float32)),
            {"Content-Type": "application/x-recordio-protobuf"},
        ),
        (b"1,2,3,4", {"Content-Type": "image/png"}),
        (b"1,2,3,4", {"Content-Type": "text/csv", "Accept": "image/png"}),
        (b"1,2,3,4", {"Content-Type": "text/csv", "X-Target-Variant": "nope"}),
        (b"0 9:1\n", {"Content-Type": "text/libsvm"}),
        (b"\xff\xfe\x00", {"Content-Type": "text/csv"}),
    ]
    for k in range(1000):
        yield kinds[k % len(kinds)] if k % 100 else (big, {"Content-Type": "text/csv"})


def test_a_thousand_malformed_requests_get_4xx_and_the_endpoint_keeps_serving(endpoint):
    session = requests.Session()
    statuses = Counter()
    for body, headers in malformed_requests(endpoint.url):
        r = session.post(endpoint.url + "/invocations", data=body, headers=headers, timeout=30)
        statuses[r.status_code] += 1
        assert 400 <= r.status_code < 500, (r.status_code, r.text, headers)
        assert "error" in r.json()
        if r.status_code == 413:
            session = requests.Session()  # the router closes the connection after a 413
    assert set(statuses) == {400, 406, 413, 415}
    assert post(endpoint.url, "1,2,3,4\n").status_code == 200
    d = hosting.describe_endpoint("ab")
    assert d.status == "InService" and sum(v.current_instance_count for v in d.variants) == 3


def test_no_client_visible_failure_when_an_instance_dies_weights_change_and_the_endpoint_updates(
    endpoint, home
):
    out = str(home.root / "load.json")
    stop = str(home.root / "load.stop")
    script = home.root / "load.py"
    script.write_text(LOAD_GENERATOR)
    load = subprocess.Popen([sys.executable, str(script), endpoint.url, stop, out, "2", "-"])

    def progress() -> int:
        path = out + ".progress"
        return int(pathlib.Path(path).read_text() or 0) if os.path.exists(path) else 0

    try:
        wait_for(lambda: progress() > 50, what="load to start")
        # 1. Kill one of variant A's two instances outright.
        victim = hosting.describe_endpoint("ab").variants[0].instances[0]
        os.kill(victim.pid, signal.SIGKILL)
        wait_for(
            lambda: (
                {
                    i.instance_id
                    for i in hosting.describe_endpoint("ab").variants[0].instances
                    if i.status == "ready"
                }
                - {victim.instance_id}
                and hosting.describe_endpoint("ab").variants[0].current_instance_count == 2
            ),
            what="the replacement instance",
        )
        mark = progress()
        wait_for(lambda: progress() > mark + 50, what="more load")
        # 2. Shift all traffic to B, then back.
        hosting.update_endpoint_weights_and_capacities("ab", {"A": {"weight": 0}})
        mark = progress()
        wait_for(lambda: progress() > mark + 50, what="more load")
        hosting.update_endpoint_weights_and_capacities(
            "ab", [{"VariantName": "A", "DesiredWeight": 1.0, "DesiredInstanceCount": 1}]
        )
        # 3. A new config: fresh instances start, traffic switches, the old ones drain.
        hosting.create_endpoint_config(
            "ab-2", [ProductionVariant("A", "ll", 1, 1.0), ProductionVariant("B", "km", 1, 1.0)]
        )
        old = {i.instance_id for v in hosting.describe_endpoint("ab").variants for i in v.instances}
        d = hosting.update_endpoint("ab", "ab-2")
        assert d.config_name == "ab-2" and d.status == "InService"
        assert not old & {i.instance_id for v in d.variants for i in v.instances if i.status == "ready"}
        mark = progress()
        wait_for(lambda: progress() > mark + 50, what="more load")
    finally:
        open(stop, "w").close()
        load.wait(60)
    results = json.loads(pathlib.Path(out).read_text())
    assert results["failures"] == []
    assert results["ok"] > 200 and set(results["variants"]) == {"A", "B"}


def test_an_update_to_a_broken_config_keeps_the_old_one_serving(endpoint, home):
    hosting.create_model("broken", command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    hosting.create_endpoint_config("ab-broken", [ProductionVariant("A", "broken")])
    current = hosting.describe_endpoint("ab").config_name
    with pytest.raises(hosting.EndpointError, match="exited with code 3"):
        hosting.update_endpoint("ab", "ab-broken")
    d = hosting.describe_endpoint("ab")
    assert d.status == "InService" and d.config_name == current
    assert post(endpoint.url, "1,2,3,4\n").status_code == 200


def test_an_endpoint_whose_model_cannot_start_fails_with_the_reason(home):
    hosting.create_model(
        "dead", command=[sys.executable, "-c", "import sys; print('no model here'); sys.exit(4)"]
    )
    hosting.create_endpoint_config("dead", [ProductionVariant("AllTraffic", "dead")])
    with pytest.raises(hosting.EndpointError, match="exited with code 4.*no model here"):
        hosting.create_endpoint("dead", "dead", router_workers=1)
    d = hosting.describe_endpoint("dead")
    assert d.status == "Failed" and "exited with code 4" in d.failure_reason
    hosting.delete_endpoint("dead")
    assert "dead" not in [e.name for e in hosting.list_endpoints()]


@pytest.fixture(scope="module")
def byo(home):
    """A token-protected endpoint over a user's own server (stdlib), with a 1 s timeout."""
    script = home.root / "byo_server.py"
    script.write_text(BYO_SERVER)
    hosting.create_model("byo", command=[sys.executable, str(script)])
    hosting.create_endpoint_config("byo", [ProductionVariant("AllTraffic", "byo", 1)])
    d = hosting.create_endpoint("byo", "byo", auth_token="s3cret", timeout=1.0, router_workers=1)
    return d


def test_bring_your_own_server_behind_a_token(byo):
    assert post(byo.url, "1,2,3\n").status_code == 401
    assert post(byo.url, "1,2,3\n", Authorization="Bearer wrong").status_code == 401
    assert requests.get(byo.url + "/metrics", timeout=10).status_code == 401
    r = post(byo.url, "1,2,3\n4,5,6\n", Authorization="Bearer s3cret")
    assert r.status_code == 200 and r.json() == {"predictions": [{"score": 6.0}, {"score": 15.0}]}
    assert r.headers["X-Invoked-Production-Variant"] == "AllTraffic"
    assert hosting.invoke_endpoint("byo", "1,1\n", "text/csv").body == b'{"predictions": [{"score": 2.0}]}'
    assert hosting.describe_endpoint("byo").auth == "bearer" and hosting.endpoint_token("byo") == "s3cret"
    assert requests.get(byo.url + "/ping", timeout=10).status_code == 200  # health needs no token


def test_timeout_answers_504_and_the_endpoint_recovers(byo):
    r = post(byo.url, "sleep 2.5", Authorization="Bearer s3cret")
    assert r.status_code == 504 and "did not answer within 1 s" in r.json()["error"]
    assert post(byo.url, "1\n", Authorization="Bearer s3cret").status_code == 200


def test_autoscaling_scales_out_under_load_and_back_in_when_idle(byo, home):
    hosting.put_scaling_policy(
        "byo",
        "AllTraffic",
        target_value=60.0,
        min_capacity=1,
        max_capacity=2,
        scale_out_cooldown=0.0,
        scale_in_cooldown=1.0,
        metric_window=2.0,
    )
    out, stop = str(home.root / "scale.json"), str(home.root / "scale.stop")
    script = home.root / "load.py"
    script.write_text(LOAD_GENERATOR)
    load = subprocess.Popen([sys.executable, str(script), byo.url, stop, out, "1", "s3cret"])
    try:
        wait_for(
            lambda: hosting.describe_endpoint("byo").variants[0].current_instance_count == 2,
            timeout=60,
            what="scale-out to 2 instances",
        )
    finally:
        open(stop, "w").close()
        load.wait(60)
    assert json.loads(pathlib.Path(out).read_text())["failures"] == []
    wait_for(
        lambda: hosting.describe_endpoint("byo").variants[0].current_instance_count == 1,
        timeout=60,
        what="scale-in to 1 instance",
    )
    activities = hosting.describe_endpoint("byo").scaling_activities
    assert [(a["from_count"], a["to_count"]) for a in activities] == [(1, 2), (2, 1)]
    hosting.delete_scaling_policy("byo", "AllTraffic")


def test_stop_start_and_delete(byo):
    hosting.stop_endpoint("byo")
    d = hosting.describe_endpoint("byo")
    assert d.status == "OutOfService" and d.supervisor_pid is None
    with pytest.raises(requests.ConnectionError):
        requests.get(byo.url + "/ping", timeout=5)
    d = hosting.start_endpoint("byo")
    assert d.status == "InService"
    assert hosting.invoke_endpoint("byo", "2,3\n", "text/csv").body == b'{"predictions": [{"score": 5.0}]}'
    pid = d.supervisor_pid
    hosting.delete_endpoint("byo")
    assert "byo" not in [e.name for e in hosting.list_endpoints()]
    assert not _supervisor_alive(pid, "byo")  # gone (or a zombie awaiting its reaper)
