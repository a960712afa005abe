package sparkml.endpoint

import java.io.ByteArrayInputStream
import java.nio.charset.StandardCharsets

import scala.collection.concurrent.TrieMap
import scala.collection.mutable
import scala.jdk.CollectionConverters._

import com.fasterxml.jackson.databind.{JsonNode, ObjectMapper}

import sparkml.recordio.{Bytes, FrameReader}
import sparkml.recordio.Quote
import sparkml.scoring.OutputSpec

/** A response body that does not hold what the request asked for; the message says what is wrong. */
class ResponseFormatException(message: String) extends IllegalArgumentException(message)

/** Decodes a response body into per-row output values keyed by SageMaker's output names: for each output, one
 * array of values per row (one value for a scalar). Outputs the endpoint did not answer are absent (the rows
 * get nulls); keys nobody asked for are ignored. */
trait ResponseDeserializer extends Serializable {
  def accept: String

  def deserialize(body: Array[Byte], rows: Int, outputs: Seq[OutputSpec]): Map[String, Array[Array[Double]]]
}

object ResponseDeserializer {
  private val factories = TrieMap[String, () => ResponseDeserializer](
    "protobuf" -> (() => new ProtobufResponseDeserializer),
    "json" -> (() => new JSONResponseDeserializer),
    "jsonlines" -> (() => new JSONLinesResponseDeserializer),
    "csv" -> (() => new CSVResponseDeserializer))

  def register(name: String, factory: () => ResponseDeserializer): Unit = factories(name) = factory

  def names: Seq[String] = factories.keys.toSeq.sorted

  def apply(name: String): ResponseDeserializer = factories.get(name).map(_()).getOrElse {
    throw new IllegalArgumentException(s"unknown deserializer ${Quote.py(name)}; known: ${names.mkString(", ")} " +
      "(ResponseDeserializer.register adds one)")
  }

  private[endpoint] val mapper = new ObjectMapper()

  /** Per-record maps of values turned into per-output columns; every record must hold every key it uses. */
  private[endpoint] def columns(records: Seq[Map[String, Array[Double]]], source: String,
                                outputs: Seq[OutputSpec]): Map[String, Array[Array[Double]]] = {
    val wanted = outputs.map(_.name).toSet
    val keys = records.iterator.flatMap(_.keys).filter(wanted).toSet
    keys.iterator.map { key =>
      val spec = outputs.find(_.name == key).get
      val values = records.zipWithIndex.map { case (record, i) =>
        val v = record.getOrElse(key, throw new ResponseFormatException(
          s"$source: output ${Quote.py(key)} is missing from some records (record $i)"))
        if (!spec.isVector && v.length != 1) {
          throw new ResponseFormatException(s"$source: output ${Quote.py(key)} has ${v.length} values in record $i; " +
            "it was declared a scalar (declare it a vector)")
        }
        v
      }
      key -> values.toArray
    }.toMap
  }
}

/** `application/x-recordio-protobuf`: one Record per row, each output a tensor under `label[<name>]`. */
class ProtobufResponseDeserializer extends ResponseDeserializer {
  val accept = "application/x-recordio-protobuf"

  def deserialize(body: Array[Byte], rows: Int, outputs: Seq[OutputSpec]): Map[String, Array[Array[Double]]] = {
    val source = "recordIO-protobuf response"
    val reader = new FrameReader(new ByteArrayInputStream(body), source)
    val records = mutable.ArrayBuffer.empty[Map[String, Array[Double]]]
    var length = reader.next()
    while (length >= 0) {
      records += new LabelDecoder(reader.payload, length, s"$source: record ${records.size}").decode()
      length = reader.next()
    }
    ResponseDeserializer.columns(records.toSeq, source, outputs)
  }
}

/** Reads the `label` map of a Record payload: each entry's tensor values (float32, float64 or int32). */
private final class LabelDecoder(buf: Array[Byte], end: Int, source: String) {
  private var pos = 0

  private def fail(problem: String): Nothing =
    throw new ResponseFormatException(s"$source is not a valid aialgs.data.Record: $problem")

