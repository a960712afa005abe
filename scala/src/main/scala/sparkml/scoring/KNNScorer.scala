package sparkml.scoring

import java.nio.{ByteBuffer, ByteOrder}
import java.nio.charset.StandardCharsets

/** k-NN (`algorithms.builtin.knn.KNNModel`) with a `faiss.Flat` index: `predicted_label`, the most frequent label
 * of the `k` nearest indexed vectors (ties: the smallest label) for a classifier, their mean for a regressor.
 *
 * Queries go through the model's projection first (`sign`: `x R / sqrt(target)`; `fjlt`: zero-pad to a power of
 * two, flip signs, Walsh-Hadamard butterflies, keep the saved coordinates, `/ sqrt(target)`; both in float64,
 * then float32), are normalized for COSINE, and are compared with every indexed vector: squared L2 distance
 * (smallest first) or inner product (largest first), in float64; equal distances keep index order. faiss
 * computes in float32, so distances agree to float32 rounding and the neighbours are the same except between
 * vectors at (nearly) equal distances.
 *
 * Only the exhaustive `faiss.Flat` index is read here: its serialized form is a short header and the raw
 * vectors. IVF indexes (`faiss.IVFFlat`, `faiss.IVFPQ`) fail at load, pointing to the endpoint. The verbose
 * outputs (`labels`, `distances`) are the Python model's (`verbose=True`), not the JVM's. */
final class KNNScorer(val featureDim: Int, k: Int, classifier: Boolean, innerProduct: Boolean, normalize: Boolean,
                      dim: Int, count: Int, vectors: Array[Float], labels: Array[Double], projection: Projection)
  extends Scorer {
  val algorithm = "knn"
  val outputs: Seq[OutputSpec] = Seq(OutputSpec("predicted_label"))

  @transient private lazy val scratch = new ThreadLocal[(Array[Double], Array[Double], Array[Double], Array[Int])] {
    override def initialValue() =
      (new Array[Double](featureDim), new Array[Double](dim), new Array[Double](k), new Array[Int](k))
  }

  def score(x: FeatureRow, out: Array[Any], at: Int): Unit = {
    val (row, query, best, ids) = scratch.get()
    Scorer.densify(x, row)
    projection.apply(row, query)
    if (normalize) {
      var norm = 0.0
      var i = 0
      while (i < dim) { norm += query(i) * query(i); i += 1 }
      norm = math.sqrt(norm)
      if (norm > 0) { i = 0; while (i < dim) { query(i) = (query(i) / norm).toFloat.toDouble; i += 1 } }
    }
    nearest(query, best, ids)
    out(at) = Scorer.float32(if (classifier) vote(ids) else mean(ids))
  }

  /** The `k` best vectors, best first, into `best` (their distances) and `ids`. */
  private def nearest(query: Array[Double], best: Array[Double], ids: Array[Int]): Unit = {
    var filled = 0
    var v = 0
    while (v < count) {
      val base = v * dim
      var d = 0.0
      var i = 0
      if (innerProduct) while (i < dim) { d += query(i) * vectors(base + i); i += 1 }
      else while (i < dim) { val diff = query(i) - vectors(base + i); d += diff * diff; i += 1 }
      if (filled < k || better(d, best(filled - 1))) {
        var j = math.min(filled, k - 1)
        while (j > 0 && better(d, best(j - 1))) { best(j) = best(j - 1); ids(j) = ids(j - 1); j -= 1 }
        best(j) = d
        ids(j) = v
        if (filled < k) filled += 1
      }
      v += 1
    }
  }

  private def better(d: Double, than: Double): Boolean = if (innerProduct) d > than else d < than

  private def vote(ids: Array[Int]): Double = {
    val sorted = ids.map(labels).sorted
    var bestValue = sorted(0)
    var bestRun = 0
    var i = 0
    while (i < k) {
      var j = i
      while (j < k && sorted(j) == sorted(i)) j += 1
      if (j - i > bestRun) { bestRun = j - i; bestValue = sorted(i) }
      i = j
    }
    bestValue
  }

  private def mean(ids: Array[Int]): Double = {
    var sum = 0.0
    var i = 0
    while (i < k) { sum += labels(ids(i)); i += 1 }
    sum / k
  }
}

/** k-NN's dimension reduction on the JVM (`algorithms.builtin.knn.reduction`): rows of `inputDim` features to
 * `outputDim` float32 values. */
sealed trait Projection extends Serializable {
  def apply(row: Array[Double], out: Array[Double]): Unit
}

final case class NoProjection(dim: Int) extends Projection {
  def apply(row: Array[Double], out: Array[Double]): Unit = {
    var i = 0
    while (i < dim) { out(i) = row(i).toFloat.toDouble; i += 1 }
  }
}

final case class SignProjection(inputDim: Int, target: Int, matrix: Array[Double]) extends Projection {
  def apply(row: Array[Double], out: Array[Double]): Unit = {
    val scale = math.sqrt(target.toDouble)
    var j = 0
    while (j < target) {
      var s = 0.0
      var i = 0
      while (i < inputDim) { s += row(i) * matrix(i * target + j); i += 1 }
      out(j) = (s / scale).toFloat.toDouble
      j += 1
    }
  }
}

