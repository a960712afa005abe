package sparkml.recordio

import java.io.OutputStream

import scala.collection.mutable.ArrayBuffer

import org.apache.hadoop.conf.Configuration
import org.apache.hadoop.fs.{FileSystem, LocalFileSystem, Path}
import org.apache.spark.TaskContext
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.util.ArrayData
import org.apache.spark.sql.types._
import org.apache.spark.util.SerializableConfiguration

/** Bad input found while writing (a null, a length mismatch, a non-finite value): the message says where. */
class RecordIOWriteException(message: String) extends IllegalArgumentException(message)

final case class ShardResult(tempPath: String, records: Long, bytes: Long)

/** What one write task produced: its shards (still under `_temporary`) and what it saw of the data. */
final case class PartitionResult(
    partition: Int,
    shards: Array[ShardResult],
    records: Long,
    featureDim: Int,
    labelDim: Int,
    sparseRecords: Long)

private[recordio] object FileSystems {
  /** The file system of `path`; for local paths the raw one, so no `.crc` side files are written. */
  def get(path: Path, conf: Configuration): FileSystem = path.getFileSystem(conf) match {
    case local: LocalFileSystem => local.getRawFileSystem
    case fs => fs
  }
}

object PartitionWriter {
  /** The task body: write this partition's rows as shards in a folder of its own under `tempRoot`. */
  def run(plan: WritePlan, conf: SerializableConfiguration, tempRoot: String, ctx: TaskContext,
          rows: Iterator[InternalRow]): PartitionResult = {
    val dir = new Path(tempRoot, f"p${ctx.partitionId()}%05d-a${ctx.attemptNumber()}-${ctx.taskAttemptId()}")
    val fs = FileSystems.get(dir, conf.value)
    new PartitionWriter(plan, fs, dir, ctx.partitionId()).write(rows)
  }

  private val BlockBytes = 1 << 20
}

/** Encodes one partition's rows straight from Spark's internal rows into recordIO-protobuf shards.
 *
 * Each record is laid out exactly as `algorithms.tensor_codec` lays it out: the payload length is computed
 * first, then the header, the protobuf fields and the values are written into a reusable block that is
 * flushed to the shard file in large writes. Dense values are read from the `UnsafeArrayData` in place.
 */
final class PartitionWriter(plan: WritePlan, fs: FileSystem, dir: Path, partition: Int) {
  import RecordIO._

  private val block = new OutputBlock(PartitionWriter.BlockBytes)
  private val tensor = plan.tensor
  private val itemSize = tensor.itemSize
  private val featuresOrdinal = plan.featuresOrdinal
  private val vectorFeatures = plan.features == FeatureSource.Vector
  private val (floatFeatures, nullableElements) = plan.features match {
    case FeatureSource.FloatArray(isFloat, nulls) => (isFloat, nulls)
    case _ => (false, false)
  }
  private val hasLabel = plan.label.isDefined
  private val labelName = plan.labelCol.getOrElse("")

  private var out: OutputStream = _
  private var shardPath: Path = _
  private var shardRecords = 0L
  private var shardBytes = 0L
  private var shardSeq = 0
  private val shards = ArrayBuffer.empty[ShardResult]

  private var row = 0L
  private var dim = -1
  private var labelDim = -1
  private var sparseRecords = 0L
  private var labelValues = new Array[Double](8)
  private var labelCount = 0

  def write(rows: Iterator[InternalRow]): PartitionResult = {
    try {
      while (rows.hasNext) {
        writeRow(rows.next())
        row += 1
      }
      closeShard()
      PartitionResult(partition, shards.toArray, row, dim, labelDim, sparseRecords)
    } catch {
      case e: Throwable =>
        abandon()
        throw e
    }
  }

  private def where: String = s"row $row of partition $partition"

  private def bad(message: String): Nothing = throw new RecordIOWriteException(s"recordio-protobuf: $message")

