package sparkml.recordio

import java.util.Locale

import org.apache.spark.network.util.JavaUtils

/** What a write was asked to do; every option is checked on the driver before any task runs. */
final case class WriteOptions(
    featuresCol: String,
    labelCol: Option[String],
    recordsPerShard: Long,
    shardSizeBytes: Long,
    tensor: TensorType,
    allowNonFinite: Boolean)

object WriteOptions {
  val Known: Seq[String] = Seq("featuresCol", "labelCol", "recordsPerShard", "shardSizeBytes", "dtype",
    "allowNonFinite")
  /** Keys the DataFrameWriter itself may pass. */
  private val Internal = Set("path")

  def parse(options: Map[String, String]): WriteOptions = {
    val opts = Options.normalize(options, Known, Internal, "write")
    if (opts.contains("__partition_columns")) {
      throw new IllegalArgumentException("recordio-protobuf: partitionBy is not supported; a channel is a flat " +
        "folder of shards")
    }
    val records = opts.get("recordspershard").map(Options.positiveLong("recordsPerShard", _)).getOrElse(0L)
    val bytes = opts.get("shardsizebytes").map(Options.byteSize("shardSizeBytes", _)).getOrElse(0L)
    if (records > 0 && bytes > 0) {
      throw new IllegalArgumentException("recordio-protobuf: set recordsPerShard or shardSizeBytes, not both")
    }
    val features = opts.getOrElse("featurescol", "features")
    if (features.isEmpty) throw new IllegalArgumentException("recordio-protobuf: featuresCol must not be empty")
    val label = opts.get("labelcol").filter(_.nonEmpty)
    if (label.contains(features)) {
      throw new IllegalArgumentException(s"recordio-protobuf: labelCol and featuresCol are both '$features'")
    }
    WriteOptions(
      featuresCol = features,
      labelCol = label,
      recordsPerShard = records,
      shardSizeBytes = bytes,
      tensor = opts.get("dtype").map(TensorType.parse).getOrElse(TensorType.Float32),
      allowNonFinite = opts.get("allownonfinite").exists(Options.boolean("allowNonFinite", _)))
  }
}

object ReadOptions {
  val Known: Seq[String] = Seq("path", "paths")

  /** The paths a read names: `load(path)` passes `path`, `load(p1, p2, …)` passes a JSON array in `paths`. */
  def paths(options: Map[String, String]): Seq[String] = {
    val opts = Options.normalize(options, Known, Set.empty, "read")
    val many = opts.get("paths").toSeq.flatMap(parseJsonArray)
    val all = opts.get("path").toSeq ++ many
    if (all.isEmpty) throw new IllegalArgumentException("recordio-protobuf: no path given; use load(path)")
    all
  }

  private def parseJsonArray(text: String): Seq[String] = {
    val node = Json.mapper.readTree(text)
    if (node == null || !node.isArray) {
      throw new IllegalArgumentException(s"recordio-protobuf: option paths must be a JSON array, got $text")
    }
    (0 until node.size).map(i => node.get(i).asText)
  }
}

private[recordio] object Options {
  def normalize(options: Map[String, String], known: Seq[String], internal: Set[String],
                what: String): Map[String, String] = {
    val lower = known.map(_.toLowerCase(Locale.ROOT)).toSet ++ internal ++ Set("__partition_columns")
    val unknown = options.keys.filterNot(k => lower.contains(k.toLowerCase(Locale.ROOT))).toSeq.sorted
    if (unknown.nonEmpty) {
      throw new IllegalArgumentException(
        s"recordio-protobuf: unknown $what option${if (unknown.size > 1) "s" else ""} " +
          s"${unknown.map("'" + _ + "'").mkString(", ")}; known options: ${known.mkString(", ")}")
    }
    options.map { case (k, v) => k.toLowerCase(Locale.ROOT) -> v }
  }

  def positiveLong(name: String, text: String): Long = {
    val v = try text.trim.toLong catch {
      case _: NumberFormatException =>
        throw new IllegalArgumentException(s"recordio-protobuf: $name must be a positive integer, got '$text'")
    }
    if (v < 1) throw new IllegalArgumentException(s"recordio-protobuf: $name must be at least 1, got $v")
    v
  }

  def byteSize(name: String, text: String): Long = {
    val v = try JavaUtils.byteStringAsBytes(text.trim) catch {
      case _: NumberFormatException =>
        throw new IllegalArgumentException(
          s"recordio-protobuf: $name must be a byte count such as 67108864 or 64m, got '$text'")
    }
    if (v < 1) throw new IllegalArgumentException(s"recordio-protobuf: $name must be at least 1 byte, got $text")
    v
  }

  def boolean(name: String, text: String): Boolean = text.trim.toLowerCase(Locale.ROOT) match {
    case "true" => true
    case "false" => false
    case _ => throw new IllegalArgumentException(s"recordio-protobuf: $name must be true or false, got '$text'")
  }
}
