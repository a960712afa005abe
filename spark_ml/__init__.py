"""spark_ml: SageMaker's built-in algorithms and hosting on your own Spark cluster."""
