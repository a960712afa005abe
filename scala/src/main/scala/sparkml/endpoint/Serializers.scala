package sparkml.endpoint

import java.nio.charset.StandardCharsets

import scala.collection.concurrent.TrieMap

import sparkml.recordio.{Escaping, OutputBlock, Quote, RecordIO, RecordLayout, TensorType, Varint}
import sparkml.scoring.{FeatureColumnException, FeatureRow}

/** Encodes feature rows for one request content type.
 *
 * Rows are encoded one after another into a byte block; a request body is `prefix`, then a run of encoded
 * rows joined by `separator`, then `suffix`. So a batch can be cut at any row boundary without re-encoding,
 * and the byte limit of a request is known before it is sent. Implement this trait (and register a factory
 * with [[RequestSerializer.register]] to keep a saved model loadable) for other formats.
 */
trait RequestSerializer extends Serializable {
  def contentType: String

  /** Appends one row's encoding to `out`. `column` and `position` (the row within its partition) are for
   * error messages. */
  def write(x: FeatureRow, out: OutputBlock, column: String, position: Long): Unit

  def prefix: Array[Byte] = Array.emptyByteArray

  def separator: Array[Byte] = Array.emptyByteArray

  def suffix: Array[Byte] = Array.emptyByteArray
}

object RequestSerializer {
  private val factories = TrieMap[String, () => RequestSerializer](
    "protobuf" -> (() => new ProtobufRequestSerializer),
    "csv" -> (() => new CSVRequestSerializer),
    "json" -> (() => new JSONRequestSerializer),
    "jsonlines" -> (() => new JSONLinesRequestSerializer),
    "libsvm" -> (() => new LibSVMRequestSerializer))

  /** Makes a serializer available by name (`EndpointModel.setSerializer(name)`, saved models). */
  def register(name: String, factory: () => RequestSerializer): Unit = factories(name) = factory

  def names: Seq[String] = factories.keys.toSeq.sorted

  def apply(name: String): RequestSerializer = factories.get(name).map(_()).getOrElse {
    throw new IllegalArgumentException(s"unknown serializer ${Quote.py(name)}; known: ${names.mkString(", ")} " +
      "(RequestSerializer.register adds one)")
  }
}

/** `application/x-recordio-protobuf`: one framed Record per row, `features["values"]` as a float32 tensor,
 * dense or sparse as the vector is: the bytes `algorithms.tensor_codec` encodes for the same row. */
class ProtobufRequestSerializer extends RequestSerializer {
  import RecordIO._

  val contentType = "application/x-recordio-protobuf"

  def write(x: FeatureRow, out: OutputBlock, column: String, position: Long): Unit = {
    val itemSize = TensorType.Float32.itemSize
    var keyBytes = 0
    val tensor = if (x.isDense) RecordLayout.denseTensorLength(x.size, itemSize) else {
      var e = 0
      while (e < x.nnz) { keyBytes += Varint.size(x.indices(e).toLong); e += 1 }
      RecordLayout.sparseTensorLength(x.nnz, keyBytes, x.size, itemSize)
    }
    val payload = RecordLayout.fieldLength(tensor).toLong
    if (payload > MaxRecordLength) {
      throw new FeatureColumnException(s"featuresCol ${Quote.py(column)}: row $position would take $payload bytes, " +
        s"beyond the RecordIO limit of $MaxRecordLength")
    }
    val length = payload.toInt
    out.reserve(8 + length + padding(length) + 16)
    val start = out.pos
    out.int32(Magic)
    out.int32(length)
    out.entryHead(0x0A, TensorType.Float32.valueTag, tensor)
    if (x.isDense) {
      if (x.size > 0) {
        out.byte(0x0A)
        out.varint(x.size.toLong * itemSize)
        out.doubleArray(x.values, x.size, TensorType.Float32)
      }
    } else {
      if (x.nnz > 0) {
        out.byte(0x0A)
        out.varint(x.nnz.toLong * itemSize)
        out.doubleArray(x.values, x.nnz, TensorType.Float32)
        out.byte(0x12)
        out.varint(keyBytes)
        var e = 0
        while (e < x.nnz) { out.varint(x.indices(e).toLong); e += 1 }
      }
      out.byte(0x1A)
      out.byte(Varint.size(x.size))
      out.varint(x.size)
    }
    out.zeros(padding(length))
    Escaping.escapeLast(out, start, length)
  }
}

/** Text formats: numbers printed as their float32 value's shortest round-trip decimal. */
abstract class TextRequestSerializer extends RequestSerializer {
  protected def name: String

