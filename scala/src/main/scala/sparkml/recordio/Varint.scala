package sparkml.recordio

/** Protobuf base-128 varints (unsigned). */
object Varint {
  def size(value: Long): Int = {
    if (value < 0) return 10
    var v = value
    var n = 1
    while (v >= 0x80) { v >>>= 7; n += 1 }
    n
  }

  /** Writes `value` at `at`; returns the position after it. */
  def write(buf: Array[Byte], at: Int, value: Long): Int = {
    var v = value
    var p = at
    while ((v & ~0x7FL) != 0) {
      buf(p) = ((v & 0x7F) | 0x80).toByte
      v >>>= 7
      p += 1
    }
    buf(p) = v.toByte
    p + 1
  }
}
