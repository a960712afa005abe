package sparkml.recordio

import java.nio.charset.StandardCharsets
import java.util.UUID

import org.apache.hadoop.fs.{FileSystem, Path}
import org.apache.spark.TaskContext
import org.apache.spark.sql.{DataFrame, SaveMode}
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.classic
import org.apache.spark.util.SerializableConfiguration

/** Writes a DataFrame as a channel: one Spark job, then a driver-side commit.
 *
 * Tasks write their shards under `<path>/_temporary/<job>/<task attempt>/`; only the attempts whose
 * results reach the driver are committed, by renaming their shards to `part-NNNNN-<job>.pbr` (numbered in
 * partition order, so file order is row order) and writing `manifest.json` last. Any failure deletes the
 * job's temporary folder and leaves the path as it was.
 */
object ChannelWriter {
  val TemporaryDir = "_temporary"

  def write(data: DataFrame, path: String, mode: SaveMode, options: Map[String, String]): Option[ChannelManifest] = {
    val opts = WriteOptions.parse(options)
    val plan = WritePlan.resolve(data.schema, opts)
    val dataset = data.asInstanceOf[classic.Dataset[_]]
    val session = dataset.sparkSession
    val conf = session.sessionState.newHadoopConf()
    val fs = FileSystems.get(new Path(path), conf)
    val out = fs.makeQualified(new Path(path))
    val exists = fs.exists(out)
    if (exists && fs.getFileStatus(out).isFile) {
      throw new IllegalArgumentException(s"recordio-protobuf: $out is a file; a channel is written to a folder")
    }
    val existing: Option[ChannelManifest] = mode match {
      case SaveMode.ErrorIfExists if exists =>
        throw new IllegalArgumentException(s"recordio-protobuf: path $out already exists; use mode 'overwrite' " +
          "to replace it or 'append' to add shards to it")
      case SaveMode.Ignore if exists => return None
      case SaveMode.Append if exists => readExisting(fs, out)
      case _ => None
    }

    val jobId = UUID.randomUUID().toString
    val tempRoot = new Path(new Path(out, TemporaryDir), jobId)
    try {
      fs.mkdirs(tempRoot)
      val rdd = dataset.queryExecution.toRdd
      val serializableConf = new SerializableConfiguration(conf)
      val temp = tempRoot.toString
      val results = session.sparkContext.runJob(rdd,
        (ctx: TaskContext, rows: Iterator[InternalRow]) => PartitionWriter.run(plan, serializableConf, temp, ctx, rows))
      val manifest = commit(fs, out, tempRoot, jobId, mode, plan, existing, results.sortBy(_.partition).toSeq,
        replace = mode == SaveMode.Overwrite && exists)
      Some(manifest)
    } catch {
      case e: Throwable =>
        abort(fs, out, tempRoot, createdOut = !exists)
        throw clarify(e, out)
    }
  }

  private def readExisting(fs: FileSystem, out: Path): Option[ChannelManifest] = {
    val manifestPath = new Path(out, ChannelManifest.FileName)
    if (fs.exists(manifestPath)) {
      Some(ChannelManifest.parse(readText(fs, manifestPath), manifestPath.toString))
    } else {
      val data = ChannelListing.dataFiles(fs, out)
      if (data.nonEmpty) {
        throw new IllegalArgumentException(s"recordio-protobuf: cannot append to $out: it holds data files but no " +
          s"${ChannelManifest.FileName}")
      }
      None
    }
  }

