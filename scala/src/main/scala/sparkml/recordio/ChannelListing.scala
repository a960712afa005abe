package sparkml.recordio

import java.io.BufferedInputStream

import org.apache.hadoop.conf.Configuration
import org.apache.hadoop.fs.{FileSystem, Path}
import org.apache.spark.ml.linalg.SQLDataTypes
import org.apache.spark.sql.types.{DoubleType, StructField, StructType}

/** A shard to read; `records` is what the manifest promises (-1 when there is no manifest). */
final case class ShardFile(path: String, records: Long)

/** What a read will see: the shards in order and the shape of their records. */
final case class ChannelLayout(shards: Seq[ShardFile], featureDim: Option[Int], hasLabel: Boolean,
                               labelDim: Option[Int]) {
  /** `features` (Vector) and, when the records carry labels, `label`: a double for one value, else a Vector. */
  def schema: StructType = {
    val features = StructField("features", SQLDataTypes.VectorType, nullable = false)
    if (!hasLabel) StructType(Seq(features))
    else {
      val labelType = if (labelDim.forall(_ == 1)) DoubleType else SQLDataTypes.VectorType
      StructType(Seq(features, StructField("label", labelType, nullable = false)))
    }
  }
}

object ChannelListing {
  /** Lists the shards of channel folders (by their manifest, else their data files) and single files. */
  def open(paths: Seq[String], conf: Configuration): ChannelLayout = {
    val parts = paths.map(p => one(p, conf))
    val shards = parts.flatMap(_._1)
    val manifests = parts.flatMap(_._2)
    if (manifests.size == parts.size) {
      val withRecords = manifests.filter(_.shards.nonEmpty)
      val dims = manifests.flatMap(_.featureDim).distinct
      val labels = withRecords.map(_.hasLabel).distinct
      val labelDims = manifests.flatMap(_.labelDim).distinct
      if (dims.size > 1 || labels.size > 1 || labelDims.size > 1) {
        throw new IllegalArgumentException(s"recordio-protobuf: the channels ${paths.mkString(", ")} hold " +
          "records of different shapes (feature_dim or labels differ between their manifests)")
      }
      val hasLabel = labels.headOption.getOrElse(manifests.exists(_.hasLabel))
      ChannelLayout(shards, dims.headOption, hasLabel, labelDims.headOption)
    } else {
      peek(shards, conf) match {
        case Some(first) => first.copy(shards = shards)
        case None =>
          ChannelLayout(shards, manifests.flatMap(_.featureDim).headOption, manifests.exists(_.hasLabel),
            manifests.flatMap(_.labelDim).headOption)
      }
    }
  }

  private def one(path: String, conf: Configuration): (Seq[ShardFile], Option[ChannelManifest]) = {
    val raw = new Path(path)
    val fs = FileSystems.get(raw, conf)
    val qualified = fs.makeQualified(raw)
    if (!fs.exists(qualified)) throw new IllegalArgumentException(s"recordio-protobuf: path $qualified does not exist")
    val status = fs.getFileStatus(qualified)
    if (status.isFile) return (Seq(ShardFile(qualified.toString, -1)), None)
    val manifestPath = new Path(qualified, ChannelManifest.FileName)
    if (fs.exists(manifestPath)) {
      val m = ChannelManifest.parse(ChannelWriter.readText(fs, manifestPath), manifestPath.toString)
      if (!m.contentType.split(";")(0).trim.equalsIgnoreCase(ChannelManifest.RecordIOProtobuf)) {
        throw new IllegalArgumentException(s"recordio-protobuf: channel $qualified holds ${m.contentType}, not " +
          ChannelManifest.RecordIOProtobuf)
      }
      (m.shards.map(s => ShardFile(new Path(qualified, s.path).toString, s.records.getOrElse(-1L))), Some(m))
    } else {
      val files = dataFiles(fs, qualified)
      if (files.isEmpty) {
        throw new IllegalArgumentException(s"recordio-protobuf: channel $qualified has no ${ChannelManifest.FileName} " +
          "and no data files")
      }
      (files.map(f => ShardFile(f.toString, -1)), None)
    }
  }

  /** Data files of a folder, sorted by name; names starting with `_` or `.` are bookkeeping, not data. */
  def dataFiles(fs: FileSystem, dir: Path): Seq[Path] =
    fs.listStatus(dir).toSeq
      .filter(_.isFile)
      .map(_.getPath)
      .filterNot { p =>
        val n = p.getName
        n.startsWith("_") || n.startsWith(".") || n == ChannelManifest.FileName || n.endsWith(".crc") ||
          n.endsWith(".tmp")
      }
      .sortBy(_.getName)

  /** The shape of the first record found, for folders written without a manifest. */
  private def peek(shards: Seq[ShardFile], conf: Configuration): Option[ChannelLayout] = {
    shards.iterator.map { shard =>
      val path = new Path(shard.path)
      val in = new BufferedInputStream(FileSystems.get(path, conf).open(path), 1 << 16)
      try {
        val reader = new FrameReader(in, shard.path)
        val n = reader.next()
        if (n < 0) None
        else {
          val decoder = new RecordDecoder(shard.path)
          decoder.decode(reader.payload, n, 0, reader.recordOffset)
          val vector = RowBuilder.features(decoder, None)
          val labelDim = RowBuilder.labelCount(decoder)
          Some(ChannelLayout(Nil, Some(vector.size), labelDim >= 0, if (labelDim >= 0) Some(labelDim) else None))
        }
      } finally in.close()
    }.collectFirst { case Some(layout) => layout }
  }
}
