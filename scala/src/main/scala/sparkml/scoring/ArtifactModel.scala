package sparkml.scoring

import org.apache.hadoop.fs.Path
import org.apache.spark.ml.Model
import org.apache.spark.ml.param.{Param, ParamMap}
import org.apache.spark.ml.util.{Identifiable, MLReadable, MLReader, MLWritable, MLWriter}
import org.apache.spark.sql.{DataFrame, Dataset, Encoders, Row}
import org.apache.spark.sql.catalyst.expressions.GenericRow
import org.apache.spark.sql.types.{StringType, StructField, StructType}

import sparkml.recordio.Quote

/** Scores a DataFrame natively on the JVM with a model artifact the Python side saved (K-Means, PCA, Linear
 * Learner, Factorization Machines, Random Cut Forest, k-NN with a `faiss.Flat` index), adding the same output
 * columns as the Python Spark Model's `transform`:
 * SageMaker's output names, scalars as doubles and vectors as ML vectors, with the same values.
 *
 * {{{
 *   val model = ArtifactModel.load("/models/kmeans-20261124-040524-e1844f")   // or a saved spark_ml Model
 *   model.setFeaturesCol("features").transform(df)   // + closest_cluster, distance_to_cluster
 * }}}
 * The model travels to the executors as a broadcast; no Python runs. Saving it (`model.write.save(path)`, or
 * inside a Pipeline) writes Spark ML metadata plus a copy of the artifact, the layout the Python models use.
 */
class ArtifactModel private (override val uid: String, val artifact: Artifact, private val scorer: Scorer)
  extends Model[ArtifactModel] with MLWritable {

  final val featuresCol: Param[String] =
    new Param[String](this, "featuresCol", "features column: a Vector or array<float|double>")
  setDefault(featuresCol -> "features")

  def setFeaturesCol(value: String): this.type = set(featuresCol, value)

  def getFeaturesCol: String = $(featuresCol)

  /** Where the artifact was read from. */
  def location: String = artifact.location

  def algorithm: String = scorer.algorithm

  def featureDim: Int = scorer.featureDim

  def outputs: Seq[OutputSpec] = scorer.outputs

  def outputNames: Array[String] = scorer.outputs.map(_.name).toArray

  def hyperparameters: Map[String, String] = artifact.manifest.hyperparameters

  def metrics: Map[String, Double] = artifact.manifest.metrics

  def trainingJob: Option[String] = artifact.manifest.trainingJob

  override def transformSchema(schema: StructType): StructType = {
    FeatureKind.of(schema, $(featuresCol))
    val clash = scorer.outputs.map(_.name).filter(schema.fieldNames.contains)
    if (clash.nonEmpty) {
      throw new FeatureColumnException(s"the input already has column(s) ${clash.mkString(", ")}, which scoring " +
        "adds; rename them")
    }
    StructType(schema.fields ++ scorer.outputs.map(o => StructField(o.name, o.dataType, nullable = true)))
  }

  override def transform(dataset: Dataset[_]): DataFrame = {
    val schema = transformSchema(dataset.schema, logging = true)
    val df = dataset.toDF()
    val column = $(featuresCol)
    val ordinal = df.schema.fieldIndex(column)
    val width = df.schema.length
    val broadcast = df.sparkSession.sparkContext.broadcast(scorer)
    df.mapPartitions { (rows: Iterator[Row]) =>
      val model = broadcast.value
      val dim = model.featureDim
      val total = width + model.outputs.size
      val reader = new FeatureReader(column)
      var position = 0L
      rows.map { row =>
        val x = reader.read(row, ordinal, position)
        if (x.size != dim) {
          throw new FeatureColumnException(s"featuresCol ${Quote.py(column)}: the model expects $dim features, got " +
            s"vectors of size ${x.size}")
        }
        val values = new Array[Any](total)
        var i = 0
        while (i < width) { values(i) = row.get(i); i += 1 }
        model.score(x, values, width)
        position += 1
        new GenericRow(values): Row
      }
    }(Encoders.row(schema))
  }

  override def copy(extra: ParamMap): ArtifactModel =
    copyValues(new ArtifactModel(uid, artifact, scorer), extra).setParent(parent)

  override def write: MLWriter = new ArtifactModel.Writer(this)

  override def toString: String =
    s"ArtifactModel: uid=$uid, algorithm=$algorithm, featureDim=$featureDim, location=$location"
}

object ArtifactModel extends MLReadable[ArtifactModel] {
  /** The artifact's folder inside a saved model (the name the Python models' writer uses too). */
  val ArtifactDir = "artifact"

  /** The model for an artifact folder: built from the files alone, no Spark job runs. */
  def fromArtifact(location: String, conf: org.apache.hadoop.conf.Configuration): ArtifactModel = {
    val artifact = Artifact.read(location, conf)
    new ArtifactModel(Identifiable.randomUID("ArtifactModel"), artifact, Scorer.fromArtifact(artifact))
  }

  override def read: MLReader[ArtifactModel] = new Reader

  override def load(path: String): ArtifactModel = super.load(path)

  /** Reads an artifact folder (`manifest.json` + `model.npz`, or k-NN's files), or a saved model: a `metadata/` folder as Spark
   * ML writes it plus the artifact (this class's writer, or a spark_ml Python model's `save`). */
  private class Reader extends MLReader[ArtifactModel] {
    override def load(path: String): ArtifactModel = {
      val conf = sparkSession.sparkContext.hadoopConfiguration
      val root = new Path(path)
      val fs = Artifact.fileSystem(root, conf)
      val metadata = new Path(root, "metadata")
      if (fs.exists(new Path(root, ArtifactManifest.FileName)) || !fs.exists(metadata)) {
        return fromArtifact(path, conf)
      }
      val text = sparkSession.read.text(metadata.toString).first().getString(0)
      val doc = ArtifactManifest.mapper.readTree(text)
      val artifactDir = Option(doc.get("artifact")).filter(_.isTextual).map(_.asText).getOrElse(ArtifactDir)
      val model = fromArtifact(new Path(root, artifactDir).toString, conf)
      val loaded = new ArtifactModel(Option(doc.get("uid")).map(_.asText).getOrElse(model.uid), model.artifact,
        model.scorer)
      Option(doc.get("paramMap")).flatMap(p => Option(p.get("featuresCol"))).filter(_.isTextual)
        .foreach(v => loaded.setFeaturesCol(v.asText))
      loaded
    }
  }

  private class Writer(instance: ArtifactModel) extends MLWriter {
    override protected def saveImpl(path: String): Unit = {
      val mapper = ArtifactManifest.mapper
      val doc = mapper.createObjectNode()
      doc.put("class", classOf[ArtifactModel].getName)
      doc.put("timestamp", System.currentTimeMillis())
      doc.put("sparkVersion", sparkSession.version)
      doc.put("uid", instance.uid)
      val params = doc.putObject("paramMap")
      instance.get(instance.featuresCol).foreach(v => params.put("featuresCol", v))
      doc.putObject("defaultParamMap").put("featuresCol", instance.getDefault(instance.featuresCol).get)
      doc.put("artifact", ArtifactDir)
      val json = mapper.writeValueAsString(doc)
      sparkSession.createDataFrame(java.util.List.of(Row(json)), StructType(Seq(StructField("value", StringType))))
        .coalesce(1).write.text(new Path(path, "metadata").toString)
      Artifact.copy(instance.location, new Path(path, ArtifactDir).toString,
        sparkSession.sparkContext.hadoopConfiguration)
    }
  }
}
