package sparkml.scoring

import java.nio.{ByteBuffer, ByteOrder}
import java.nio.charset.StandardCharsets
import java.nio.file.Files
import java.util.zip.{ZipException, ZipFile}

import scala.collection.mutable
import scala.jdk.CollectionConverters._

/** A numeric array read from a `.npy` file: its shape, its dtype as numpy writes it (`<f8`), and its values
 * as doubles in C (row-major) order whatever the file's order. Integer values beyond 2^53 lose precision. */
final case class NpyArray(name: String, dtype: String, shape: Array[Long], data: Array[Double]) {
  def size: Int = data.length

  def dims: Int = shape.length

  def shapeString: String =
    if (shape.length == 1) s"(${shape(0)},)" else shape.mkString("(", ", ", ")")

  /** The single value of a 0-d or one-element array. */
  def scalar: Double = {
    if (data.length != 1) throw new ArtifactException(s"array '$name' has shape $shapeString; expected one value")
    data(0)
  }
}

/** An artifact that cannot be read: the message names the file and what is wrong. */
class ArtifactException(message: String) extends IllegalArgumentException(message)

/** The `.npy` format (numpy's `lib.format`), numeric dtypes only.
 *
 * A file is `\x93NUMPY`, a major/minor version byte pair, a header length (u16 little-endian for version 1,
 * u32 for 2 and 3), a header that is a Python dict literal
 * (`{'descr': '<f4', 'fortran_order': False, 'shape': (30, 1), }`), then the raw values. Object arrays
 * (`|O`, which numpy pickles), structured dtypes, strings, dates and complex numbers are refused: artifacts
 * hold plain numbers only, and nothing here ever unpickles.
 */
object Npy {
  private val Magic: Array[Byte] = Array(0x93.toByte) ++ "NUMPY".getBytes(StandardCharsets.US_ASCII)
  private val MaxElements = Int.MaxValue - 16

  def read(bytes: Array[Byte], source: String, name: String): NpyArray = {
    def fail(problem: String): Nothing = throw new ArtifactException(s"$source: $problem")
    if (bytes.length < 10 || !bytes.startsWith(Magic)) fail("not a .npy array (no \\x93NUMPY magic)")
    val major = bytes(6) & 0xFF
    val (headerLength, headerStart) = major match {
      case 1 => ((bytes(8) & 0xFF) | (bytes(9) & 0xFF) << 8, 10)
      case 2 | 3 =>
        if (bytes.length < 12) fail("truncated .npy header")
        (ByteBuffer.wrap(bytes, 8, 4).order(ByteOrder.LITTLE_ENDIAN).getInt, 12)
      case v => fail(s".npy format version $v is not supported (1, 2 and 3 are)")
    }
    if (headerLength < 0 || headerStart.toLong + headerLength > bytes.length) fail("truncated .npy header")
    val charset = if (major == 3) StandardCharsets.UTF_8 else StandardCharsets.ISO_8859_1
    val header = new String(bytes, headerStart, headerLength, charset)
    val fields = HeaderParser.parse(header, source)
    val descr = fields.get("descr") match {
      case Some(d: String) => d
      case Some(_: Seq[_]) => fail("structured dtypes are not supported; artifacts hold plain numeric arrays")
      case other => fail(s"the .npy header has no dtype ('descr' is ${other.getOrElse("missing")})")
    }
    val fortran = fields.get("fortran_order") match {
      case Some(b: Boolean) => b
      case other => fail(s"the .npy header's fortran_order is ${other.getOrElse("missing")}")
    }
    val shape = fields.get("shape") match {
      case Some(s: Seq[_]) if s.forall(_.isInstanceOf[Long]) => s.map(_.asInstanceOf[Long]).toArray
      case other => fail(s"the .npy header's shape is ${other.getOrElse("missing")}")
    }
    if (shape.exists(_ < 0)) fail(s"negative dimension in shape ${shape.mkString("(", ", ", ")")}")
    val count = shape.foldLeft(BigInt(1))(_ * _)
    if (count > MaxElements) fail(s"an array of $count values is too large to load")
    val dtype = Dtype.parse(descr, source)
    val dataStart = headerStart + headerLength
    val need = count * dtype.itemSize
    if (BigInt(bytes.length - dataStart) != need) {
      fail(s"array data holds ${bytes.length - dataStart} bytes; shape ${shape.mkString("(", ", ", ")")} of " +
        s"$descr needs $need")
    }
    val values = dtype.decode(bytes, dataStart, count.toInt)
    NpyArray(name, descr, shape, if (fortran && shape.length > 1) toRowMajor(values, shape) else values)
  }

