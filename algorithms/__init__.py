"""Spark-free runtime of spark_ml: formats, built-in algorithms, the training contract and the model server.

Nothing here imports pyspark: a training worker or an endpoint instance may run where Spark is not.
"""

__version__ = "0.1.0"
