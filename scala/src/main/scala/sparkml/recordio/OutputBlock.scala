package sparkml.recordio

import java.nio.{ByteBuffer, ByteOrder}

import org.apache.spark.sql.catalyst.expressions.UnsafeArrayData
import org.apache.spark.sql.catalyst.util.ArrayData
import org.apache.spark.unsafe.Platform

/** A growable byte buffer that records are encoded into, then flushed to a file in large writes. */
final class OutputBlock(initialCapacity: Int) {
  import OutputBlock._

  var bytes: Array[Byte] = new Array[Byte](initialCapacity)
  private var le: ByteBuffer = wrap(bytes)
  var pos: Int = 0

  def capacity: Int = bytes.length

  def room: Int = bytes.length - pos

  /** Makes room for `n` more bytes, growing the buffer (never flushing). */
  def reserve(n: Int): Unit = {
    if (pos.toLong + n > bytes.length) {
      val want = math.max(pos.toLong + n, math.min(bytes.length * 2L, Int.MaxValue - 16L))
      if (want > Int.MaxValue - 16L) throw new IllegalStateException(s"a record of $n bytes does not fit in memory")
      val grown = new Array[Byte](want.toInt)
      System.arraycopy(bytes, 0, grown, 0, pos)
      bytes = grown
      le = wrap(bytes)
    }
  }

  def byte(b: Int): Unit = { bytes(pos) = b.toByte; pos += 1 }

  def varint(v: Long): Unit = { pos = Varint.write(bytes, pos, v) }

  def int32(v: Int): Unit = { le.putInt(pos, v); pos += 4 }

  def zeros(n: Int): Unit = {
    var i = 0
    while (i < n) { bytes(pos + i) = 0; i += 1 }
    pos += n
  }

  def copy(src: Array[Byte], from: Int, n: Int): Unit = {
    System.arraycopy(src, from, bytes, pos, n)
    pos += n
  }

  /** `tag | len | 0A 06 "values" | 12 | len(Value) | valueTag | len(tensor)`: a map entry up to its tensor. */
  def entryHead(recordTag: Int, valueTag: Int, tensorLength: Int): Unit = {
    byte(recordTag)
    varint(RecordLayout.entryLength(tensorLength))
    System.arraycopy(ValuesKey, 0, bytes, pos, ValuesKey.length)
    pos += ValuesKey.length
    byte(0x12)
    varint(RecordLayout.valueLength(tensorLength))
    byte(valueTag)
    varint(tensorLength)
  }

  /** Writes `n` values of a double array as float32 or float64; returns NaN when any written value is
   * not finite (so callers check once per record, not once per value). */
  def doubles(values: ArrayData, n: Int, tensor: TensorType): Float = {
    var check = 0f
    values match {
      case u: UnsafeArrayData if NativeLittleEndian =>
        val base = u.getBaseObject
        var src = u.getBaseOffset + UnsafeArrayData.calculateHeaderPortionInBytes(n)
        var dst = Platform.BYTE_ARRAY_OFFSET.toLong + pos
        val end = src + 8L * n
        if (tensor eq TensorType.Float32) {
          while (src < end) {
            val f = Platform.getDouble(base, src).toFloat
            Platform.putFloat(bytes, dst, f)
            check += f * 0f
            src += 8
            dst += 4
          }
        } else {
          Platform.copyMemory(base, src, bytes, dst, 8L * n)
          var d = 0.0
          while (src < end) { d += Platform.getDouble(base, src) * 0.0; src += 8 }
          check = d.toFloat
        }
      case _ =>
        var i = 0
        var p = pos
        if (tensor eq TensorType.Float32) {
          while (i < n) { val f = values.getDouble(i).toFloat; le.putFloat(p, f); check += f * 0f; p += 4; i += 1 }
        } else {
          var d = 0.0
          while (i < n) { val v = values.getDouble(i); le.putDouble(p, v); d += v * 0.0; p += 8; i += 1 }
          check = d.toFloat
        }
    }
    pos += n * tensor.itemSize
    check
  }

