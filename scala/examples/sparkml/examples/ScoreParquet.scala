package sparkml.examples

import org.apache.spark.ml.linalg.Vector
import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.functions.col

import sparkml.endpoint.EndpointModel
import sparkml.scoring.ArtifactModel

/** Scores a Parquet table twice: natively with a model artifact the Python side trained, and through an
 * inference endpoint serving a model; writes both sets of predictions side by side.
 *
 * {{{
 *   spark-submit --class sparkml.examples.ScoreParquet spark-ml-scala_2.13-<version>.jar \
 *     <input.parquet> <model artifact or saved model> <endpoint URL> <output.parquet> \
 *     [featuresCol=features] [serializer=protobuf] [deserializer=protobuf] [concurrency=4] [maxBatchRows=10000]
 * }}}
 * The endpoint's bearer token, if it needs one, comes from the environment variable `SPARK_ML_ENDPOINT_TOKEN`.
 * The output holds the input columns, `native_<output>` (from the artifact) and `<output>` (from the endpoint).
 * The summary is one JSON line: `{"rows": n, "algorithm": "...", "outputs": [...], "max_abs_difference": d}`,
 * the largest difference between the two scorings over every output value.
 */
object ScoreParquet {
  def main(args: Array[String]): Unit = {
    if (args.length < 4 || args.drop(4).exists(!_.contains("="))) {
      System.err.println("usage: ScoreParquet <input.parquet> <model> <endpoint URL> <output.parquet> [key=value ...]")
      sys.exit(2)
    }
    val Array(input, modelPath, url, output) = args.take(4)
    val settings = args.drop(4).map { kv => val i = kv.indexOf('='); kv.take(i) -> kv.drop(i + 1) }.toMap
    val featuresCol = settings.getOrElse("featuresCol", "features")
    val spark = SparkSession.builder().appName("ScoreParquet").getOrCreate()
    try {
      val data = spark.read.parquet(input)
      val model = ArtifactModel.load(modelPath).setFeaturesCol(featuresCol)
      val names = model.outputNames.toSeq
      val native = names.foldLeft(model.transform(data)) { (df, name) => df.withColumnRenamed(name, s"native_$name") }

      val endpoint = new EndpointModel()
        .setEndpoint(url)
        .setFeaturesCol(featuresCol)
        .setOutputs(model.outputs)
        .setSerializer(settings.getOrElse("serializer", "protobuf"))
        .setDeserializer(settings.getOrElse("deserializer", "protobuf"))
        .setConcurrency(settings.getOrElse("concurrency", "4").toInt)
        .setMaxBatchRows(settings.getOrElse("maxBatchRows", "10000").toInt)
      sys.env.get("SPARK_ML_ENDPOINT_TOKEN").foreach(endpoint.setAuthToken)
      val both = endpoint.transform(native).cache()
      both.write.mode("overwrite").parquet(output)

      val pairs = both.select(names.flatMap(n => Seq(col(s"native_$n"), col(n))): _*).collect()
      val difference = pairs.iterator.flatMap { row =>
        names.indices.iterator.flatMap(k => values(row.get(2 * k)).zip(values(row.get(2 * k + 1))))
      }.map { case (a, b) => math.abs(a - b) }.foldLeft(0.0)(math.max)
      println(Seq(
        s""""rows": ${pairs.length}""",
        s""""algorithm": "${model.algorithm}"""",
        s""""outputs": ${names.map("\"" + _ + "\"").mkString("[", ", ", "]")}""",
        s""""max_abs_difference": $difference""").mkString("{", ", ", "}"))
    } finally {
      spark.stop()
    }
  }

  private def values(v: Any): Seq[Double] = v match {
    case d: java.lang.Double => Seq(d.doubleValue)
    case vec: Vector => vec.toArray.toSeq
    case null => Seq(Double.NaN)
    case other => throw new IllegalStateException(s"unexpected output value $other")
  }
}
