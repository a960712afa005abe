package sparkml.recordio

import java.nio.charset.StandardCharsets

import scala.collection.mutable.ArrayBuffer

/** One numeric tensor of a record: values (as doubles), keys and shape, each grown as needed. */
final class TensorSlots {
  var present = false
  var kind = ""
  var values = new Array[Double](64)
  var count = 0
  var keys = new Array[Long](16)
  var keyCount = 0
  var shape = new Array[Long](2)
  var shapeCount = 0

  def reset(): Unit = { present = false; kind = ""; count = 0; keyCount = 0; shapeCount = 0 }

  def addValue(v: Double): Unit = {
    if (count == values.length) values = java.util.Arrays.copyOf(values, count * 2)
    values(count) = v
    count += 1
  }

  def reserveValues(n: Int): Unit =
    if (count + n > values.length) values = java.util.Arrays.copyOf(values, math.max(count + n, values.length * 2))

  def addKey(k: Long): Unit = {
    if (keyCount == keys.length) keys = java.util.Arrays.copyOf(keys, keyCount * 2)
    keys(keyCount) = k
    keyCount += 1
  }

  def addShape(s: Long): Unit = {
    if (shapeCount == shape.length) shape = java.util.Arrays.copyOf(shape, shapeCount * 2)
    shape(shapeCount) = s
    shapeCount += 1
  }

  def shapeString: String = shape.take(shapeCount).mkString("[", ", ", "]")
}

/** A payload that is not a valid `aialgs.data.Record`, or a record outside what a vector column holds. */
class RecordFormatException(message: String) extends IllegalArgumentException(message)

/** Parses `aialgs.data.Record` payloads with the protobuf wire rules (any field order, unknown fields
 * skipped, packed or unpacked repeated fields, last map entry wins), keeping `features["values"]` and
 * `label["values"]`. */
final class RecordDecoder(source: String) {
  val features = new TensorSlots
  val label = new TensorSlots
  /** Feature keys other than "values" seen in the current record, for error messages. */
  val otherFeatureKeys = ArrayBuffer.empty[String]
  var otherLabelKeys = 0

  private var buf: Array[Byte] = _
  private var pos = 0
  private var index = 0L
  private var offset = 0L

  def decode(payload: Array[Byte], length: Int, recordIndex: Long, byteOffset: Long): Unit = {
    buf = payload
    pos = 0
    index = recordIndex
    offset = byteOffset
    features.reset()
    label.reset()
    otherFeatureKeys.clear()
    otherLabelKeys = 0
    while (pos < length) {
      val tag = varint(length)
      (tag >>> 3).toInt match {
        case 1 if (tag & 7) == 2 => entry(lengthDelimited(length), features, isFeature = true)
        case 2 if (tag & 7) == 2 => entry(lengthDelimited(length), label, isFeature = false)
        case _ => skip(tag, length)
      }
    }
  }

  def fail(problem: String): Nothing =
    throw new RecordFormatException(s"$source: record $index (byte offset $offset) $problem")

  private def invalid(problem: String): Nothing = fail(s"is not a valid aialgs.data.Record: $problem")

  private def varint(end: Int): Long = {
    var result = 0L
    var shift = 0
    while (true) {
      if (pos >= end) invalid("truncated varint")
      val b = buf(pos)
      pos += 1
      result |= (b & 0x7FL) << shift
      if (b >= 0) return result
      shift += 7
      if (shift >= 70) invalid("varint longer than 10 bytes")
    }
    result
  }

  /** Reads a length prefix and returns the end of the field it announces. */
  private def lengthDelimited(end: Int): Int = {
    val n = varint(end)
    if (n < 0 || pos + n > end) invalid(s"a field of $n bytes runs past the end of its message")
    pos + n.toInt
  }

  private def skip(tag: Long, end: Int): Unit = (tag & 7).toInt match {
    case 0 => varint(end)
    case 1 => if (pos + 8 > end) invalid("truncated fixed64 field") else pos += 8
    case 2 => pos = lengthDelimited(end)
    case 5 => if (pos + 4 > end) invalid("truncated fixed32 field") else pos += 4
    case w => invalid(s"unsupported wire type $w (field ${tag >>> 3})")
  }