  private def writeRow(r: InternalRow): Unit = {
    // Worded as the Python data source words it (spark_ml.arrow_vectors + datasource).
    if (r.isNullAt(featuresOrdinal)) {
      bad(s"column ${Quote.py(plan.featuresCol)} is null at row $row (rows counted within partition $partition)")
    }
    var values: ArrayData = null
    var indices: ArrayData = null
    var size = 0
    var keyBytes = 0
    if (vectorFeatures) {
      val v = r.getStruct(featuresOrdinal, 4)
      values = v.getArray(3)
      if (v.getByte(0) == 1) {
        size = values.numElements()
      } else {
        size = v.getInt(1)
        indices = v.getArray(2)
        keyBytes = checkedKeyBytes(indices, values.numElements(), size)
      }
    } else {
      values = r.getArray(featuresOrdinal)
      size = values.numElements()
      if (nullableElements) checkNoNulls(values, s"featuresCol '${plan.featuresCol}'")
    }
    if (dim < 0) dim = size
    else if (size != dim) {
      bad(s"featuresCol '${plan.featuresCol}' has vectors of differing length: row 0 of partition $partition " +
        s"has $dim values, $where has $size")
    }
    if (hasLabel) readLabel(r)

    val nnz = if (indices == null) size else values.numElements()
    val featureTensor =
      if (indices == null) RecordLayout.denseTensorLength(size, itemSize)
      else RecordLayout.sparseTensorLength(nnz, keyBytes, size, itemSize)
    val labelTensor = if (hasLabel) RecordLayout.denseTensorLength(labelCount, itemSize) else 0
    val payload = RecordLayout.fieldLength(featureTensor).toLong +
      (if (hasLabel) RecordLayout.fieldLength(labelTensor) else 0)
    if (payload > MaxRecordLength) {
      bad(s"the record for $where would take $payload bytes, beyond the RecordIO limit of $MaxRecordLength")
    }
    val length = payload.toInt
    val framed = 8 + length + padding(length)
    startRecord(framed)

    val start = block.pos
    block.int32(Magic)
    block.int32(length)
    block.entryHead(0x0A, tensor.valueTag, featureTensor)
    var check = 0f
    if (indices == null) {
      if (size > 0) {
        block.byte(0x0A)
        block.varint(size.toLong * itemSize)
        check = if (floatFeatures) block.floats(values, size, tensor) else block.doubles(values, size, tensor)
      }
    } else {
      sparseRecords += 1
      if (nnz > 0) {
        block.byte(0x0A)
        block.varint(nnz.toLong * itemSize)
        check = block.doubles(values, nnz, tensor)
        block.byte(0x12)
        block.varint(keyBytes)
        var i = 0
        while (i < nnz) { block.varint(indices.getInt(i).toLong); i += 1 }
      }
      block.byte(0x1A)
      block.byte(Varint.size(size))
      block.varint(size)
    }
    if (check.isNaN && !plan.allowNonFinite) nonFinite(values, if (indices == null) size else nnz, indices)
    if (hasLabel) {
      block.entryHead(0x12, tensor.valueTag, labelTensor)
      if (labelCount > 0) {
        block.byte(0x0A)
        block.varint(labelCount.toLong * itemSize)
        val labelCheck = block.doubleArray(labelValues, labelCount, tensor)
        if (labelCheck.isNaN && !plan.allowNonFinite) nonFiniteLabel()
      }
    }
    block.zeros(padding(length))
    if (block.pos != start + framed) {
      throw new IllegalStateException(s"recordio-protobuf: encoder layout mismatch for $where")
    }
    Escaping.escapeLast(block, start, length)
    shardRecords += 1
    shardBytes += block.pos - start
  }

  /** Sum of the key varints' sizes, checking that a sparse vector's indices are valid. */
  private def checkedKeyBytes(indices: ArrayData, nnz: Int, size: Int): Int = {
    if (indices.numElements() != nnz) {
      bad(s"featuresCol '${plan.featuresCol}' holds a sparse vector with ${indices.numElements()} indices but " +
        s"$nnz values in $where")
    }
    var total = 0
    var prev = -1
    var i = 0
    while (i < nnz) {
      val k = indices.getInt(i)
      if (k <= prev || k >= size) {
        bad(s"featuresCol '${plan.featuresCol}' holds a sparse vector whose indices are not strictly increasing " +
          s"and below its size $size (index $k at position $i) in $where")
      }
      total += Varint.size(k)
      prev = k
      i += 1
    }
    total
  }

  private def checkNoNulls(values: ArrayData, what: String): Unit = {
    var i = 0
    val n = values.numElements()
    while (i < n) {
      if (values.isNullAt(i)) bad(s"$what has a null element at index $i in $where")
      i += 1
    }
  }

