package sparkml.scoring

/** Random Cut Forest (`algorithms.builtin.randomcutforest`): `score`, the row's expected collusive displacement
 * in every tree, summed tree by tree and multiplied by the artifact's `score_scale`, with the arithmetic of
 * `Forest._descend` / `Forest._ascend`:
 *
 *  - descend from the root: `x(feature) > threshold` goes right, else left, down to a leaf;
 *  - a row equal to the leaf's point (a duplicate) scores the leaf's `ratio_max`; any other row starts from
 *    `max(mass, ratio_max)` of the leaf and walks up: at each node the L1 distance `out` from the row to the node's
 *    box (per feature `max(lo, x) - min(hi, x)` in float32, summed in float64 feature by feature),
 *    `p = out / (range_sum + out)` and `E = p * max(mass, ratio_max) + (1 - p) * E`, until the row is inside a
 *    box (`p == 0`) or past the root.
 *
 * So the scores equal the Python scorer's bit for bit on the same float32 features. */
final class RandomCutForestScorer(val featureDim: Int, roots: Array[Int], feature: Array[Int],
                                  threshold: Array[Double], left: Array[Int], right: Array[Int], parent: Array[Int],
                                  lo: Array[Float], hi: Array[Float], rangeSum: Array[Double],
                                  ratioMax: Array[Double], cutOff: Array[Double], scale: Double) extends Scorer {
  val algorithm = "randomcutforest"
  val outputs: Seq[OutputSpec] = Seq(OutputSpec("score"))

  @transient private lazy val rows = new ThreadLocal[Array[Double]] {
    override def initialValue(): Array[Double] = new Array[Double](featureDim)
  }

  def score(x: FeatureRow, out: Array[Any], at: Int): Unit = {
    val v = rows.get()
    Scorer.densify(x, v)
    var i = 0
    while (i < featureDim) {
      if (v(i).isNaN || v(i).isInfinite) {
        throw new FeatureColumnException(s"the batch holds a non-finite feature value (${v(i)}) at feature $i; " +
          "Random Cut Forest needs finite features")
      }
      i += 1
    }
    var total = 0.0
    var t = 0
    while (t < roots.length) { total += expectedCodisp(v, roots(t)); t += 1 }
    out(at) = Scorer.float32(total * scale)
  }

  private def isLeaf(node: Int): Boolean = left(node) == node

  private def expectedCodisp(v: Array[Double], root: Int): Double = {
    var node = root
    while (!isLeaf(node)) node = if (v(feature(node)) > threshold(node)) right(node) else left(node)
    val leaf = node
    var same = true
    var i = 0
    val point = leaf * featureDim
    while (same && i < featureDim) { same = v(i) == lo(point + i).toDouble; i += 1 }
    if (same) return ratioMax(leaf)
    var expected = cutOff(leaf)
    node = parent(leaf)
    while (node >= 0) {
      val box = node * featureDim
      var outside = 0.0
      i = 0
      while (i < featureDim) {
        val xi = v(i).toFloat
        val gap: Float = math.max(lo(box + i), xi) - math.min(hi(box + i), xi)
        outside += gap
        i += 1
      }
      val p = outside / (rangeSum(node) + outside)
      expected = p * cutOff(node) + (1.0 - p) * expected
      if (!(p > 0)) return expected
      node = parent(node)
    }
    expected
  }
}

object RandomCutForestScorer {
  def apply(artifact: Artifact, featureDim: Int): RandomCutForestScorer = {
    val feature = artifact.array("feature")
    val n = feature.size
    def nodes(name: String, width: Int = 1): NpyArray = {
      val a = artifact.array(name)
      val ok = if (width == 1) a.size == n else a.dims == 2 && a.shape(0) == n && a.shape(1) == width
      Scorer.requireShape(artifact, a, ok, if (width == 1) s"($n,): one value per node" else s"($n, $width)")
      a
    }
    val children = nodes("children", 2)
    val lo = nodes("lo", featureDim)
    val hi = nodes("hi", featureDim)
    val mass = nodes("mass").data
    val ratioMax = nodes("ratio_max").data
    val roots = artifact.array("roots")
    val ints = (a: NpyArray) => a.data.map(_.toInt)
    val left = Array.tabulate(n)(i => children.data(2 * i).toInt)
    val right = Array.tabulate(n)(i => children.data(2 * i + 1).toInt)
    new RandomCutForestScorer(featureDim, ints(roots), ints(feature), nodes("threshold").data, left, right,
      ints(nodes("parent")), lo.data.map(_.toFloat), hi.data.map(_.toFloat), nodes("range_sum").data, ratioMax,
      Array.tabulate(n)(i => math.max(mass(i), ratioMax(i))), artifact.array("score_scale").scalar)
  }
}
