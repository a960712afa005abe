package sparkml.scoring

import sparkml.recordio.Quote

/** Linear Learner (`algorithms.builtin.linear_learner.model.LinearLearnerModel`): `z = x @ coefficients + intercept`.
 *
 * - binary_classifier: `score` = sigmoid(z) for logistic loss, else z; `predicted_label` = z >= threshold_margin;
 * - multiclass_classifier: `score` = softmax(z) (a vector), `predicted_label` = argmax z;
 * - regressor: `score` = z.
 */
final class LinearLearnerScorer(val featureDim: Int, predictorType: String, logistic: Boolean, width: Int,
                                coefficients: Array[Double], intercept: Array[Double], thresholdMargin: Double)
  extends Scorer {
  import LinearLearnerScorer._

  val algorithm = "linear-learner"
  val outputs: Seq[OutputSpec] = predictorType match {
    case Binary => Seq(OutputSpec("score"), OutputSpec("predicted_label"))
    case Multiclass => Seq(OutputSpec("score", OutputSpec.Vector), OutputSpec("predicted_label"))
    case _ => Seq(OutputSpec("score"))
  }

  @transient private lazy val buffers = new ThreadLocal[Array[Double]] {
    override def initialValue(): Array[Double] = new Array[Double](width)
  }

  def score(x: FeatureRow, out: Array[Any], at: Int): Unit = {
    val z = buffers.get()
    Scorer.dotColumns(x, coefficients, width, z)
    var j = 0
    while (j < width) { z(j) += intercept(j); j += 1 }
    predictorType match {
      case Binary =>
        val margin = z(0)
        out(at) = Scorer.float32(if (logistic) Scorer.expit(margin) else margin)
        out(at + 1) = Scorer.float32(if (margin >= thresholdMargin) 1.0 else 0.0)
      case Multiclass =>
        val label = Scorer.argmax(z, width)
        val top = z(label)
        val probs = new Array[Double](width)
        var sum = 0.0
        j = 0
        while (j < width) { probs(j) = math.exp(z(j) - top); sum += probs(j); j += 1 }
        j = 0
        while (j < width) { probs(j) /= sum; j += 1 }
        out(at) = Scorer.float32Vector(probs, width)
        out(at + 1) = Scorer.float32(label.toDouble)
      case _ =>
        out(at) = Scorer.float32(z(0))
    }
  }
}

object LinearLearnerScorer {
  val Binary = "binary_classifier"
  val Multiclass = "multiclass_classifier"
  val Regressor = "regressor"

  def apply(artifact: Artifact, featureDim: Int): LinearLearnerScorer = {
    val hp = artifact.manifest.hyperparameters
    val predictorType = hp.getOrElse("predictor_type", "")
    if (!Seq(Binary, Multiclass, Regressor).contains(predictorType)) {
      throw new ArtifactException(s"${artifact.location}: linear-learner model: unknown predictor_type " +
        s"${Quote.py(predictorType)}")
    }
    Seq("coefficients", "intercept", "threshold_margin").foreach { name =>
      if (!artifact.arrays.contains(name)) {
        throw new ArtifactException(s"${artifact.location}: linear-learner model: the artifact has no " +
          s"${Quote.py(name)} array")
      }
    }
    val coefficients = artifact.array("coefficients")
    val intercept = artifact.array("intercept")
    Scorer.requireShape(artifact, coefficients, coefficients.size > 0 && coefficients.size % featureDim == 0,
      s"($featureDim,) or ($featureDim, outputs)")
    val width = coefficients.size / featureDim
    if (intercept.size != width) {
      throw new ArtifactException(s"${artifact.location}: linear-learner model: $width outputs but " +
        s"${intercept.size} intercepts")
    }
    // The coefficients and intercept are float32 in the model; float32 arrays read back exactly.
    val coef = coefficients.data.map(_.toFloat.toDouble)
    val icpt = intercept.data.map(_.toFloat.toDouble)
    new LinearLearnerScorer(featureDim, predictorType, hp.getOrElse("loss", "auto") == "logistic", width, coef, icpt,
      artifact.array("threshold_margin").scalar)
  }
}