  private def readLabel(r: InternalRow): Unit = {
    val o = plan.labelOrdinal
    if (r.isNullAt(o)) {
      bad(s"label column ${Quote.py(labelName)} is null at row $row (rows counted within partition $partition)")
    }
    plan.label.get match {
      case LabelSource.Scalar(t) =>
        labelCount = 1
        labelValues(0) = t match {
          case ByteType => r.getByte(o).toDouble
          case ShortType => r.getShort(o).toDouble
          case IntegerType => r.getInt(o).toDouble
          case LongType => r.getLong(o).toDouble
          case FloatType => r.getFloat(o).toDouble
          case DoubleType => r.getDouble(o)
          case d: DecimalType => r.getDecimal(o, d.precision, d.scale).toDouble
          case other => throw new IllegalStateException(s"unexpected label type $other")
        }
      case LabelSource.Vector =>
        val v = r.getStruct(o, 4)
        val vals = v.getArray(3)
        if (v.getByte(0) == 1) {
          fillLabel(vals.numElements())
          var i = 0
          while (i < labelCount) { labelValues(i) = vals.getDouble(i); i += 1 }
        } else {
          fillLabel(v.getInt(1))
          java.util.Arrays.fill(labelValues, 0, labelCount, 0.0)
          val idx = v.getArray(2)
          var i = 0
          while (i < vals.numElements()) {
            val k = idx.getInt(i)
            if (k < 0 || k >= labelCount) bad(s"labelCol '$labelName' holds a sparse vector with index $k beyond " +
              s"its size $labelCount in $where")
            labelValues(k) = vals.getDouble(i)
            i += 1
          }
        }
      case LabelSource.FloatArray(isFloat, nulls) =>
        val vals = r.getArray(o)
        if (nulls) checkNoNulls(vals, s"labelCol '$labelName'")
        fillLabel(vals.numElements())
        var i = 0
        while (i < labelCount) {
          labelValues(i) = if (isFloat) vals.getFloat(i).toDouble else vals.getDouble(i)
          i += 1
        }
    }
    if (labelDim < 0) labelDim = labelCount
    else if (labelCount != labelDim) {
      bad(s"labelCol '$labelName' has labels of differing length: row 0 of partition $partition has " +
        s"$labelDim values, $where has $labelCount")
    }
  }

  private def fillLabel(n: Int): Unit = {
    if (n > labelValues.length) labelValues = new Array[Double](math.max(n, labelValues.length * 2))
    labelCount = n
  }

  private def describe(original: Double, written: Double): String =
    if (original.isNaN) "NaN"
    else if (original.isInfinite) original.toString
    else s"$original, which overflows ${tensor.name} (write with dtype=float64)"

  private def written(v: Double): Double = if (tensor eq TensorType.Float32) v.toFloat.toDouble else v

  private def nonFinite(values: ArrayData, n: Int, indices: ArrayData): Nothing = {
    var i = 0
    while (i < n) {
      val v = if (floatFeatures) values.getFloat(i).toDouble else values.getDouble(i)
      if (!written(v).isNaN && !written(v).isInfinite) i += 1
      else {
        val at = if (indices == null) i else indices.getInt(i)
        bad(s"featuresCol '${plan.featuresCol}' has a non-finite value (${describe(v, written(v))}) at index $at " +
          s"in $where; set allowNonFinite=true to write it anyway")
      }
    }
    throw new IllegalStateException(s"recordio-protobuf: non-finite check failed to find the value in $where")
  }

  private def nonFiniteLabel(): Nothing = {
    val i = (0 until labelCount).find(k => written(labelValues(k)).isNaN || written(labelValues(k)).isInfinite)
      .getOrElse(0)
    val v = labelValues(i)
    val at = if (labelCount == 1) "" else s" at index $i"
    bad(s"labelCol '$labelName' has a non-finite value (${describe(v, written(v))})$at in $where; " +
      "set allowNonFinite=true to write it anyway")
  }

  /** Rolls to a new shard when the current one is full, and makes room for the record in the block. */
  private def startRecord(framed: Int): Unit = {
    if (out != null) {
      val full = (plan.recordsPerShard > 0 && shardRecords >= plan.recordsPerShard) ||
        (plan.shardSizeBytes > 0 && shardRecords > 0 && shardBytes + framed > plan.shardSizeBytes)
      if (full) closeShard()
    }
    if (out == null) openShard()
    if (block.room < framed + 16) {
      if (block.pos > 0) block.writeTo(out)
      block.reserve(framed + 16)
    }
  }

  private def openShard(): Unit = {
    shardPath = new Path(dir, f"part-$partition%05d-$shardSeq%05d.pbr")
    out = fs.create(shardPath, false)
    shardSeq += 1
    shardRecords = 0
    shardBytes = 0
  }

  private def closeShard(): Unit = {
    if (out != null) {
      block.writeTo(out)
      out.close()
      out = null
      shards += ShardResult(shardPath.toString, shardRecords, shardBytes)
    }
  }

  private def abandon(): Unit = {
    try if (out != null) out.close() catch { case _: Exception => }
    out = null
    try fs.delete(dir, true) catch { case _: Exception => }
  }
}
