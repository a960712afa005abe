package sparkml.scoring

import org.apache.spark.ml.linalg.{SQLDataTypes, Vectors}
import org.apache.spark.sql.types.{DataType, DoubleType}

/** One key of a model's response (SageMaker's name): per row a scalar (a double column) or a vector (a
 * `VectorUDT` column). The same declarations as the Python models' `outputs`. */
final case class OutputSpec(name: String, kind: String = OutputSpec.Scalar) {
  require(kind == OutputSpec.Scalar || kind == OutputSpec.Vector, s"output kind must be scalar or vector, got '$kind'")

  def isVector: Boolean = kind == OutputSpec.Vector

  def dataType: DataType = if (isVector) SQLDataTypes.VectorType else DoubleType
}

object OutputSpec {
  val Scalar = "scalar"
  val Vector = "vector"
}

/** A trained built-in model scored natively on the JVM, with the exact math of its Python `Model.predict`.
 *
 * Inputs are float32 values (see [[FeatureRow]]); the arithmetic is float64 and each output is rounded to
 * float32, as the Python models return it. `score` writes the outputs, in the order of `outputs`, into
 * `out` from index `at`: a `java.lang.Double` for a scalar, a `DenseVector` for a vector.
 */
trait Scorer extends Serializable {
  def algorithm: String
  def featureDim: Int
  def outputs: Seq[OutputSpec]
  def score(x: FeatureRow, out: Array[Any], at: Int): Unit
}

object Scorer {
  val Algorithms: Seq[String] = Seq("kmeans", "pca", "linear-learner", "factorization-machines", "randomcutforest",
    "knn")

  /** Fails, naming the alternative, for an algorithm that has no JVM scorer (before its files are read). */
  def requireNative(location: String, algorithm: String): Unit =
    if (!Algorithms.contains(algorithm)) {
      throw new ArtifactException(s"$location: algorithm '$algorithm' has no native JVM scorer (it has: " +
        s"${Algorithms.mkString(", ")}); score it through its endpoint with sparkml.endpoint.EndpointModel")
    }

  def fromArtifact(artifact: Artifact): Scorer = {
    val m = artifact.manifest
    val dim = m.featureDim.getOrElse(throw new ArtifactException(
      s"${artifact.location}: the manifest records no feature_dim"))
    requireNative(artifact.location, m.algorithm)
    m.algorithm match {
      case "kmeans" => KMeansScorer(artifact, dim)
      case "pca" => PCAScorer(artifact, dim)
      case "linear-learner" => LinearLearnerScorer(artifact, dim)
      case "factorization-machines" => FactorizationMachinesScorer(artifact, dim)
      case "randomcutforest" => RandomCutForestScorer(artifact, dim)
      case "knn" => KNNScorer(artifact, dim)
    }
  }

  /** A row's features as a dense array of `featureDim` values (zeros where a sparse row has no entry). */
  private[scoring] def densify(x: FeatureRow, out: Array[Double]): Unit =
    if (x.isDense) System.arraycopy(x.values, 0, out, 0, x.size)
    else {
      java.util.Arrays.fill(out, 0, x.size, 0.0)
      var e = 0
      while (e < x.nnz) { out(x.indices(e)) = x.values(e); e += 1 }
    }

  /** `x · column` of a row-major `(featureDim, width)` matrix, for one row of features. */
  private[scoring] def dotColumns(x: FeatureRow, matrix: Array[Double], width: Int, out: Array[Double]): Unit = {
    java.util.Arrays.fill(out, 0, width, 0.0)
    val values = x.values
    if (x.isDense) {
      var i = 0
      while (i < x.size) {
        val v = values(i)
        if (v != 0.0) addScaled(matrix, i * width, width, v, out)
        i += 1
      }
    } else {
      var e = 0
      while (e < x.nnz) {
        addScaled(matrix, x.indices(e) * width, width, values(e), out)
        e += 1
      }
    }
  }

  private def addScaled(matrix: Array[Double], from: Int, width: Int, v: Double, out: Array[Double]): Unit = {
    var j = 0
    while (j < width) { out(j) += v * matrix(from + j); j += 1 }
  }

  def float32(v: Double): java.lang.Double = java.lang.Double.valueOf(v.toFloat.toDouble)

  def float32Vector(values: Array[Double], n: Int): org.apache.spark.ml.linalg.DenseVector = {
    val out = new Array[Double](n)
    var i = 0
    while (i < n) { out(i) = values(i).toFloat.toDouble; i += 1 }
    Vectors.dense(out).toDense
  }

  /** `scipy.special.expit`. */
  def expit(x: Double): Double = 1.0 / (1.0 + math.exp(-x))

  /** A numpy-style `argmax` (the first largest; a NaN wins, as in numpy). */
  def argmax(values: Array[Double], n: Int): Int = {
    var best = 0
    var i = 1
    while (i < n) {
      val v = values(i)
      if (!values(best).isNaN && (v > values(best) || v.isNaN)) best = i
      i += 1
    }
    best
  }

  def requireShape(artifact: Artifact, array: NpyArray, ok: Boolean, expected: String): Unit =
    if (!ok) {
      throw new ArtifactException(s"${artifact.location}: ${artifact.manifest.algorithm} array '${array.name}' has " +
        s"shape ${array.shapeString}; expected $expected")
    }
}
