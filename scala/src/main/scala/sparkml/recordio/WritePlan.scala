package sparkml.recordio

import org.apache.spark.ml.linalg.SQLDataTypes
import org.apache.spark.sql.types._

/** How the features column is stored in Spark's rows. */
sealed trait FeatureSource extends Serializable

object FeatureSource {
  /** `VectorUDT`: struct<type: byte, size: int, indices: array<int>, values: array<double>>. */
  case object Vector extends FeatureSource
  final case class FloatArray(elementIsFloat: Boolean, containsNull: Boolean) extends FeatureSource
}

/** How the label column is stored. */
sealed trait LabelSource extends Serializable

object LabelSource {
  final case class Scalar(dataType: DataType) extends LabelSource
  case object Vector extends LabelSource
  final case class FloatArray(elementIsFloat: Boolean, containsNull: Boolean) extends LabelSource
}

/** Everything a write task needs: resolved columns and options. Built and checked on the driver. */
final case class WritePlan(
    featuresCol: String,
    featuresOrdinal: Int,
    features: FeatureSource,
    labelCol: Option[String],
    labelOrdinal: Int,
    label: Option[LabelSource],
    tensor: TensorType,
    recordsPerShard: Long,
    shardSizeBytes: Long,
    allowNonFinite: Boolean)

object WritePlan {
  def resolve(schema: StructType, options: WriteOptions): WritePlan = {
    val (fOrd, fField) = column(schema, options.featuresCol, "featuresCol")
    val features = fField.dataType match {
      case t if t == SQLDataTypes.VectorType => FeatureSource.Vector
      case ArrayType(FloatType, nulls) => FeatureSource.FloatArray(elementIsFloat = true, nulls)
      case ArrayType(DoubleType, nulls) => FeatureSource.FloatArray(elementIsFloat = false, nulls)
      case other =>
        throw new IllegalArgumentException(s"recordio-protobuf: featuresCol '${options.featuresCol}' must be a " +
          s"Vector (VectorUDT) or array<float> / array<double> column, got ${other.simpleString}")
    }
    val labelResolved = options.labelCol.map { name =>
      val (ord, field) = column(schema, name, "labelCol")
      val source = field.dataType match {
        case t if t == SQLDataTypes.VectorType => LabelSource.Vector
        case ArrayType(FloatType, nulls) => LabelSource.FloatArray(elementIsFloat = true, nulls)
        case ArrayType(DoubleType, nulls) => LabelSource.FloatArray(elementIsFloat = false, nulls)
        case t @ (ByteType | ShortType | IntegerType | LongType | FloatType | DoubleType) => LabelSource.Scalar(t)
        case t: DecimalType => LabelSource.Scalar(t)
        case other =>
          throw new IllegalArgumentException(s"recordio-protobuf: labelCol '$name' must be numeric, a Vector or " +
            s"array<float> / array<double>, got ${other.simpleString}")
      }
      (ord, source)
    }
    WritePlan(
      featuresCol = options.featuresCol,
      featuresOrdinal = fOrd,
      features = features,
      labelCol = options.labelCol,
      labelOrdinal = labelResolved.map(_._1).getOrElse(-1),
      label = labelResolved.map(_._2),
      tensor = options.tensor,
      recordsPerShard = options.recordsPerShard,
      shardSizeBytes = options.shardSizeBytes,
      allowNonFinite = options.allowNonFinite)
  }

  private def column(schema: StructType, name: String, option: String): (Int, StructField) = {
    val matches = schema.fields.zipWithIndex.filter(_._1.name == name)
    val found = if (matches.nonEmpty) matches else schema.fields.zipWithIndex.filter(_._1.name.equalsIgnoreCase(name))
    found match {
      case Array((field, i)) => (i, field)
      case Array() =>
        throw new IllegalArgumentException(s"recordio-protobuf: $option '$name' is not a column of the DataFrame " +
          s"(columns: ${schema.fieldNames.mkString(", ")})")
      case _ =>
        throw new IllegalArgumentException(s"recordio-protobuf: $option '$name' matches more than one column")
    }
  }
}
