package sparkml.scoring

/** K-Means (`algorithms.builtin.kmeans.algorithm.KMeansModel`): `closest_cluster` (as a float, like SageMaker's) and
 * `distance_to_cluster`. The closest center minimizes `‖c‖² - 2 x·c`; the distance is exact for dense rows and
 * `sqrt(max(‖x‖² + ‖c‖² - 2 x·c, 0))` for sparse ones, as in `closest_centers`. */
final class KMeansScorer(val featureDim: Int, k: Int, centersByFeature: Array[Double], centers: Array[Double],
                         centerNorms: Array[Double]) extends Scorer {
  val algorithm = "kmeans"
  val outputs: Seq[OutputSpec] = Seq(OutputSpec("closest_cluster"), OutputSpec("distance_to_cluster"))

  @transient private lazy val dots = new ThreadLocal[Array[Double]] {
    override def initialValue(): Array[Double] = new Array[Double](k)
  }

  def score(x: FeatureRow, out: Array[Any], at: Int): Unit = {
    val dot = dots.get()
    Scorer.dotColumns(x, centersByFeature, k, dot)
    var best = 0
    var bestScore = Double.NaN
    var j = 0
    while (j < k) {
      val s = centerNorms(j) - 2.0 * dot(j)
      if (j == 0 || (!bestScore.isNaN && (s < bestScore || s.isNaN))) { best = j; bestScore = s }
      j += 1
    }
    val d2 = if (x.isDense) {
      var sum = 0.0
      val from = best * featureDim
      var i = 0
      while (i < featureDim) { val diff = x.values(i) - centers(from + i); sum += diff * diff; i += 1 }
      sum
    } else {
      var x2 = 0.0
      var e = 0
      while (e < x.nnz) { x2 += x.values(e) * x.values(e); e += 1 }
      math.max(x2 + bestScore, 0.0)
    }
    out(at) = Scorer.float32(best.toDouble)
    out(at + 1) = Scorer.float32(math.sqrt(d2))
  }
}

object KMeansScorer {
  def apply(artifact: Artifact, featureDim: Int): KMeansScorer = {
    val c = artifact.array("centroids")
    Scorer.requireShape(artifact, c, c.dims == 2 && c.shape(1) == featureDim && c.shape(0) > 0, s"(k, $featureDim)")
    val k = c.shape(0).toInt
    val byFeature = new Array[Double](featureDim * k)
    val norms = new Array[Double](k)
    for (j <- 0 until k; i <- 0 until featureDim) {
      val v = c.data(j * featureDim + i)
      byFeature(i * k + j) = v
      norms(j) += v * v
    }
    new KMeansScorer(featureDim, k, byFeature, c.data, norms)
  }
}
