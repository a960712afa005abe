package sparkml.scoring

/** PCA (`algorithms.builtin.pca.PCAModel`): `projection = (x - mean) @ v`, computed as `x @ v - mean @ v` like
 * `PCAModel.project`, so sparse rows stay sparse. */
final class PCAScorer(val featureDim: Int, components: Int, v: Array[Double], offset: Array[Double]) extends Scorer {
  val algorithm = "pca"
  val outputs: Seq[OutputSpec] = Seq(OutputSpec("projection", OutputSpec.Vector))

  @transient private lazy val buffers = new ThreadLocal[Array[Double]] {
    override def initialValue(): Array[Double] = new Array[Double](components)
  }

  def score(x: FeatureRow, out: Array[Any], at: Int): Unit = {
    val p = buffers.get()
    Scorer.dotColumns(x, v, components, p)
    var j = 0
    while (j < components) { p(j) -= offset(j); j += 1 }
    out(at) = Scorer.float32Vector(p, components)
  }
}

object PCAScorer {
  def apply(artifact: Artifact, featureDim: Int): PCAScorer = {
    val s = artifact.array("s")
    val v = artifact.array("v")
    val mean = artifact.array("mean")
    val c = s.size
    Scorer.requireShape(artifact, v, v.dims == 2 && v.shape(0) == featureDim && v.shape(1) == c,
      s"($featureDim, $c): feature_dim by the number of singular values")
    Scorer.requireShape(artifact, mean, mean.size == featureDim, s"$featureDim values")
    val offset = new Array[Double](c)
    for (i <- 0 until featureDim; j <- 0 until c) offset(j) += mean.data(i) * v.data(i * c + j)
    new PCAScorer(featureDim, c, v.data, offset)
  }
}