  protected def text(out: OutputBlock, s: String): Unit = {
    val b = s.getBytes(StandardCharsets.US_ASCII)
    out.reserve(b.length)
    out.copy(b, 0, b.length)
  }

  protected def number(out: OutputBlock, v: Double, index: Int, column: String, position: Long): Unit = {
    if (v.isNaN || v.isInfinite) {
      throw new FeatureColumnException(s"featuresCol ${Quote.py(column)} has a non-finite value ($v) at index $index " +
        s"in row $position; the $name serializer cannot send it (the protobuf serializer can)")
    }
    val f = v.toFloat
    text(out, if (f == f.toLong && math.abs(f) < 1e15f) f.toLong.toString else java.lang.Float.toString(f))
  }

  /** Dense values, sparse rows written out in full. */
  protected def denseValues(x: FeatureRow, out: OutputBlock, sep: String, column: String, position: Long): Unit = {
    if (x.isDense) {
      var i = 0
      while (i < x.size) {
        if (i > 0) text(out, sep)
        number(out, x.values(i), i, column, position)
        i += 1
      }
    } else {
      var e = 0
      var i = 0
      while (i < x.size) {
        if (i > 0) text(out, sep)
        if (e < x.nnz && x.indices(e) == i) { number(out, x.values(e), i, column, position); e += 1 }
        else text(out, "0")
        i += 1
      }
    }
  }
}

/** `text/csv`: one line of feature values per row, no header. */
class CSVRequestSerializer extends TextRequestSerializer {
  val contentType = "text/csv"
  protected val name = "csv"

  def write(x: FeatureRow, out: OutputBlock, column: String, position: Long): Unit = {
    denseValues(x, out, ",", column, position)
    text(out, "\n")
  }
}

/** The per-row JSON object of SageMaker's algorithms: `{"features": [...]}`, or for a sparse vector
 * `{"data": {"features": {"keys": [...], "shape": [d], "values": [...]}}}`. */
abstract class JSONRowSerializer extends TextRequestSerializer {
  protected def row(x: FeatureRow, out: OutputBlock, column: String, position: Long): Unit = {
    if (x.isDense) {
      text(out, "{\"features\":[")
      denseValues(x, out, ",", column, position)
      text(out, "]}")
    } else {
      text(out, "{\"data\":{\"features\":{\"keys\":[")
      var e = 0
      while (e < x.nnz) { if (e > 0) text(out, ","); text(out, x.indices(e).toString); e += 1 }
      text(out, s"],\"shape\":[${x.size}],\"values\":[")
      e = 0
      while (e < x.nnz) {
        if (e > 0) text(out, ",")
        number(out, x.values(e), x.indices(e), column, position)
        e += 1
      }
      text(out, "]}}}")
    }
  }
}

/** `application/json`: `{"instances": [row, ...]}`. */
class JSONRequestSerializer extends JSONRowSerializer {
  val contentType = "application/json"
  protected val name = "json"

  def write(x: FeatureRow, out: OutputBlock, column: String, position: Long): Unit = row(x, out, column, position)

  override val prefix: Array[Byte] = "{\"instances\":[".getBytes(StandardCharsets.US_ASCII)
  override val separator: Array[Byte] = Array(','.toByte)
  override val suffix: Array[Byte] = "]}".getBytes(StandardCharsets.US_ASCII)
}

/** `application/jsonlines`: one row object per line. */
class JSONLinesRequestSerializer extends JSONRowSerializer {
  val contentType = "application/jsonlines"
  protected val name = "jsonlines"

  def write(x: FeatureRow, out: OutputBlock, column: String, position: Long): Unit = {
    row(x, out, column, position)
    text(out, "\n")
  }
}

/** `text/libsvm`: `0 index:value ...` per line, indices from 1, only non-zero entries (0 is a placeholder label). */
class LibSVMRequestSerializer extends TextRequestSerializer {
  val contentType = "text/libsvm"
  protected val name = "libsvm"

  def write(x: FeatureRow, out: OutputBlock, column: String, position: Long): Unit = {
    text(out, "0")
    val n = if (x.isDense) x.size else x.nnz
    var e = 0
    while (e < n) {
      val v = x.values(e)
      if (v != 0.0) {
        val index = if (x.isDense) e else x.indices(e)
        text(out, s" ${index + 1}:")
        number(out, v, index, column, position)
      }
      e += 1
    }
    text(out, "\n")
  }
}
