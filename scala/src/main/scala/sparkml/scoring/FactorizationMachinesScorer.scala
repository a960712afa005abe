package sparkml.scoring

import sparkml.recordio.Quote

/** Factorization Machines (`algorithms.builtin.factorization_machines.algorithm.FactorizationMachinesModel`):
 * `ŷ = w0 + x·w + ½ Σ_f ((x·V_f)² - (x²)·(V_f²))`; a binary classifier answers `score` = sigmoid(ŷ) and
 * `predicted_label` = score >= 0.5, a regressor `score` = ŷ. */
final class FactorizationMachinesScorer(val featureDim: Int, binary: Boolean, factors: Int, w0: Double,
                                        theta: Array[Double], thetaSquared: Array[Double]) extends Scorer {
  val algorithm = "factorization-machines"
  val outputs: Seq[OutputSpec] =
    if (binary) Seq(OutputSpec("score"), OutputSpec("predicted_label")) else Seq(OutputSpec("score"))

  private val width = factors + 1

  @transient private lazy val buffers = new ThreadLocal[(Array[Double], Array[Double])] {
    override def initialValue(): (Array[Double], Array[Double]) = (new Array[Double](width), new Array[Double](width))
  }

  def score(x: FeatureRow, out: Array[Any], at: Int): Unit = {
    val (xt, x2v) = buffers.get()
    Scorer.dotColumns(x, theta, width, xt) // column 0: x·w; columns 1..f: x·V
    java.util.Arrays.fill(x2v, 0.0)
    val values = x.values
    val n = if (x.isDense) x.size else x.nnz
    var e = 0
    while (e < n) {
      val v = values(e)
      if (v != 0.0) {
        val from = (if (x.isDense) e else x.indices(e)) * width
        val v2 = v * v
        var f = 1
        while (f < width) { x2v(f) += v2 * thetaSquared(from + f); f += 1 }
      }
      e += 1
    }
    var pairs = 0.0
    var f = 1
    while (f < width) { pairs += xt(f) * xt(f) - x2v(f); f += 1 }
    val raw = w0 + xt(0) + 0.5 * pairs
    if (binary) {
      val score = Scorer.expit(raw).toFloat
      out(at) = java.lang.Double.valueOf(score.toDouble)
      out(at + 1) = java.lang.Double.valueOf(if (score >= 0.5f) 1.0 else 0.0)
    } else {
      out(at) = Scorer.float32(raw)
    }
  }
}

object FactorizationMachinesScorer {
  def apply(artifact: Artifact, featureDim: Int): FactorizationMachinesScorer = {
    val predictorType = artifact.manifest.hyperparameters.get("predictor_type")
    if (!predictorType.contains("binary_classifier") && !predictorType.contains("regressor")) {
      throw new ArtifactException(s"${artifact.location}: factorization-machines model has predictor_type " +
        s"${predictorType.map(Quote.py).getOrElse("None")}; expected binary_classifier or regressor")
    }
    val missing = Seq("w0", "w", "V").filterNot(artifact.arrays.contains)
    if (missing.nonEmpty) {
      throw new ArtifactException(s"${artifact.location}: factorization-machines model lacks the array(s) " +
        missing.mkString(", "))
    }
    val w = artifact.array("w")
    val v = artifact.array("V")
    Scorer.requireShape(artifact, w, w.size == featureDim, s"($featureDim,)")
    Scorer.requireShape(artifact, v, v.dims == 2 && v.shape(0) == featureDim, s"($featureDim, num_factors)")
    val factors = v.shape(1).toInt
    val width = factors + 1
    val theta = new Array[Double](featureDim * width)
    val squared = new Array[Double](featureDim * width)
    for (i <- 0 until featureDim) {
      theta(i * width) = w.data(i).toFloat.toDouble
      for (f <- 0 until factors) {
        val vf = v.data(i * factors + f).toFloat
        theta(i * width + 1 + f) = vf.toDouble
        squared(i * width + 1 + f) = (vf * vf).toDouble // V * V in float32, as the model precomputes it
      }
    }
    val w0 = artifact.array("w0").data.headOption.getOrElse(throw new ArtifactException(
      s"${artifact.location}: factorization-machines array 'w0' is empty"))
    new FactorizationMachinesScorer(featureDim, predictorType.contains("binary_classifier"), factors,
      w0.toFloat.toDouble, theta, squared)
  }
}
