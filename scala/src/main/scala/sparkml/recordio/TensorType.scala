package sparkml.recordio

/** The float tensor a writer emits: `Value.float32_tensor` (field 2) or `Value.float64_tensor` (field 3). */
sealed abstract class TensorType(val name: String, val valueTag: Int, val itemSize: Int) extends Serializable

object TensorType {
  case object Float32 extends TensorType("float32", 0x12, 4)
  case object Float64 extends TensorType("float64", 0x1A, 8)

  val all: Seq[TensorType] = Seq(Float32, Float64)

  def parse(text: String): TensorType = all.find(_.name.equalsIgnoreCase(text.trim)).getOrElse {
    throw new IllegalArgumentException(
      s"recordio-protobuf: dtype must be one of ${all.map(_.name).mkString(", ")}, got '$text'")
  }
}

/** Byte lengths of the protobuf pieces of one record, exactly as the Python codec lays them out.
 *
 * A map entry is `tag | len | 0A 06 "values" | 12 | len(Value) | tensorTag | len(tensor) | tensor`.
 * A dense tensor is `0A | len | values` (nothing for an empty vector); a sparse one is
 * `0A | len | values | 12 | len | keys` (when it has entries) followed by `1A | len | dim`.
 */
object RecordLayout {
  /** Bytes of `0A 06 "values"` plus the Value field tag. */
  val KeyAndValueTag: Int = 9

  def denseTensorLength(count: Int, itemSize: Int): Int = {
    val data = count * itemSize
    if (count == 0) 0 else 1 + Varint.size(data) + data
  }

  def sparseTensorLength(nnz: Int, keyBytes: Int, dim: Int, itemSize: Int): Int = {
    val vb = nnz * itemSize
    val entries = if (nnz == 0) 0 else 1 + Varint.size(vb) + vb + 1 + Varint.size(keyBytes) + keyBytes
    entries + 2 + Varint.size(dim)
  }

  def valueLength(tensorLength: Int): Int = 1 + Varint.size(tensorLength) + tensorLength

  def entryLength(tensorLength: Int): Int = {
    val value = valueLength(tensorLength)
    KeyAndValueTag + Varint.size(value) + value
  }

  /** The whole record field (tag, length, entry) for a tensor of this length. */
  def fieldLength(tensorLength: Int): Int = {
    val entry = entryLength(tensorLength)
    1 + Varint.size(entry) + entry
  }
}
