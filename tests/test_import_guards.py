"""Spark stays out of what must run without it: the endpoint control plane's processes and ``algorithms``.

Each check runs in fresh interpreters that load a ``sitecustomize`` (through ``PYTHONPATH``, which every
process the endpoint starts inherits). It puts a finder first on ``sys.meta_path`` that writes down every
attempt to import ``pyspark`` or ``py4j``, with the stack that asked, and records each interpreter's
command line, so the test knows the watch ran in the supervisor, the router and the instance too.
"""

import json
import os
import subprocess
import sys
import textwrap

from serving_support import HostingHome

TESTS = os.path.dirname(os.path.abspath(__file__))
FORBIDDEN = ("pyspark", "py4j")

WATCH = textwrap.dedent(
    """
    import json, os, sys, traceback

    _DIR = os.environ["SPARK_ML_IMPORT_WATCH"]
    _FORBIDDEN = {forbidden!r}


    def _note(kind, text):
        with open(os.path.join(_DIR, f"{{os.getpid()}}.{{kind}}"), "a") as f:
            f.write(text)


    class _Watch:
        noted = False  # the first forbidden import says who asked; the ones it makes itself are noise

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in _FORBIDDEN and not self.noted:
                self.noted = True
                frames = [
                    f for f in traceback.extract_stack()[:-1]
                    if not f.filename.startswith("<") and "importlib" not in f.filename
                ]
                where = f"{{frames[-1].filename}}:{{frames[-1].lineno}}" if frames else "?"
                command = " ".join("<code>" if "\\n" in a else a for a in sys.orig_argv)[:200]
                stack = "".join(traceback.format_list(frames))
                _note("forbidden", f"{{name}} imported at {{where}} by: {{command}}\\n{{stack}}\\n")
            return None


    sys.meta_path.insert(0, _Watch())
    _note("argv", json.dumps(sys.orig_argv) + "\\n")
    """
).format(forbidden=FORBIDDEN)


def watched_env(tmp_path) -> tuple[dict[str, str], str]:
    site, records = tmp_path / "watch-site", tmp_path / "watch-records"
    site.mkdir()
    records.mkdir()
    (site / "sitecustomize.py").write_text(WATCH)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), TESTS, env.get("PYTHONPATH")) if p)
    env["SPARK_ML_IMPORT_WATCH"] = str(records)
    return env, str(records)


def forbidden_imports(records: str) -> str:
    found = sorted(n for n in os.listdir(records) if n.endswith(".forbidden"))
    return "".join(open(os.path.join(records, n)).read() for n in found)


def watched_command_lines(records: str) -> list[list[str]]:
    lines = []
    for name in os.listdir(records):
        if name.endswith(".argv"):
            with open(os.path.join(records, name)) as f:
                lines += [json.loads(line) for line in f]
    return lines


def run_watched(code: str, env: dict[str, str], timeout: float, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


ENDPOINT_SESSION = """
import sys

import spark_ml
import spark_ml.endpoints.cli
from spark_ml import endpoints, hosting
from serving_support import plugin_env, write_models

models = write_models(sys.argv[1])
hosting.create_model("km", models["test-kmeans"], environment=plugin_env())
hosting.create_endpoint_config("guard", [hosting.ProductionVariant("AllTraffic", "km", 1)])
endpoints.create_endpoint("guard", "guard", router_workers=1)
try:
    answer = hosting.invoke_endpoint("guard", "1,2,3,4\\n", "text/csv")
    print(answer.variant, answer.body.decode())
    # the EndpointModel's batching engine, reused without Spark on an Arrow column
    import numpy as np
    import pyarrow as pa

    from algorithms.batch import Batch
    from algorithms.builtin import load_model
    from spark_ml.endpoints.client import resolve_endpoint
    from spark_ml.hosting.http_batching import OutputSpec, ScoringPlan
    from spark_ml.hosting.serializers import deserializer, serializer

    x = np.arange(20, dtype=np.float32).reshape(5, 4) / 7
    plan = ScoringPlan(
        resolve_endpoint("guard"), 0, "features", serializer("protobuf"), deserializer("protobuf"),
        [OutputSpec("closest_cluster"), OutputSpec("distance_to_cluster")], max_rows=2, max_bytes=1 << 20,
        concurrency=2, max_retries=0, backoff=0.1, timeout=30.0, error_column=None, variant_column="variant",
    )
    (scored,) = plan.run_columns([pa.array(list(x), pa.list_(pa.float32()))])
    expected = load_model(models["test-kmeans"]).predict(Batch(x))
    for name, values in expected.items():
        np.testing.assert_allclose(scored.field(name).to_numpy(), values, rtol=1e-6)
    assert scored.field("variant").to_pylist() == ["AllTraffic"] * 5
finally:
    hosting.delete_endpoint("guard")
spark = sorted(m for m in sys.modules if m.partition(".")[0] in ("pyspark", "py4j"))
assert not spark, f"the session loaded {spark}"
"""


def test_an_endpoints_processes_never_load_pyspark(tmp_path):
    """The session also scores an Arrow column through the EndpointModel's engine (its rows in 3 requests)."""
    env, records = watched_env(tmp_path)
    with HostingHome(tmp_path / "home"):
        env["SPARK_ML_HOME"] = str(tmp_path / "home")
        out = run_watched(ENDPOINT_SESSION, env, 300, str(tmp_path / "models"))
    variant, body = out.split(" ", 1)
    prediction = json.loads(body)["predictions"][0]
    assert variant == "AllTraffic" and set(prediction) == {"closest_cluster", "distance_to_cluster"}
    problems = forbidden_imports(records)
    assert not problems, problems
    # the watch ran in every kind of process the endpoint had, not only in this test's own child
    watched = [" ".join(argv) for argv in watched_command_lines(records)]
    for module in ("spark_ml.endpoints.supervisor", "spark_ml.endpoints.router", "algorithms.serving"):
        assert any(f"-m {module} " in line for line in watched), f"no watched process ran {module}: {watched}"


ALGORITHMS_MODULES = """
import importlib, json, pkgutil, sys

import algorithms


def fail(name):
    raise ImportError(f"cannot walk {name}")


names = [m.name for m in pkgutil.walk_packages(algorithms.__path__, "algorithms.", onerror=fail)]
for name in names:
    importlib.import_module(name)
spark = sorted(m for m in sys.modules if m.partition(".")[0] in ("pyspark", "py4j"))
print(json.dumps({"modules": names, "spark": spark}))
"""


def test_every_algorithms_module_imports_without_pyspark(tmp_path):
    env, records = watched_env(tmp_path)
    report = json.loads(run_watched(ALGORITHMS_MODULES, env, 300))
    problems = forbidden_imports(records)
    assert not problems and report["spark"] == [], problems or report["spark"]
    assert {"algorithms.recordio", "algorithms.serving.server", "algorithms.builtin"} <= set(report["modules"])
