"""The spark-ml Scala jar (JVM data source, ArtifactModel, EndpointModel), for ``spark.jars``."""

from __future__ import annotations

import glob
import os


def jar_path() -> str:
    """The jar to put on the classpath: ``$SPARK_ML_JAR``, or the one ``make scala`` built in this checkout.

    ``SparkSession.builder.config("spark.jars", spark_ml.jar_path())`` makes ``format("recordio-protobuf")``
    (and so ``to_channel`` and every ``fit``) use the JVM writer.
    """
    explicit = os.environ.get("SPARK_ML_JAR")
    if explicit:
        if not os.path.isfile(explicit):
            raise FileNotFoundError(f"SPARK_ML_JAR={explicit} is not a file")
        return explicit
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = sorted(glob.glob(os.path.join(root, "scala", "target", "spark-ml-scala_*.jar")))
    if not found:
        raise FileNotFoundError("no spark-ml Scala jar: run `make scala` in the spark_ml checkout, or set SPARK_ML_JAR")
    return found[-1]
