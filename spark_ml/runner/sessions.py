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