  private def toRowMajor(values: Array[Double], shape: Array[Long]): Array[Double] = {
    val dims = shape.map(_.toInt)
    val out = new Array[Double](values.length)
    val index = new Array[Int](dims.length)
    var c = 0
    while (c < values.length) {
      // position of `index` in Fortran order
      var f = 0
      var stride = 1
      var k = 0
      while (k < dims.length) { f += index(k) * stride; stride *= dims(k); k += 1 }
      out(c) = values(f)
      // advance the C-order index
      k = dims.length - 1
      var carry = true
      while (carry && k >= 0) {
        index(k) += 1
        if (index(k) < dims(k)) carry = false else { index(k) = 0; k -= 1 }
      }
      c += 1
    }
    out
  }

  /** A numeric dtype from its `descr` (`<f8`, `|u1`, `>i4`, `|b1`). */
  private final case class Dtype(kind: Char, itemSize: Int, order: ByteOrder) {
    def decode(bytes: Array[Byte], at: Int, n: Int): Array[Double] = {
      val buf = ByteBuffer.wrap(bytes, at, n * itemSize).slice().order(order)
      val out = new Array[Double](n)
      var i = 0
      (kind, itemSize) match {
        case ('f', 8) => while (i < n) { out(i) = buf.getDouble(i * 8); i += 1 }
        case ('f', 4) => while (i < n) { out(i) = buf.getFloat(i * 4).toDouble; i += 1 }
        case ('f', 2) => while (i < n) { out(i) = halfToDouble(buf.getShort(i * 2)); i += 1 }
        case ('i', 8) => while (i < n) { out(i) = buf.getLong(i * 8).toDouble; i += 1 }
        case ('i', 4) => while (i < n) { out(i) = buf.getInt(i * 4).toDouble; i += 1 }
        case ('i', 2) => while (i < n) { out(i) = buf.getShort(i * 2).toDouble; i += 1 }
        case ('i', 1) => while (i < n) { out(i) = buf.get(i).toDouble; i += 1 }
        case ('u', 8) => while (i < n) { out(i) = unsignedLong(buf.getLong(i * 8)); i += 1 }
        case ('u', 4) => while (i < n) { out(i) = (buf.getInt(i * 4) & 0xFFFFFFFFL).toDouble; i += 1 }
        case ('u', 2) => while (i < n) { out(i) = (buf.getShort(i * 2) & 0xFFFF).toDouble; i += 1 }
        case ('u', 1) | ('b', 1) => while (i < n) { out(i) = (buf.get(i) & 0xFF).toDouble; i += 1 }
        case _ => throw new IllegalStateException(s"dtype $kind$itemSize")
      }
      out
    }

    /** IEEE 754 binary16 to double (Java 17 has no `Float.float16ToFloat`). */
    private def halfToDouble(h: Short): Double = {
      val sign = if ((h & 0x8000) != 0) -1.0 else 1.0
      val exponent = (h >>> 10) & 0x1F
      val fraction = h & 0x3FF
      if (exponent == 0) sign * fraction * math.pow(2, -24)
      else if (exponent == 0x1F) { if (fraction == 0) sign * Double.PositiveInfinity else Double.NaN }
      else sign * (1.0 + fraction / 1024.0) * math.pow(2, exponent - 15)
    }

    private def unsignedLong(v: Long): Double =
      if (v >= 0) v.toDouble else (v >>> 1).toDouble * 2.0 + (v & 1L).toDouble
  }

  private object Dtype {
    private val Supported = Set("f8", "f4", "f2", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1", "b1")

    def parse(descr: String, source: String): Dtype = {
      def fail(problem: String): Nothing = throw new ArtifactException(s"$source: $problem")
      if (descr.length < 2) fail(s"unknown dtype '$descr'")
      val (orderChar, code) = descr.head match {
        case c @ ('<' | '>' | '|' | '=') => (c, descr.tail)
        case _ => ('|', descr)
      }
      if (code.startsWith("O")) {
        fail(s"dtype '$descr' is an object array, which numpy stores pickled; artifacts hold numeric arrays " +
          "only and pickles are never loaded")
      }
      if (!Supported.contains(code)) {
        fail(s"dtype '$descr' is not a plain number type (supported: float16/32/64, int8-64, uint8-64, bool)")
      }
      val order = orderChar match {
        case '>' => ByteOrder.BIG_ENDIAN
        case '=' => ByteOrder.nativeOrder()
        case _ => ByteOrder.LITTLE_ENDIAN
      }
      Dtype(code.head, code.tail.toInt, order)
    }
  }

