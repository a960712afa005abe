package sparkml.recordio

import com.fasterxml.jackson.databind.{JsonNode, ObjectMapper}

private[recordio] object Json {
  val mapper = new ObjectMapper()
}

final case class ShardEntry(path: String, records: Option[Long], bytes: Option[Long])

/** A channel's `manifest.json`, the same document `algorithms.channel.Manifest` reads and writes.
 *
 * `toJson` renders it exactly as Python's `Manifest.to_json` (`json.dumps(doc, indent=1)`), so either side
 * can rewrite the other's manifest without a diff.
 */
final case class ChannelManifest(
    contentType: String,
    shards: Seq[ShardEntry],
    featureDim: Option[Int],
    hasLabel: Boolean,
    labelDim: Option[Int],
    sparse: Option[Boolean],
    featureDtype: Option[String]) {

  def numRecords: Option[Long] =
    if (shards.exists(_.records.isEmpty)) None else Some(shards.flatMap(_.records).sum)

  def toJson: String = {
    val sb = new StringBuilder
    def num(v: Option[Any]): String = v.map(_.toString).getOrElse("null")
    val fields = Seq(
      "format" -> ChannelManifest.quote(ChannelManifest.Format),
      "version" -> ChannelManifest.Version.toString,
      "content_type" -> ChannelManifest.quote(contentType),
      "num_records" -> num(numRecords),
      "feature_dim" -> num(featureDim),
      "has_label" -> hasLabel.toString,
      "label_dim" -> num(labelDim),
      "sparse" -> num(sparse),
      "feature_dtype" -> featureDtype.map(ChannelManifest.quote).getOrElse("null"))
    sb.append("{\n")
    fields.foreach { case (k, v) => sb.append(" ").append(ChannelManifest.quote(k)).append(": ").append(v).append(",\n") }
    sb.append(" \"shards\": ")
    if (shards.isEmpty) sb.append("[]") else {
      sb.append("[\n")
      shards.zipWithIndex.foreach { case (s, i) =>
        sb.append("  {\n")
        sb.append("   \"path\": ").append(ChannelManifest.quote(s.path)).append(",\n")
        sb.append("   \"records\": ").append(num(s.records)).append(",\n")
        sb.append("   \"bytes\": ").append(num(s.bytes)).append("\n")
        sb.append("  }").append(if (i + 1 < shards.size) ",\n" else "\n")
      }
      sb.append(" ]")
    }
    sb.append("\n}")
    sb.toString
  }
}

object ChannelManifest {
  val FileName = "manifest.json"
  val Format = "spark_ml.channel"
  val Version = 1
  val RecordIOProtobuf = "application/x-recordio-protobuf"

  def parse(text: String, source: String): ChannelManifest = {
    def fail(problem: String) = new IllegalArgumentException(s"$source: not a valid channel manifest: $problem")
    val doc = try Json.mapper.readTree(text) catch {
      case e: Exception => throw fail(e.getMessage.linesIterator.take(1).mkString)
    }
    if (doc == null || !doc.isObject) throw fail("not a JSON object")
    val format = Option(doc.get("format")).map(_.asText).orNull
    if (format != Format) throw fail(s"format is ${Option(format).map("'" + _ + "'").getOrElse("None")}, not '$Format'")
    val version = Option(doc.get("version")).map(_.asInt(0)).getOrElse(0)
    if (version > Version) throw fail(s"version $version is newer than this library understands ($Version)")
    def optInt(node: JsonNode, key: String): Option[Long] =
      Option(node.get(key)).filterNot(_.isNull).map { v =>
        if (!v.canConvertToLong) throw fail(s"$key is not an integer")
        v.asLong
      }
    val shardsNode = doc.get("shards")
    if (shardsNode == null || !shardsNode.isArray) throw fail("shards is missing")
    val shards = (0 until shardsNode.size).map { i =>
      val s = shardsNode.get(i)
      val path = Option(s.get("path")).filter(_.isTextual).map(_.asText).getOrElse(throw fail(s"shard $i has no path"))
      ShardEntry(path, optInt(s, "records"), optInt(s, "bytes"))
    }
    val contentType = Option(doc.get("content_type")).filter(_.isTextual).map(_.asText)
      .getOrElse(throw fail("content_type is missing"))
    ChannelManifest(
      contentType = contentType,
      shards = shards,
      featureDim = optInt(doc, "feature_dim").map(_.toInt),
      hasLabel = Option(doc.get("has_label")).exists(_.asBoolean(false)),
      labelDim = optInt(doc, "label_dim").map(_.toInt),
      sparse = Option(doc.get("sparse")).filterNot(_.isNull).map(_.asBoolean),
      featureDtype = Option(doc.get("feature_dtype")).filterNot(_.isNull).map(_.asText))
  }

  /** A JSON string as Python's `json.dumps` writes it (ASCII only). */
  def quote(s: String): String = {
    val sb = new StringBuilder("\"")
    s.foreach {
      case '"' => sb.append("\\\"")
      case '\\' => sb.append("\\\\")
      case '\n' => sb.append("\\n")
      case '\r' => sb.append("\\r")
      case '\t' => sb.append("\\t")
      case '\b' => sb.append("\\b")
      case '\f' => sb.append("\\f")
      case c if c < 0x20 || c > 0x7E => sb.append(f"\\u${c.toInt}%04x")
      case c => sb.append(c)
    }
    sb.append('"').toString
  }
}
