package sparkml.recordio

import java.io.{EOFException, InputStream}

/** dmlc RecordIO framing, as `algorithms/recordio.py` describes it.
 *
 * A file is a sequence of `magic:u32le | lrec:u32le | payload | zero pad to 4 bytes` with
 * `lrec = cflag << 29 | length`. A payload holding the magic at a 4-byte-aligned offset is split into
 * parts (cflag 1 first, 2 middle, 3 last) with the magic dropped, so the magic only ever starts a record.
 */
object RecordIO {
  val Magic: Int = 0xCED7230AL.toInt
  val LengthMask: Int = (1 << 29) - 1
  val MaxRecordLength: Int = LengthMask

  def padding(length: Int): Int = -length & 3

  def hex(word: Int): String = f"0x$word%08X"
}

/** A corrupt or truncated RecordIO stream; the message names the source and the byte offset. */
class RecordIOFormatException(val source: String, val offset: Long, val problem: String)
  extends IllegalArgumentException(s"$source: $problem at byte offset $offset")

/** Reads framed records one at a time, reassembling multi-part records.
 *
 * `next()` returns the payload length (the payload is `payload(0 until length)`, valid until the next
 * call) or -1 at the end of the stream. `recordOffset` is the byte offset of the record's first part.
 */
final class FrameReader(in: InputStream, source: String) {
  import RecordIO._

  private val head = new Array[Byte](8)
  private var buf = new Array[Byte](1 << 16)
  private var offset = 0L
  var recordOffset: Long = -1L

  def payload: Array[Byte] = buf

  def next(): Int = {
    var total = 0
    var inParts = false
    var firstPartAt = 0L
    while (true) {
      val got = readUpTo(head, 0, 8)
      if (got == 0) {
        if (inParts) throw new RecordIOFormatException(source, firstPartAt, "stream ends inside a multi-part record")
        return -1
      }
      if (got < 8) throw new RecordIOFormatException(source, offset, s"truncated record header ($got of 8 bytes)")
      val magic = Bytes.int32LE(head, 0)
      val lrec = Bytes.int32LE(head, 4)
      if (magic != Magic) {
        // what was found is not shown: a file mistaken for a shard should not have its first bytes in logs
        throw new RecordIOFormatException(source, offset, s"bad magic (not a record head: expected ${hex(Magic)})")
      }
      val cflag = lrec >>> 29
      val length = lrec & LengthMask
      val padded = length + padding(length)
      cflag match {
        case 0 =>
          if (inParts) throw new RecordIOFormatException(source, offset, "complete record inside a multi-part record")
          readBody(0, length, padded)
          recordOffset = offset
          offset += 8L + padded
          return length
        case 1 =>
          if (inParts) {
            throw new RecordIOFormatException(source, offset, "new multi-part record before the previous one ended")
          }
          readBody(0, length, padded)
          total = length
          inParts = true
          firstPartAt = offset
        case 2 | 3 =>
          if (!inParts) {
            throw new RecordIOFormatException(source, offset, s"continuation part (cflag=$cflag) without a first part")
          }
          if (total.toLong + 4 + length > MaxRecordLength) {
            throw new RecordIOFormatException(source, firstPartAt, "multi-part record exceeds the RecordIO limit")
          }
          ensure(total + 4)
          Bytes.putInt32LE(buf, total, Magic)
          readBody(total + 4, length, padded)
          total += 4 + length
          if (cflag == 3) {
            recordOffset = firstPartAt
            offset += 8L + padded
            return total
          }
        case _ =>
          throw new RecordIOFormatException(source, offset, s"invalid continuation flag $cflag")
      }
      offset += 8L + padded
    }
    -1
  }

  private def readBody(at: Int, length: Int, padded: Int): Unit = {
    ensure(at + padded)
    val got = readUpTo(buf, at, padded)
    if (got < padded) {
      throw new RecordIOFormatException(source, offset,
        s"truncated record: header declares $length bytes, $got remain")
    }
  }

  private def ensure(size: Int): Unit = {
    if (size > buf.length) {
      val grown = new Array[Byte](math.max(size, math.min(Int.MaxValue - 16L, buf.length * 2L).toInt))
      System.arraycopy(buf, 0, grown, 0, buf.length)
      buf = grown
    }
  }

  private def readUpTo(into: Array[Byte], at: Int, n: Int): Int = {
    var done = 0
    while (done < n) {
      val r = try in.read(into, at + done, n - done) catch { case _: EOFException => -1 }
      if (r < 0) return done
      done += r
    }
    done
  }
}

/** Little-endian access to byte arrays. */
object Bytes {
  def int32LE(b: Array[Byte], at: Int): Int =
    (b(at) & 0xFF) | (b(at + 1) & 0xFF) << 8 | (b(at + 2) & 0xFF) << 16 | (b(at + 3) & 0xFF) << 24

  def putInt32LE(b: Array[Byte], at: Int, v: Int): Unit = {
    b(at) = v.toByte
    b(at + 1) = (v >>> 8).toByte
    b(at + 2) = (v >>> 16).toByte
    b(at + 3) = (v >>> 24).toByte
  }

  def int64LE(b: Array[Byte], at: Int): Long =
    (int32LE(b, at) & 0xFFFFFFFFL) | (int32LE(b, at + 4).toLong << 32)
}