final case class FjltProjection(inputDim: Int, signs: Array[Double], coordinates: Array[Int]) extends Projection {
  @transient private lazy val buffers = new ThreadLocal[Array[Double]] {
    override def initialValue(): Array[Double] = new Array[Double](signs.length)
  }

  def apply(row: Array[Double], out: Array[Double]): Unit = {
    val b = buffers.get()
    val size = signs.length
    var i = 0
    while (i < size) { b(i) = (if (i < inputDim) row(i) else 0.0) * signs(i); i += 1 }
    var h = 1
    while (h < size) {
      var start = 0
      while (start < size) {
        var j = start
        while (j < start + h) { val a = b(j); val c = b(j + h); b(j) = a + c; b(j + h) = a - c; j += 1 }
        start += 2 * h
      }
      h *= 2
    }
    val scale = math.sqrt(coordinates.length.toDouble)
    var j = 0
    while (j < coordinates.length) { out(j) = (b(coordinates(j)) / scale).toFloat.toDouble; j += 1 }
  }
}

object KNNScorer {
  val IndexFile = "index.faiss"

  def apply(artifact: Artifact, featureDim: Int): KNNScorer = {
    val hp = artifact.manifest.hyperparameters
    def required(name: String): String = hp.getOrElse(name, throw new ArtifactException(
      s"${artifact.location}: the knn manifest has no hyperparameter '$name'"))
    val k = required("k").trim.toInt
    val classifier = required("predictor_type").trim == "classifier"
    val metric = hp.getOrElse("index_metric", "L2").trim
    val index = FlatIndex.read(artifact.blob(IndexFile), s"${artifact.location}/$IndexFile",
      hp.getOrElse("index_type", "faiss.Flat"))
    val labels = artifact.array("labels")
    Scorer.requireShape(artifact, labels, labels.size == index.count, s"(${index.count},): one label per vector")
    if (index.count < k) {
      throw new ArtifactException(s"${artifact.location}: the k-NN index holds ${index.count} vectors, fewer than " +
        s"k ($k)")
    }
    val reduction = hp.getOrElse("dimension_reduction_type", "none").trim
    val projection: Projection = reduction match {
      case "none" => NoProjection(featureDim)
      case "sign" =>
        val m = artifact.array("sign_matrix")
        Scorer.requireShape(artifact, m, m.dims == 2 && m.shape(0) == featureDim && m.shape(1) == index.dim,
          s"($featureDim, ${index.dim})")
        SignProjection(featureDim, index.dim, m.data)
      case "fjlt" =>
        val coordinates = artifact.array("fjlt_coordinates")
        Scorer.requireShape(artifact, coordinates, coordinates.size == index.dim, s"(${index.dim},)")
        FjltProjection(featureDim, artifact.array("fjlt_signs").data, coordinates.data.map(_.toInt))
      case other => throw new ArtifactException(s"${artifact.location}: unknown dimension_reduction_type '$other'")
    }
    if (reduction == "none" && index.dim != featureDim) {
      throw new ArtifactException(s"${artifact.location}: the index holds ${index.dim}-dimensional vectors; " +
        s"feature_dim is $featureDim")
    }
    new KNNScorer(featureDim, k, classifier, index.innerProduct, metric == "COSINE", index.dim, index.count,
      index.vectors, labels.data, projection)
  }
}

/** A serialized `faiss.IndexFlat` (faiss's `write_index`): fourcc `IxF2` (L2), `IxFI` (inner product) or `IxFl`
 * (metric in the header); then `d` (int32), `ntotal` (int64), two int64 fields, `is_trained` (1 byte),
 * `metric_type` (int32; a float32 `metric_arg` follows for metrics above 1), the number of float32 values
 * (uint64) and the vectors, little-endian. */
final case class FlatIndex(dim: Int, count: Int, innerProduct: Boolean, vectors: Array[Float])

object FlatIndex {
  def read(bytes: Array[Byte], source: String, indexType: String): FlatIndex = {
    def fail(problem: String): Nothing = throw new ArtifactException(s"$source: $problem")
    if (bytes.length < 45) fail("too short for a faiss index")
    val fourcc = new String(bytes, 0, 4, StandardCharsets.ISO_8859_1)
    if (!Set("IxF2", "IxFI", "IxFl").contains(fourcc)) {
      fail(s"a $indexType index (faiss fourcc '$fourcc'); the JVM scores only faiss.Flat k-NN indexes natively: " +
        "score this model through its endpoint with sparkml.endpoint.EndpointModel, or with the Python model")
    }
    val buffer = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
    buffer.position(4)
    val dim = buffer.getInt
    val total = buffer.getLong
    buffer.getLong
    buffer.getLong
    buffer.get()
    val metric = buffer.getInt
    if (metric > 1) fail(s"faiss metric type $metric is neither L2 (1) nor inner product (0)")
    val values = buffer.getLong
    if (dim <= 0 || total < 0 || values != dim.toLong * total || total > Int.MaxValue ||
        buffer.remaining() < values * 4) {
      fail(s"inconsistent flat index header (d=$dim, ntotal=$total, $values values, ${buffer.remaining()} bytes left)")
    }
    val vectors = new Array[Float](values.toInt)
    buffer.asFloatBuffer().get(vectors)
    FlatIndex(dim, total.toInt, metric == 0, vectors)
  }
}
