package sparkml.recordio

import java.io.BufferedInputStream
import java.util

import scala.jdk.CollectionConverters._

import org.apache.hadoop.conf.Configuration
import org.apache.hadoop.fs.Path
import org.apache.spark.broadcast.Broadcast
import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow
import org.apache.spark.sql.classic
import org.apache.spark.sql.connector.catalog.{SupportsRead, Table, TableCapability}
import org.apache.spark.sql.connector.read._
import org.apache.spark.sql.types.{DoubleType, StructType}
import org.apache.spark.sql.util.CaseInsensitiveStringMap
import org.apache.spark.util.SerializableConfiguration

/** A channel (or several, or loose `.pbr` files) as a read-only DataSource V2 table. */
final class ChannelTable(tableSchema: StructType, paths: Seq[String]) extends Table with SupportsRead {
  override def name(): String = s"recordio-protobuf [${paths.mkString(", ")}]"

  override def schema(): StructType = tableSchema

  override def capabilities(): util.Set[TableCapability] = Set(TableCapability.BATCH_READ).asJava

  override def newScanBuilder(options: CaseInsensitiveStringMap): ScanBuilder = () => {
    if (paths.isEmpty) throw new IllegalArgumentException("recordio-protobuf: no path given; use load(path)")
    val session = SparkSession.active.asInstanceOf[classic.SparkSession]
    val conf = session.sessionState.newHadoopConf()
    val layout = ChannelListing.open(paths, conf)
    if (!sameShape(layout.schema, tableSchema)) {
      throw new IllegalArgumentException(s"recordio-protobuf: the records of ${paths.mkString(", ")} have schema " +
        s"${layout.schema.simpleString}, not ${tableSchema.simpleString}; this source takes no user-specified schema")
    }
    new ChannelScan(layout, session.sparkContext.broadcast(new SerializableConfiguration(conf)))
  }

  private def sameShape(a: StructType, b: StructType): Boolean =
    a.fields.map(f => (f.name, f.dataType)).sameElements(b.fields.map(f => (f.name, f.dataType)))
}

final case class ShardPartition(shard: ShardFile) extends InputPartition

/** One input partition per shard, read in the channel's order. */
final class ChannelScan(layout: ChannelLayout, conf: Broadcast[SerializableConfiguration]) extends Scan with Batch {
  override def readSchema(): StructType = layout.schema

  override def description(): String = s"recordio-protobuf: ${layout.shards.size} shard(s)"

  override def toBatch: Batch = this

  override def planInputPartitions(): Array[InputPartition] = layout.shards.map(ShardPartition(_)).toArray

  override def createReaderFactory(): PartitionReaderFactory =
    ShardReaderFactory(conf, layout.featureDim, layout.hasLabel, layout.schema.fields.length > 1 &&
      layout.schema.fields(1).dataType == DoubleType, layout.labelDim)
}

final case class ShardReaderFactory(conf: Broadcast[SerializableConfiguration], featureDim: Option[Int],
                                    hasLabel: Boolean, scalarLabel: Boolean, labelDim: Option[Int])
  extends PartitionReaderFactory {
  override def createReader(partition: InputPartition): PartitionReader[InternalRow] =
    new ShardReader(partition.asInstanceOf[ShardPartition].shard, conf.value.value, featureDim, hasLabel,
      scalarLabel, labelDim)
}

/** Streams one shard's records as rows of `features` (a Vector, sparse stays sparse) and `label`. */
final class ShardReader(shard: ShardFile, conf: Configuration, featureDim: Option[Int], hasLabel: Boolean,
                        scalarLabel: Boolean, labelDim: Option[Int]) extends PartitionReader[InternalRow] {
  private val path = new Path(shard.path)
  private val in = new BufferedInputStream(FileSystems.get(path, conf).open(path), 1 << 20)
  private val frames = new FrameReader(in, shard.path)
  private val decoder = new RecordDecoder(shard.path)
  private var expectedDim = featureDim
  private var expectedLabel = labelDim
  private var index = 0L
  private var current: InternalRow = _

  override def next(): Boolean = {
    val n = frames.next()
    if (n < 0) {
      if (shard.records >= 0 && index != shard.records) {
        throw new RecordFormatException(s"${shard.path}: holds $index records but the channel's " +
          s"${ChannelManifest.FileName} says ${shard.records}")
      }
      return false
    }
    decoder.decode(frames.payload, n, index, frames.recordOffset)
    val vector = RowBuilder.features(decoder, expectedDim)
    if (expectedDim.isEmpty) expectedDim = Some(vector.size)
    val labels = RowBuilder.labelCount(decoder)
    val row = new GenericInternalRow(if (hasLabel) 2 else 1)
    row.update(0, vector.row)
    if (hasLabel) {
      if (labels < 0) decoder.fail("lacks a label but the channel's records have one")
      expectedLabel.foreach { k =>
        if (labels != k) decoder.fail(s"has a label of $labels values but the channel's labels have $k")
      }
      if (expectedLabel.isEmpty) expectedLabel = Some(labels)
      if (scalarLabel) {
        if (labels != 1) decoder.fail(s"has a label of $labels values where one value was expected")
        row.setDouble(1, decoder.label.values(0))
      } else {
        row.update(1, RowBuilder.denseVector(RowBuilder.labelValues(decoder), labels))
      }
    } else if (labels >= 0) {
      decoder.fail("has a label but the channel's records have none")
    }
    index += 1
    current = row
    true
  }

  override def get(): InternalRow = current

  override def close(): Unit = in.close()
}