  /** Parses the header's Python literal: a dict of strings, booleans, integers, tuples and lists. */
  private final class HeaderParser(text: String, source: String) {
    private var pos = 0

    private def fail(problem: String): Nothing =
      throw new ArtifactException(s"$source: malformed .npy header ($problem at character $pos): ${text.trim}")

    private def skipSpace(): Unit = while (pos < text.length && text(pos).isWhitespace) pos += 1

    private def expect(c: Char): Unit = {
      skipSpace()
      if (pos >= text.length || text(pos) != c) fail(s"expected '$c'")
      pos += 1
    }

    def dict(): Map[String, Any] = {
      expect('{')
      val out = mutable.LinkedHashMap.empty[String, Any]
      skipSpace()
      while (pos < text.length && text(pos) != '}') {
        val key = value() match {
          case s: String => s
          case other => fail(s"dict key $other is not a string")
        }
        expect(':')
        out(key) = value()
        skipSpace()
        if (pos < text.length && text(pos) == ',') pos += 1
        skipSpace()
      }
      expect('}')
      out.toMap
    }

    def value(): Any = {
      skipSpace()
      if (pos >= text.length) fail("unexpected end")
      text(pos) match {
        case '\'' | '"' => string()
        case '(' => sequence(')')
        case '[' => sequence(']')
        case '{' => dict()
        case c if c.isDigit || c == '-' => integer()
        case _ => word()
      }
    }

    private def string(): String = {
      val quote = text(pos)
      pos += 1
      val sb = new StringBuilder
      while (pos < text.length && text(pos) != quote) {
        if (text(pos) == '\\' && pos + 1 < text.length) pos += 1
        sb.append(text(pos))
        pos += 1
      }
      if (pos >= text.length) fail("unterminated string")
      pos += 1
      sb.toString
    }

    private def sequence(close: Char): Seq[Any] = {
      pos += 1
      val out = mutable.ArrayBuffer.empty[Any]
      skipSpace()
      while (pos < text.length && text(pos) != close) {
        out += value()
        skipSpace()
        if (pos < text.length && text(pos) == ',') pos += 1
        skipSpace()
      }
      expect(close)
      out.toSeq
    }

    private def integer(): Long = {
      val start = pos
      if (text(pos) == '-') pos += 1
      while (pos < text.length && text(pos).isDigit) pos += 1
      if (pos < text.length && text(pos) == 'L') pos += 1 // Python 2 longs
      try text.substring(start, pos).stripSuffix("L").toLong catch {
        case _: NumberFormatException => fail("bad integer")
      }
    }

    private def word(): Any = {
      val start = pos
      while (pos < text.length && text(pos).isLetter) pos += 1
      text.substring(start, pos) match {
        case "True" => true
        case "False" => false
        case "None" => null
        case w => fail(s"unexpected '${if (w.isEmpty) text(pos).toString else w}'")
      }
    }
  }

  private object HeaderParser {
    def parse(text: String, source: String): Map[String, Any] = new HeaderParser(text, source).dict()
  }
}

/** `.npz` archives: a zip (stored or deflated, zip64 allowed, with or without data descriptors) holding one
 * `<name>.npy` per array. Read through the zip's central directory, as numpy does. */
object Npz {
  def read(bytes: Array[Byte], source: String): Map[String, NpyArray] = {
    val tmp = Files.createTempFile("spark-ml-npz-", ".npz")
    try {
      Files.write(tmp, bytes)
      val zip = try new ZipFile(tmp.toFile) catch {
        case e: ZipException => throw new ArtifactException(s"$source: not a valid .npz (zip) archive: ${e.getMessage}")
      }
      try {
        val arrays = mutable.LinkedHashMap.empty[String, NpyArray]
        zip.entries().asScala.filterNot(_.isDirectory).foreach { entry =>
          val file = entry.getName
          if (!file.endsWith(".npy")) {
            throw new ArtifactException(s"$source: entry '$file' is not a .npy array; an .npz holds only arrays")
          }
          val data = try {
            val in = zip.getInputStream(entry)
            try in.readAllBytes() finally in.close()
          } catch {
            case e: ZipException => throw new ArtifactException(s"$source: entry '$file' is corrupt: ${e.getMessage}")
          }
          val name = file.stripSuffix(".npy")
          arrays(name) = Npy.read(data, s"$source[$file]", name)
        }
        if (arrays.isEmpty) throw new ArtifactException(s"$source: the .npz archive holds no arrays")
        arrays.toMap
      } finally zip.close()
    } finally Files.deleteIfExists(tmp)
  }
}