  def decode(): Map[String, Array[Double]] = {
    val out = mutable.LinkedHashMap.empty[String, Array[Double]]
    while (pos < end) {
      val tag = varint(end)
      if (tag == 0x12) {
        val e = delimited(end)
        entry(e).foreach { case (k, v) => out(k) = v }
        pos = e
      } else skip(tag, end)
    }
    out.toMap
  }

  private def entry(end: Int): Option[(String, Array[Double])] = {
    var key: String = null
    var values: Array[Double] = Array.emptyDoubleArray
    while (pos < end) {
      val tag = varint(end)
      if (tag == 0x0A) {
        val e = delimited(end)
        key = new String(buf, pos, e - pos, StandardCharsets.UTF_8)
        pos = e
      } else if (tag == 0x12) {
        val e = delimited(end)
        values = value(e)
        pos = e
      } else skip(tag, end)
    }
    Option(key).map(_ -> values)
  }

  private def value(end: Int): Array[Double] = {
    var values = Array.emptyDoubleArray
    while (pos < end) {
      val tag = varint(end)
      val field = (tag >>> 3).toInt
      if ((tag & 7) == 2 && (field == 2 || field == 3 || field == 7)) {
        val e = delimited(end)
        values = tensor(e, field)
        pos = e
      } else skip(tag, end)
    }
    values
  }

  private def tensor(end: Int, kind: Int): Array[Double] = {
    val values = mutable.ArrayBuilder.make[Double]
    while (pos < end) {
      val tag = varint(end)
      val wire = (tag & 7).toInt
      if ((tag >>> 3) == 1) {
        if (wire == 2) {
          val e = delimited(end)
          while (pos < e) values += scalar(kind, e)
        } else values += scalar(kind, end)
      } else skip(tag, end)
    }
    values.result()
  }

  private def scalar(kind: Int, end: Int): Double = kind match {
    case 2 =>
      if (pos + 4 > end) fail("truncated float value")
      val v = java.lang.Float.intBitsToFloat(Bytes.int32LE(buf, pos)).toDouble; pos += 4; v
    case 3 =>
      if (pos + 8 > end) fail("truncated double value")
      val v = java.lang.Double.longBitsToDouble(Bytes.int64LE(buf, pos)); pos += 8; v
    case _ => varint(end).toInt.toDouble
  }

  private def varint(end: Int): Long = {
    var result = 0L
    var shift = 0
    while (true) {
      if (pos >= end) fail("truncated varint")
      val b = buf(pos)
      pos += 1
      result |= (b & 0x7FL) << shift
      if (b >= 0) return result
      shift += 7
      if (shift >= 70) fail("varint longer than 10 bytes")
    }
    result
  }

  private def delimited(end: Int): Int = {
    val n = varint(end)
    if (n < 0 || pos + n > end) fail(s"a field of $n bytes runs past the end of its message")
    pos + n.toInt
  }

  private def skip(tag: Long, end: Int): Unit = (tag & 7).toInt match {
    case 0 => varint(end)
    case 1 => if (pos + 8 > end) fail("truncated fixed64 field") else pos += 8
    case 2 => pos = delimited(end)
    case 5 => if (pos + 4 > end) fail("truncated fixed32 field") else pos += 4
    case w => fail(s"unsupported wire type $w")
  }
}

/** JSON records: an object's values as numbers or lists of numbers. */
private[endpoint] object JsonRecords {
  def record(node: JsonNode, source: String, index: Int): Map[String, Array[Double]] = {
    if (!node.isObject) {
      throw new ResponseFormatException(s"$source: record $index is a JSON ${kind(node)}, not an object")
    }
    node.properties().asScala.iterator.map { e =>
      val v = e.getValue
      val values =
        if (v.isNumber) Array(v.asDouble)
        else if (v.isArray && v.elements().asScala.forall(_.isNumber)) v.elements().asScala.map(_.asDouble).toArray
        else throw new ResponseFormatException(s"$source: record $index output ${Quote.py(e.getKey)} is a JSON " +
          s"${kind(v)}, not a number or a list of numbers")
      e.getKey -> values
    }.toMap
  }

  def parse(text: String, source: String): JsonNode =
    try ResponseDeserializer.mapper.readTree(text) catch {
      case e: Exception => throw new ResponseFormatException(s"$source is not JSON: " +
        e.getMessage.linesIterator.take(1).mkString)
    }

  private def kind(v: JsonNode): String = v.getNodeType.toString.toLowerCase(java.util.Locale.ROOT)
}

