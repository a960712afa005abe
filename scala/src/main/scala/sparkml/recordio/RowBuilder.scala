package sparkml.recordio

import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.{GenericInternalRow, UnsafeArrayData}
import org.apache.spark.unsafe.Platform

/** A decoded feature vector as Spark's `VectorUDT` stores it, plus its size. */
final case class VectorValue(row: InternalRow, size: Int)

/** Turns a decoded record into Spark values, with the same rules (and messages) as `algorithms.records`. */
object RowBuilder {
  def features(d: RecordDecoder, expectedDim: Option[Int]): VectorValue = {
    val t = d.features
    if (!t.present) {
      val keys = if (d.otherFeatureKeys.isEmpty) "none" else d.otherFeatureKeys.sorted.mkString(", ")
      d.fail(s"has no features['values'] (feature keys: $keys)")
    }
    checkNumeric(d, t)
    val sparse = t.keyCount > 0 || (t.shapeCount == 1 && t.count == 0)
    if (!sparse) {
      expectedDim.foreach { dim =>
        if (t.count != dim) d.fail(s"has ${t.count} values but the channel's records have $dim")
      }
      VectorValue(denseVector(t.values, t.count), t.count)
    } else {
      if (t.shapeCount != 1) {
        d.fail(s"is sparse with shape ${t.shapeString}; a vector needs a 1-D shape")
      }
      if (t.keyCount != t.count) d.fail(s"has ${t.keyCount} keys but ${t.count} values")
      val dimLong = t.shape(0)
      if (dimLong < 0 || dimLong > Int.MaxValue - 16) d.fail(s"has a sparse dimension of $dimLong, too large for a Vector")
      val dim = dimLong.toInt
      expectedDim.foreach { e =>
        if (dim != e) d.fail(s"is a sparse vector of dimension $dim but the channel's records have $e")
      }
      val n = t.count
      val indices = new Array[Int](n)
      val values = java.util.Arrays.copyOf(t.values, n)
      var sorted = true
      var i = 0
      while (i < n) {
        val k = t.keys(i)
        if (k < 0 || k >= dim) d.fail(s"has key $k beyond dimension $dim")
        indices(i) = k.toInt
        if (i > 0 && indices(i) <= indices(i - 1)) sorted = false
        i += 1
      }
      if (!sorted) sortPairs(d, indices, values)
      VectorValue(sparseVector(dim, indices, values), dim)
    }
  }

  /** Values in the record's label, or -1 when it has none. */
  def labelCount(d: RecordDecoder): Int = {
    val t = d.label
    if (!t.present) {
      if (d.otherLabelKeys > 0) d.fail("has labels but no label['values']")
      return -1
    }
    checkNumeric(d, t)
    if (t.keyCount > 0) d.fail("has a sparse label; labels must be dense")
    t.count
  }

  def labelValues(d: RecordDecoder): Array[Double] = java.util.Arrays.copyOf(d.label.values, d.label.count)

  private def checkNumeric(d: RecordDecoder, t: TensorSlots): Unit = {
    if (t.kind.isEmpty || t.kind == "bytes") {
      d.fail(s"value holds ${if (t.kind.isEmpty) "nothing" else t.kind}, not a numeric tensor")
    }
  }

  private def sortPairs(d: RecordDecoder, indices: Array[Int], values: Array[Double]): Unit = {
    val order = indices.indices.sortBy(indices(_)).toArray
    val si = order.map(indices(_))
    val sv = order.map(values(_))
    var i = 1
    while (i < si.length) {
      if (si(i) == si(i - 1)) d.fail(s"has key ${si(i)} twice")
      i += 1
    }
    System.arraycopy(si, 0, indices, 0, si.length)
    System.arraycopy(sv, 0, values, 0, sv.length)
  }

  def denseVector(values: Array[Double], n: Int): InternalRow = {
    val row = new GenericInternalRow(4)
    row.setByte(0, 1)
    row.setNullAt(1)
    row.setNullAt(2)
    row.update(3, UnsafeArrayData.fromPrimitiveArray(values, Platform.DOUBLE_ARRAY_OFFSET, n, 8))
    row
  }

  def sparseVector(size: Int, indices: Array[Int], values: Array[Double]): InternalRow = {
    val row = new GenericInternalRow(4)
    row.setByte(0, 0)
    row.setInt(1, size)
    row.update(2, UnsafeArrayData.fromPrimitiveArray(indices))
    row.update(3, UnsafeArrayData.fromPrimitiveArray(values))
    row
  }
}