  /** As [[doubles]] for an array of floats. */
  def floats(values: ArrayData, n: Int, tensor: TensorType): Float = {
    var check = 0f
    values match {
      case u: UnsafeArrayData if NativeLittleEndian && (tensor eq TensorType.Float32) =>
        val base = u.getBaseObject
        var src = u.getBaseOffset + UnsafeArrayData.calculateHeaderPortionInBytes(n)
        Platform.copyMemory(base, src, bytes, Platform.BYTE_ARRAY_OFFSET.toLong + pos, 4L * n)
        val end = src + 4L * n
        while (src < end) { check += Platform.getFloat(base, src) * 0f; src += 4 }
      case _ =>
        var i = 0
        var p = pos
        if (tensor eq TensorType.Float32) {
          while (i < n) { val f = values.getFloat(i); le.putFloat(p, f); check += f * 0f; p += 4; i += 1 }
        } else {
          while (i < n) { val f = values.getFloat(i); le.putDouble(p, f.toDouble); check += f * 0f; p += 8; i += 1 }
        }
    }
    pos += n * tensor.itemSize
    check
  }

  /** Writes values from a plain double array (labels, densified vectors). */
  def doubleArray(values: Array[Double], n: Int, tensor: TensorType): Float = {
    var check = 0f
    var i = 0
    var p = pos
    if (tensor eq TensorType.Float32) {
      while (i < n) { val f = values(i).toFloat; le.putFloat(p, f); check += f * 0f; p += 4; i += 1 }
    } else {
      var d = 0.0
      while (i < n) { val v = values(i); le.putDouble(p, v); d += v * 0.0; p += 8; i += 1 }
      check = d.toFloat
    }
    pos += n * tensor.itemSize
    check
  }

  def writeTo(out: java.io.OutputStream): Unit = {
    out.write(bytes, 0, pos)
    pos = 0
  }
}

object OutputBlock {
  /** Unsafe reads and writes at any byte offset give little-endian values on this machine. */
  val NativeLittleEndian: Boolean = ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN && Platform.unaligned()
  private val ValuesKey: Array[Byte] = Array[Byte](0x0A, 0x06) ++ "values".getBytes("US-ASCII")

  private def wrap(b: Array[Byte]): ByteBuffer = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN)
}

/** dmlc escaping of a record already written (header + payload + padding) at the end of a block. */
object Escaping {
  import RecordIO._

  /** The aligned offsets inside the payload that hold the magic, or null when there are none. */
  def magicPositions(bytes: Array[Byte], payloadAt: Int, length: Int): Array[Int] = {
    val whole = length & ~3
    var i = 0
    var hits: scala.collection.mutable.ArrayBuffer[Int] = null
    while (i < whole) {
      if (Bytes.int32LE(bytes, payloadAt + i) == Magic) {
        if (hits == null) hits = scala.collection.mutable.ArrayBuffer.empty[Int]
        hits += i
      }
      i += 4
    }
    if (hits == null) null else hits.toArray
  }

  /** Re-frames the record starting at `start` (whose payload has `length` bytes) as multi-part records
   * wherever its payload holds the magic, exactly as dmlc's writer and `recordio.frame` do. */
  def escapeLast(block: OutputBlock, start: Int, length: Int): Unit = {
    val hits = magicPositions(block.bytes, start + 8, length)
    if (hits == null) return
    val payload = java.util.Arrays.copyOfRange(block.bytes, start + 8, start + 8 + length)
    block.pos = start
    block.reserve((hits.length + 1) * 12 + length)
    var begin = 0
    var k = 0
    while (k <= hits.length) {
      val end = if (k < hits.length) hits(k) else length
      val cflag = if (k == hits.length) 3 else if (k == 0) 1 else 2
      val n = end - begin
      block.int32(Magic)
      block.int32((cflag << 29) | n)
      block.copy(payload, begin, n)
      block.zeros(padding(n))
      begin = end + 4
      k += 1
    }
  }
}
