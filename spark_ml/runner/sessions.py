"""Facts about the Spark session the runner needs: classic or Connect, and how executors reach the driver."""

from __future__ import annotations

import socket


def is_connect(spark) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def driver_host_for_workers(spark, cap) -> str | None:
    """An address of this process that executors can reach, or None when there is none to offer.

    Local masters run executors on this machine: loopback. A classic driver offers ``spark.driver.host``.
    A Spark Connect client may sit outside the cluster, so it offers nothing for remote masters.
    """
    if cap.mode in ("local", "local-cluster"):
        return "127.0.0.1"
    if is_connect(spark):
        return None
    host = spark.conf.get("spark.driver.host", None)
    if not host:
        return None
    try:
        return socket.gethostbyname(host)
    except OSError:
        return None


class _ConnectTags:
    """Spark Connect: session operation tags (``interruptTag`` cancels the tagged operations)."""

    def __init__(self, spark):
        self.spark = spark

    def add(self, tag: str) -> None:
        self.spark.addTag(tag)

    def remove(self, tag: str) -> None:
        self.spark.removeTag(tag)

    def cancel(self, tag: str) -> None:
        self.spark.interruptTag(tag)


class _ClassicTags(_ConnectTags):
    """Classic sessions: SparkContext job tags, which cancel the jobs of a running action reliably."""

    def add(self, tag: str) -> None:
        self.spark.sparkContext.addJobTag(tag)

    def remove(self, tag: str) -> None:
        self.spark.sparkContext.removeJobTag(tag)

    def cancel(self, tag: str) -> None:
        self.spark.sparkContext.cancelJobsWithTag(tag)


def job_tags(spark):
    """How to tag and cancel the runner's Spark job in this kind of session."""
    return _ConnectTags(spark) if is_connect(spark) else _ClassicTags(spark)
