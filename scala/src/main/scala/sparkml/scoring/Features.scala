package sparkml.scoring

import org.apache.spark.ml.linalg.{DenseVector, SparseVector, SQLDataTypes}
import org.apache.spark.sql.Row
import org.apache.spark.sql.types._

import sparkml.recordio.Quote

/** One row's features as the models read them: float32 values (held as doubles), dense or sparse.
 *
 * Dense: `values(0 until size)`, `indices == null`. Sparse: `nnz` entries at `indices(i)` / `values(i)`.
 * Values are rounded to float32 first because that is what the Python side scores (it converts a vector
 * column to a float32 matrix) and what an endpoint receives (float32 tensors).
 */
final class FeatureRow {
  var size = 0
  var nnz = 0
  var indices: Array[Int] = _
  var values: Array[Double] = new Array[Double](16)

  def isDense: Boolean = indices == null

  private[scoring] def reserve(n: Int): Unit =
    if (values.length < n) values = new Array[Double](math.max(n, values.length * 2))
}

/** Bad data in the features column; the message names the column and the row, as the Python side's does. */
class FeatureColumnException(message: String) extends IllegalArgumentException(message)

/** How a features column is stored: a `VectorUDT` or an array of numbers. */
sealed trait FeatureKind extends Serializable

object FeatureKind {
  case object Vector extends FeatureKind
  case object NumberArray extends FeatureKind

  /** The kind of `column` in `schema`; fails naming the column when it is missing or of another type. */
  def of(schema: StructType, column: String): FeatureKind = {
    if (!schema.fieldNames.contains(column)) {
      throw new FeatureColumnException(s"featuresCol ${Quote.py(column)} is not a column (columns: " +
        s"${schema.fieldNames.mkString(", ")})")
    }
    schema(column).dataType match {
      case t if t == SQLDataTypes.VectorType => Vector
      case ArrayType(_: NumericType, _) => NumberArray
      case other =>
        throw new FeatureColumnException(s"column ${Quote.py(column)} has type ${other.simpleString}; expected a " +
          "vector (VectorUDT) or array<float|double>")
    }
  }
}

/** Reads a row's features into a reusable [[FeatureRow]]. `position` is the row's index within its partition. */
final class FeatureReader(column: String) {
  private val row = new FeatureRow

  def read(r: Row, ordinal: Int, position: Long): FeatureRow = {
    if (r.isNullAt(ordinal)) throw new FeatureColumnException(s"column ${Quote.py(column)} is null at row $position")
    r.get(ordinal) match {
      case d: DenseVector =>
        val n = d.size
        row.reserve(n)
        val src = d.values
        var i = 0
        while (i < n) { row.values(i) = src(i).toFloat.toDouble; i += 1 }
        row.size = n
        row.nnz = n
        row.indices = null
      case s: SparseVector =>
        val n = s.indices.length
        row.reserve(n)
        val src = s.values
        var i = 0
        while (i < n) { row.values(i) = src(i).toFloat.toDouble; i += 1 }
        row.size = s.size
        row.nnz = n
        row.indices = s.indices
      case seq: scala.collection.Seq[_] =>
        val n = seq.length
        row.reserve(n)
        var i = 0
        val it = seq.iterator
        while (it.hasNext) {
          row.values(i) = it.next() match {
            case v: java.lang.Number => v.floatValue().toDouble
            case _ => throw new FeatureColumnException(s"column ${Quote.py(column)} holds non-numeric or null " +
              s"array elements (row $position)")
          }
          i += 1
        }
        row.size = n
        row.nnz = n
        row.indices = null
      case other =>
        throw new FeatureColumnException(s"column ${Quote.py(column)} holds a ${other.getClass.getName}; expected a " +
          "vector (VectorUDT) or array<float|double>")
    }
    row
  }
}