/** `application/json`: `{"predictions": [...]}` (PCA `"projections"`, RCF `"scores"`): any single list
 * envelope, or a bare list. */
class JSONResponseDeserializer extends ResponseDeserializer {
  val accept = "application/json"

  def deserialize(body: Array[Byte], rows: Int, outputs: Seq[OutputSpec]): Map[String, Array[Array[Double]]] = {
    val source = "JSON response"
    val doc = JsonRecords.parse(new String(body, StandardCharsets.UTF_8), source)
    val list = if (doc.isArray) doc else if (doc.isObject) {
      val lists = doc.properties().asScala.filter(_.getValue.isArray).toSeq
      if (lists.size != 1) {
        throw new ResponseFormatException(s"$source: expected one list envelope, got keys " +
          doc.fieldNames().asScala.toSeq.sorted.mkString("[", ", ", "]"))
      }
      lists.head.getValue
    } else throw new ResponseFormatException(s"$source: expected an object or a list")
    val records = list.elements().asScala.zipWithIndex.map { case (n, i) => JsonRecords.record(n, source, i) }.toSeq
    ResponseDeserializer.columns(records, source, outputs)
  }
}

/** `application/jsonlines`: one record object per line. */
class JSONLinesResponseDeserializer extends ResponseDeserializer {
  val accept = "application/jsonlines"

  def deserialize(body: Array[Byte], rows: Int, outputs: Seq[OutputSpec]): Map[String, Array[Array[Double]]] = {
    val source = "JSON Lines response"
    val lines = new String(body, StandardCharsets.UTF_8).split("\n").iterator.filter(_.trim.nonEmpty)
    val records = lines.zipWithIndex.map { case (line, i) =>
      JsonRecords.record(JsonRecords.parse(line, s"$source line ${i + 1}"), source, i)
    }.toSeq
    ResponseDeserializer.columns(records, source, outputs)
  }
}

/** `text/csv`: one line per row with the outputs in their declared order; a vector output (at most one) takes
 * the columns the scalars leave (PCA's projection, spread over columns). */
class CSVResponseDeserializer extends ResponseDeserializer {
  val accept = "text/csv"

  def deserialize(body: Array[Byte], rows: Int, outputs: Seq[OutputSpec]): Map[String, Array[Array[Double]]] = {
    val source = "CSV response"
    val vectors = outputs.count(_.isVector)
    if (vectors > 1) {
      throw new ResponseFormatException(s"$source: cannot split CSV columns among ${vectors} vector outputs; " +
        "use the json or protobuf deserializer")
    }
    val lines = new String(body, StandardCharsets.UTF_8).split("\n").iterator.map(_.trim).filter(_.nonEmpty).toSeq
    val records = lines.zipWithIndex.map { case (line, i) =>
      val cells = line.split(",", -1).map(_.trim)
      val values = cells.map { c =>
        try c.toDouble catch {
          case _: NumberFormatException =>
            throw new ResponseFormatException(s"$source: line ${i + 1} holds ${Quote.py(c)}, not a number")
        }
      }
      val width = values.length - (outputs.size - vectors)
      if (width < (if (vectors == 1) 1 else 0) || (vectors == 0 && values.length != outputs.size)) {
        throw new ResponseFormatException(s"$source: line ${i + 1} has ${values.length} columns; expected " +
          outputs.map(o => if (o.isVector) s"${o.name}[...]" else o.name).mkString(", "))
      }
      var at = 0
      outputs.map { o =>
        val n = if (o.isVector) width else 1
        val slice = java.util.Arrays.copyOfRange(values, at, at + n)
        at += n
        o.name -> slice
      }.toMap
    }
    ResponseDeserializer.columns(records, source, outputs)
  }
}
