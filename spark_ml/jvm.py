"""The spark-ml Scala jar (JVM data source, ArtifactModel, EndpointModel), for ``spark.jars``."""

from __future__ import annotations

import glob
import os


def jar_path() -> str:
    """The jar to put on the classpath: ``$SPARK_ML_JAR``, the one ``make scala`` built in this checkout, or the one
    a wheel carries (``make wheel``).

    ``SparkSession.builder.config("spark.jars", spark_ml.jar_path())`` makes ``format("recordio-protobuf")``
    (and so ``to_channel`` and every ``fit``) use the JVM writer.
    """
    explicit = os.environ.get("SPARK_ML_JAR")
    if explicit:
        if not os.path.isfile(explicit):
            raise FileNotFoundError(f"SPARK_ML_JAR={explicit} is not a file")
        return explicit
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(os.path.dirname(here), "scala", "target"), os.path.join(here, "jars")):
        found = sorted(glob.glob(os.path.join(folder, "spark-ml-scala_*.jar")))
        if found:
            return found[-1]
    raise FileNotFoundError("no spark-ml Scala jar: install a wheel built by `make wheel`, run `make scala` in the "
                            "spark_ml checkout, or set SPARK_ML_JAR")
