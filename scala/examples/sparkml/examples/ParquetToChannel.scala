package sparkml.examples

import org.apache.spark.ml.linalg.Vector
import org.apache.spark.ml.stat.Summarizer
import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.functions.{avg, col}
import org.apache.spark.sql.types.DoubleType

/** Converts a Parquet table to a recordIO-protobuf channel, then reads the channel back and prints a summary.
 *
 * {{{
 *   spark-submit --class sparkml.examples.ParquetToChannel spark-ml-scala_2.13-<version>.jar \
 *     <input.parquet> <output channel> [featuresCol=features] [labelCol=label] [recordsPerShard=100000] ...
 * }}}
 * Every `key=value` argument is passed to the writer as an option. The summary is one JSON line:
 * `{"records": n, "feature_dim": d, "has_label": b, "feature_mean": [...], "label_mean": m}` (label_mean is
 * null unless the label is a scalar).
 */
object ParquetToChannel {
  def main(args: Array[String]): Unit = {
    if (args.length < 2 || args.drop(2).exists(!_.contains("="))) {
      System.err.println("usage: ParquetToChannel <input.parquet> <output channel> [option=value ...]")
      sys.exit(2)
    }
    val Array(input, output) = args.take(2)
    val options = args.drop(2).map { kv => val i = kv.indexOf('='); kv.take(i) -> kv.drop(i + 1) }.toMap
    val spark = SparkSession.builder().appName("ParquetToChannel").getOrCreate()
    try {
      spark.read.parquet(input).write.format("recordio-protobuf").options(options).mode("overwrite").save(output)

      val channel = spark.read.format("recordio-protobuf").load(output)
      val hasLabel = channel.columns.contains("label")
      val stats = channel.select(Summarizer.metrics("mean", "count").summary(col("features")).alias("s")).first()
        .getStruct(0)
      val mean = stats.getAs[Vector]("mean")
      val records = stats.getAs[Long]("count")
      val scalarLabel = hasLabel && channel.schema("label").dataType == DoubleType
      val labelMean = if (scalarLabel) Some(channel.select(avg(col("label"))).first().getDouble(0)) else None
      val json = Seq(
        s""""records": $records""",
        s""""feature_dim": ${mean.size}""",
        s""""has_label": $hasLabel""",
        s""""feature_mean": ${mean.toArray.map(v => java.lang.Double.toString(v)).mkString("[", ", ", "]")}""",
        s""""label_mean": ${labelMean.map(_.toString).getOrElse("null")}""")
      println(json.mkString("{", ", ", "}"))
    } finally {
      spark.stop()
    }
  }
}
