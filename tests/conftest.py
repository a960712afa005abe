"""Shared fixtures: one local[2] Spark session for the whole run; an isolated SPARK_ML_HOME per test."""

import os
import sys

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("spark_ml-tests")
        .config("spark.driver.memory", "3g")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture
def spark_ml_home(tmp_path, monkeypatch):
    home = tmp_path / "spark_ml_home"
    monkeypatch.setenv("SPARK_ML_HOME", str(home))
    return home


_FUZZ_COUNTS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def fuzz_counts(request) -> dict:
    """Inputs tried per fuzz target (tests/test_fuzz.py), summed over the run and printed at its end."""
    from collections import Counter

    return request.config.stash.setdefault(_FUZZ_COUNTS, Counter())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = config.stash.get(_FUZZ_COUNTS, None)
    if counts:
        per_target = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        terminalreporter.write_line(f"fuzz: {sum(counts.values())} inputs tried ({per_target})")