  private def entry(end: Int, into: TensorSlots, isFeature: Boolean): Unit = {
    var keyAt = -1
    var keyEnd = -1
    var valueAt = -1
    var valueEnd = -1
    while (pos < end) {
      val tag = varint(end)
      (tag >>> 3).toInt match {
        case 1 if (tag & 7) == 2 => val e = lengthDelimited(end); keyAt = pos; keyEnd = e; pos = e
        case 2 if (tag & 7) == 2 => val e = lengthDelimited(end); valueAt = pos; valueEnd = e; pos = e
        case _ => skip(tag, end)
      }
    }
    val isValues = keyAt >= 0 && keyEnd - keyAt == 6 && buf(keyAt) == 'v' && buf(keyAt + 1) == 'a' &&
      buf(keyAt + 2) == 'l' && buf(keyAt + 3) == 'u' && buf(keyAt + 4) == 'e' && buf(keyAt + 5) == 's'
    if (isValues) {
      into.reset()
      into.present = true
      if (valueAt >= 0) {
        pos = valueAt
        value(valueEnd, into)
      }
      pos = end
    } else if (isFeature) {
      otherFeatureKeys += (if (keyAt < 0) "" else new String(buf, keyAt, keyEnd - keyAt, StandardCharsets.UTF_8))
    } else {
      otherLabelKeys += 1
    }
  }

  private def value(end: Int, into: TensorSlots): Unit = {
    var tensorAt = -1
    var tensorEnd = -1
    var kind = ""
    while (pos < end) {
      val tag = varint(end)
      val field = (tag >>> 3).toInt
      if ((tag & 7) == 2 && (field == 2 || field == 3 || field == 7 || field == 9)) {
        val e = lengthDelimited(end)
        kind = field match {
          case 2 => "float32_tensor"
          case 3 => "float64_tensor"
          case 7 => "int32_tensor"
          case _ => "bytes"
        }
        tensorAt = pos
        tensorEnd = e
        pos = e
      } else skip(tag, end)
    }
    into.kind = kind
    if (kind.nonEmpty && kind != "bytes") {
      pos = tensorAt
      tensor(tensorEnd, into)
    }
  }

  private def tensor(end: Int, into: TensorSlots): Unit = {
    val kind = into.kind
    while (pos < end) {
      val tag = varint(end)
      val wire = (tag & 7).toInt
      (tag >>> 3).toInt match {
        case 1 => values(wire, end, into, kind)
        case 2 => repeatedVarints(wire, end, into.addKey)
        case 3 => repeatedVarints(wire, end, into.addShape)
        case _ => skip(tag, end)
      }
    }
  }

  private def values(wire: Int, end: Int, into: TensorSlots, kind: String): Unit = kind match {
    case "float32_tensor" =>
      if (wire == 2) {
        val e = lengthDelimited(end)
        val bytes = e - pos
        if (bytes % 4 != 0) invalid(s"packed float values of $bytes bytes (not a multiple of 4)")
        into.reserveValues(bytes / 4)
        while (pos < e) { into.values(into.count) = java.lang.Float.intBitsToFloat(Bytes.int32LE(buf, pos)); into.count += 1; pos += 4 }
      } else if (wire == 5) {
        if (pos + 4 > end) invalid("truncated float value")
        into.addValue(java.lang.Float.intBitsToFloat(Bytes.int32LE(buf, pos)))
        pos += 4
      } else invalid(s"float values with wire type $wire")
    case "float64_tensor" =>
      if (wire == 2) {
        val e = lengthDelimited(end)
        val bytes = e - pos
        if (bytes % 8 != 0) invalid(s"packed double values of $bytes bytes (not a multiple of 8)")
        into.reserveValues(bytes / 8)
        while (pos < e) { into.values(into.count) = java.lang.Double.longBitsToDouble(Bytes.int64LE(buf, pos)); into.count += 1; pos += 8 }
      } else if (wire == 1) {
        if (pos + 8 > end) invalid("truncated double value")
        into.addValue(java.lang.Double.longBitsToDouble(Bytes.int64LE(buf, pos)))
        pos += 8
      } else invalid(s"double values with wire type $wire")
    case _ =>
      repeatedVarints(wire, end, v => into.addValue(v.toInt.toDouble))
  }

  private def repeatedVarints(wire: Int, end: Int, add: Long => Unit): Unit = {
    if (wire == 2) {
      val e = lengthDelimited(end)
      while (pos < e) add(varint(e))
    } else if (wire == 0) add(varint(end))
    else invalid(s"varint field with wire type $wire")
  }
}