  private def commit(fs: FileSystem, out: Path, tempRoot: Path, jobId: String, mode: SaveMode, plan: WritePlan,
                     existing: Option[ChannelManifest], results: Seq[PartitionResult],
                     replace: Boolean): ChannelManifest = {
    val withRows = results.filter(_.records > 0)
    val featureDim = agreed(withRows.map(r => r.partition -> r.featureDim), existing.flatMap(_.featureDim),
      s"featuresCol '${plan.featuresCol}' has vectors of differing length")
    val labelDim =
      if (plan.label.isEmpty) None
      else agreed(withRows.map(r => r.partition -> r.labelDim), existing.flatMap(_.labelDim),
        s"labelCol '${plan.labelCol.get}' has labels of differing length")
    existing.foreach { m => checkAppendable(m, plan, out) }
    val sparseRecords = withRows.map(_.sparseRecords).sum
    val total = withRows.map(_.records).sum
    val sparse =
      if (total == 0) existing.flatMap(_.sparse)
      else Some(sparseRecords > 0 || existing.flatMap(_.sparse).contains(true))

    if (replace) {
      fs.listStatus(out).filterNot(_.getPath.getName == TemporaryDir)
        .sortBy(_.getPath.getName != ChannelManifest.FileName) // the manifest goes first
        .foreach { status =>
          if (!fs.delete(status.getPath, true)) throw new java.io.IOException(s"could not delete ${status.getPath}")
        }
    }
    var index = existing.map(_.shards.size).getOrElse(0)
    val added = for (r <- results; s <- r.shards.toSeq) yield {
      val name = f"part-$index%05d-$jobId.pbr"
      index += 1
      val target = new Path(out, name)
      if (!fs.rename(new Path(s.tempPath), target)) {
        throw new java.io.IOException(s"could not move ${s.tempPath} to $target")
      }
      ShardEntry(name, Some(s.records), Some(s.bytes))
    }
    val manifest = ChannelManifest(
      contentType = ChannelManifest.RecordIOProtobuf,
      shards = existing.map(_.shards).getOrElse(Nil) ++ added,
      featureDim = featureDim,
      hasLabel = plan.label.isDefined,
      labelDim = labelDim,
      sparse = sparse,
      featureDtype = Some(plan.tensor.name))
    val staged = new Path(tempRoot, ChannelManifest.FileName)
    val stream = fs.create(staged, true)
    try stream.write(manifest.toJson.getBytes(StandardCharsets.UTF_8)) finally stream.close()
    val target = new Path(out, ChannelManifest.FileName)
    if (!fs.rename(staged, target)) {
      fs.delete(target, false)
      if (!fs.rename(staged, target)) throw new java.io.IOException(s"could not write $target")
    }
    removeTemporary(fs, out, tempRoot)
    manifest
  }

  /** The one value every partition (and an existing channel) agrees on, or a clear error. */
  private def agreed(seen: Seq[(Int, Int)], before: Option[Int], problem: String): Option[Int] = {
    val all = before.map(d => (-1, d)).toSeq ++ seen
    all.headOption.map { case (firstPart, first) =>
      all.find(_._2 != first).foreach { case (part, other) =>
        val a = if (firstPart < 0) "the existing channel has" else s"partition $firstPart has"
        throw new RecordIOWriteException(s"recordio-protobuf: $problem: $a $first values, partition $part has $other")
      }
      first
    }
  }

  private def checkAppendable(m: ChannelManifest, plan: WritePlan, out: Path): Unit = {
    def fail(what: String) = throw new IllegalArgumentException(s"recordio-protobuf: cannot append to $out: $what")
    if (!m.contentType.toLowerCase.startsWith(ChannelManifest.RecordIOProtobuf)) fail(s"it holds ${m.contentType}")
    if (m.shards.nonEmpty && m.hasLabel != plan.label.isDefined) {
      fail(if (m.hasLabel) "its records have labels and this write has no labelCol" else "its records have no labels")
    }
    m.featureDtype.filter(_ != plan.tensor.name).foreach { d => fail(s"it holds $d tensors, this write ${plan.tensor.name}") }
  }

  private def abort(fs: FileSystem, out: Path, tempRoot: Path, createdOut: Boolean): Unit = {
    try {
      fs.delete(tempRoot, true)
      removeTemporary(fs, out, tempRoot)
      if (createdOut && fs.exists(out) && fs.listStatus(out).isEmpty) fs.delete(out, false)
    } catch { case _: Exception => }
  }

  private def removeTemporary(fs: FileSystem, out: Path, tempRoot: Path): Unit = {
    fs.delete(tempRoot, true)
    val temporary = new Path(out, TemporaryDir)
    if (fs.exists(temporary) && fs.listStatus(temporary).isEmpty) fs.delete(temporary, false)
  }

  /** A bad-input failure inside a task surfaces as its own clear message, not a stage-failure dump. */
  private def clarify(e: Throwable, out: Path): Throwable = {
    var cause: Throwable = e
    while (cause != null) {
      cause match {
        case bad: RecordIOWriteException =>
          return new RecordIOWriteException(s"${bad.getMessage} (nothing was written to $out)")
        case _ => cause = if (cause.getCause eq cause) null else cause.getCause
      }
    }
    e
  }

  private[recordio] def readText(fs: FileSystem, path: Path): String = {
    val in = fs.open(path)
    try new String(in.readAllBytes(), StandardCharsets.UTF_8) finally in.close()
  }
}
