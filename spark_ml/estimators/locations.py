"""Default places for models and staged channels: local under SPARK_ML_HOME, shared storage on clusters."""

from __future__ import annotations

import logging

from algorithms import fs as fsutil

from ..home import home_dir, local_model_store
from ..runner.capacity import inspect

log = logging.getLogger("spark_ml")


def _shared_root(spark) -> str | None:
    """A folder on the warehouse's filesystem when it is not local (HDFS, S3, …), for cluster defaults."""
    warehouse = spark.conf.get("spark.sql.warehouse.dir", None)
    if warehouse and "://" in warehouse and not warehouse.startswith("file:"):
        return fsutil.join(warehouse.rstrip("/").rsplit("/", 1)[0], "spark_ml")
    return None


def default_model_store(spark) -> str:
    if inspect(spark).mode == "cluster":
        shared = _shared_root(spark)
        if shared:
            return fsutil.join(shared, "models")
        log.warning("modelStore is not set and the warehouse is local: rank 0 will write the model on its "
                    "executor's disk; set modelStore to a shared URI (hdfs://, s3://)")
    return local_model_store()


def default_staging_dir(spark) -> str:
    if inspect(spark).mode == "cluster":
        shared = _shared_root(spark)
        if shared:
            return fsutil.join(shared, "staging")
        log.warning("stagingDir is not set and the warehouse is local: executors may not see each other's "
                    "shards; set stagingDir to a shared URI (hdfs://, s3://)")
    return str(home_dir() / "staging")
