package sparkml.endpoint

import scala.jdk.CollectionConverters._

import com.fasterxml.jackson.databind.JsonNode
import org.apache.spark.ml.Transformer
import org.apache.spark.ml.param.{DoubleParam, IntParam, Param, ParamMap, ParamValidators}
import org.apache.spark.ml.util.{DefaultParamsReadable, DefaultParamsWritable, Identifiable}
import org.apache.spark.sql.{DataFrame, Dataset, Encoders, Row}
import org.apache.spark.sql.types.{StringType, StructField, StructType}

import sparkml.recordio.Quote
import sparkml.scoring.{FeatureKind, OutputSpec}

/** A Spark ML Transformer that scores a DataFrame's feature vectors through an inference endpoint that speaks
 * SageMaker's serving contract (a spark_ml endpoint, a SageMaker-compatible model server).
 *
 * {{{
 *   val scored = new EndpointModel()
 *     .setEndpoint("http://127.0.0.1:8080")      // the endpoint's base URL; requests go to /invocations
 *     .setSerializer("protobuf")                  // protobuf | csv | json | jsonlines | libsvm
 *     .setDeserializer("protobuf")                // protobuf | json | jsonlines | csv
 *     .setAuthToken(token)                        // sent as "Authorization: Bearer <token>"; not a Param
 *     .transform(df)                              // + score, predicted_label, ... (SageMaker's names)
 * }}}
 * Output columns come from `outputs` (a JSON list of `{"name", "kind"}`) or, when it is empty, from the
 * endpoint's `GET /metadata`; scalars become doubles and vectors ML vectors. Each partition batches its rows
 * (`maxBatchRows`, `maxBatchBytes`), keeps up to `concurrency` requests in flight, retries 429 / 5xx /
 * connection failures `maxRetries` times with exponential backoff, and keeps the input order.
 * `errorPolicy` "fail" fails the job on a request that still fails; "column" writes the error into `errorCol`
 * instead (with nulls in the outputs), bisecting a batch the endpoint rejects so only the bad rows are marked.
 */
class EndpointModel(override val uid: String) extends Transformer with DefaultParamsWritable {
  def this() = this(Identifiable.randomUID("EndpointModel"))

  final val endpoint = new Param[String](this, "endpoint", "the endpoint's base URL (http:// or https://)")
  final val featuresCol = new Param[String](this, "featuresCol", "features column (ML vector or array of numbers)")
  final val serializer = new Param[String](this, "serializer",
    "request format: protobuf, csv, json, jsonlines, libsvm, or a registered name")
  final val deserializer = new Param[String](this, "deserializer",
    "response format: protobuf, json, jsonlines, csv, or a registered name")
  final val outputs = new Param[String](this, "outputs",
    """JSON list of {"name", "kind"} (kind scalar or vector); empty: ask the endpoint's /metadata""")
  final val maxBatchRows = new IntParam(this, "maxBatchRows", "most rows per request", ParamValidators.gtEq(1))
  final val maxBatchBytes = new IntParam(this, "maxBatchBytes", "most bytes per request body", ParamValidators.gtEq(1))
  final val concurrency = new IntParam(this, "concurrency", "requests in flight per partition", ParamValidators.gtEq(1))
  final val maxRetries = new IntParam(this, "maxRetries", "retries of a request on 5xx/429/connection errors",
    ParamValidators.gtEq(0))
  final val retryBackoff = new DoubleParam(this, "retryBackoff",
    "first retry delay in seconds (doubles each retry, with jitter)", ParamValidators.gtEq(0))
  final val requestTimeout = new DoubleParam(this, "requestTimeout", "seconds per request", ParamValidators.gt(0))
  final val errorPolicy = new Param[String](this, "errorPolicy", "fail (the job) or column (errors in errorCol)",
    ParamValidators.inArray(Array("fail", "column")))
  final val errorCol = new Param[String](this, "errorCol", "error column for errorPolicy=column")
  final val variantCol = new Param[String](this, "variantCol", "column naming the variant that answered; empty: none")
  final val targetVariant = new Param[String](this, "targetVariant",
    "send every request to this variant (X-Target-Variant); empty: the endpoint's weights")

  setDefault(featuresCol -> "features", serializer -> "protobuf", deserializer -> "protobuf", outputs -> "",
    maxBatchRows -> 10000, maxBatchBytes -> EndpointModel.DefaultMaxBatchBytes, concurrency -> 4, maxRetries -> 5,
    retryBackoff -> 0.1, requestTimeout -> 60.0, errorPolicy -> "fail", errorCol -> "error", variantCol -> "",
    targetVariant -> "")

  private var authToken: Option[String] = None
  private var serializerObject: Option[RequestSerializer] = None
  private var deserializerObject: Option[ResponseDeserializer] = None
  @transient private var resolvedOutputs: Option[Seq[OutputSpec]] = None

  def setEndpoint(value: String): this.type = { resolvedOutputs = None; set(endpoint, value) }
  def setFeaturesCol(value: String): this.type = set(featuresCol, value)
  def setSerializer(name: String): this.type = { serializerObject = None; set(serializer, name) }
  def setDeserializer(name: String): this.type = { deserializerObject = None; set(deserializer, name) }
  def setOutputs(json: String): this.type = { resolvedOutputs = None; set(outputs, json) }
  def setMaxBatchRows(value: Int): this.type = set(maxBatchRows, value)
  def setMaxBatchBytes(value: Int): this.type = set(maxBatchBytes, value)
  def setConcurrency(value: Int): this.type = set(concurrency, value)
  def setMaxRetries(value: Int): this.type = set(maxRetries, value)
  def setRetryBackoff(seconds: Double): this.type = set(retryBackoff, seconds)
  def setRequestTimeout(seconds: Double): this.type = set(requestTimeout, seconds)
  def setErrorPolicy(value: String): this.type = set(errorPolicy, value)
  def setErrorCol(value: String): this.type = set(errorCol, value)
  def setVariantCol(value: String): this.type = set(variantCol, value)
  def setTargetVariant(value: String): this.type = { resolvedOutputs = None; set(targetVariant, value) }

  /** The outputs to read, as [[OutputSpec]]s (kept in the `outputs` Param as JSON). */
  def setOutputs(specs: Seq[OutputSpec]): this.type = setOutputs(EndpointModel.outputsJson(specs))

  /** A serializer object of your own; saving the model keeps only its class name, so register a factory under
   * that name (`RequestSerializer.register`) to load it back. */
  def setRequestSerializer(value: RequestSerializer): this.type = {
    set(serializer, value.getClass.getName)
    serializerObject = Some(value)
    this
  }

  def setResponseDeserializer(value: ResponseDeserializer): this.type = {
    set(deserializer, value.getClass.getName)
    deserializerObject = Some(value)
    this
  }

  /** The bearer token for the endpoint, kept out of the Params so a saved Pipeline does not hold it. */
  def setAuthToken(token: String): this.type = { authToken = Option(token).filter(_.nonEmpty); this }

  /** The output columns this model adds (asks the endpoint's /metadata once when `outputs` is empty). */
  def outputSpecs: Seq[OutputSpec] = resolvedOutputs.getOrElse {
    val specs = $(outputs) match {
      case "" => EndpointModel.outputsFromMetadata(url, authToken, Option($(targetVariant)).filter(_.nonEmpty),
        $(requestTimeout))
      case json => EndpointModel.parseOutputs(json)
    }
    resolvedOutputs = Some(specs)
    specs
  }

  private def url: String = {
    if (!isDefined(endpoint)) throw new IllegalArgumentException("EndpointModel needs endpoint (the endpoint's URL)")
    val u = $(endpoint)
    if (!u.startsWith("http://") && !u.startsWith("https://")) {
      throw new IllegalArgumentException(s"endpoint must be an http:// or https:// URL, got ${Quote.py(u)} (the " +
        "Scala side does not read the spark_ml endpoint registry; `spark-ml endpoints` shows each endpoint's URL)")
    }
    u
  }

  override def transformSchema(schema: StructType): StructType = {
    FeatureKind.of(schema, $(featuresCol))
    val extra = outputSpecs.map(o => StructField(o.name, o.dataType, nullable = true)) ++
      Option($(variantCol)).filter(_.nonEmpty).map(StructField(_, StringType, nullable = true)) ++
      (if ($(errorPolicy) == "column") Seq(StructField($(errorCol), StringType, nullable = true)) else Nil)
    val clash = extra.map(_.name).filter(schema.fieldNames.contains)
    if (clash.nonEmpty) {
      throw new IllegalArgumentException(s"the DataFrame already has column(s) ${clash.mkString(", ")}; rename them " +
        "or choose other names")
    }
    StructType(schema.fields ++ extra)
  }

  override def transform(dataset: Dataset[_]): DataFrame = {
    val schema = transformSchema(dataset.schema, logging = true)
    val df = dataset.toDF()
    val ser = serializerObject.getOrElse(RequestSerializer($(serializer)))
    val deser = deserializerObject.getOrElse(ResponseDeserializer($(deserializer)))
    val plan = ScoringPlan(
      settings = EndpointSettings(url, ser.contentType, deser.accept, authToken,
        Option($(targetVariant)).filter(_.nonEmpty), $(requestTimeout), $(maxRetries), $(retryBackoff)),
      serializer = ser,
      deserializer = deser,
      outputs = outputSpecs,
      featuresCol = $(featuresCol),
      featuresOrdinal = df.schema.fieldIndex($(featuresCol)),
      inputWidth = df.schema.length,
      maxBatchRows = $(maxBatchRows),
      maxBatchBytes = $(maxBatchBytes),
      concurrency = $(concurrency),
      variantColumn = $(variantCol).nonEmpty,
      errorColumn = $(errorPolicy) == "column")
    df.mapPartitions((rows: Iterator[Row]) => new PartitionScorer(plan, rows): Iterator[Row])(Encoders.row(schema))
  }

  override def copy(extra: ParamMap): EndpointModel = {
    val that = defaultCopy[EndpointModel](extra)
    that.authToken = authToken
    that.serializerObject = serializerObject
    that.deserializerObject = deserializerObject
    that
  }
}

object EndpointModel extends DefaultParamsReadable[EndpointModel] {
  /** sagemaker-spark's batch limit, under the 6 MB a SageMaker endpoint accepts. */
  val DefaultMaxBatchBytes: Int = 5 * 1024 * 1024

  override def load(path: String): EndpointModel = super.load(path)

  def parseOutputs(json: String): Seq[OutputSpec] = {
    val doc = try ResponseDeserializer.mapper.readTree(json) catch {
      case e: Exception => throw new IllegalArgumentException(s"outputs is not JSON: ${e.getMessage.linesIterator.next()}")
    }
    if (!doc.isArray || doc.isEmpty) {
      throw new IllegalArgumentException(s"""outputs must be a non-empty JSON list of {"name", "kind"}, got $json""")
    }
    doc.elements().asScala.map(spec).toSeq
  }

  def outputsJson(specs: Seq[OutputSpec]): String = {
    val list = ResponseDeserializer.mapper.createArrayNode()
    specs.foreach(o => list.addObject().put("name", o.name).put("kind", o.kind))
    ResponseDeserializer.mapper.writeValueAsString(list)
  }

  /** The outputs of SageMaker's built-in algorithms, for endpoints that have no /metadata (`predictorType` for
   * linear-learner and factorization-machines: binary_classifier, multiclass_classifier or regressor). */
  def outputsFor(algorithm: String, predictorType: String = ""): Seq[OutputSpec] = (algorithm, predictorType) match {
    case ("kmeans", _) => Seq(OutputSpec("closest_cluster"), OutputSpec("distance_to_cluster"))
    case ("pca", _) => Seq(OutputSpec("projection", OutputSpec.Vector))
    case ("linear-learner" | "factorization-machines", "binary_classifier") =>
      Seq(OutputSpec("score"), OutputSpec("predicted_label"))
    case ("linear-learner", "multiclass_classifier") =>
      Seq(OutputSpec("score", OutputSpec.Vector), OutputSpec("predicted_label"))
    case ("linear-learner" | "factorization-machines", "regressor") => Seq(OutputSpec("score"))
    case _ => throw new IllegalArgumentException(s"no known outputs for algorithm ${Quote.py(algorithm)}" +
      (if (predictorType.nonEmpty) s" with predictor_type ${Quote.py(predictorType)}" else "") + "; set outputs")
  }

  /** The union of the variants' outputs as `GET /metadata` reports them (one variant's with `targetVariant`). */
  def outputsFromMetadata(url: String, token: Option[String], targetVariant: Option[String],
                          timeoutSeconds: Double): Seq[OutputSpec] = {
    val answer = EndpointClient.metadata(url, token, timeoutSeconds)
    if (answer.status == 404) {
      throw new EndpointException(s"$url has no /metadata (not a spark_ml endpoint); set outputs explicitly, e.g. " +
        "EndpointModel.outputsFor(\"kmeans\")")
    }
    if (!answer.ok) throw new EndpointException(s"$url/metadata answered ${answer.status}: ${answer.text.take(1000)}")
    val doc = JsonRecords.parse(answer.text, s"$url/metadata")
    val variants: Seq[(String, JsonNode)] = Option(doc.get("variants")).filter(_.isObject) match {
      case Some(v) => v.properties().asScala.map(e => e.getKey -> e.getValue).toSeq
      case None => Seq("" -> doc)
    }
    val specs = scala.collection.mutable.LinkedHashMap.empty[String, OutputSpec]
    variants.filter { case (name, _) => targetVariant.forall(_ == name) || name.isEmpty }.foreach { case (name, meta) =>
      Option(meta.get("error")).foreach { e =>
        throw new EndpointException(s"cannot read variant $name's outputs: ${e.asText}; set outputs explicitly")
      }
      val list = Option(meta.get("outputs")).filter(_.isArray).getOrElse(throw new EndpointException(
        s"$url/metadata lists no outputs${if (name.nonEmpty) s" for variant $name" else ""}; set outputs explicitly"))
      list.elements().asScala.map(spec).foreach { o =>
        if (specs.getOrElseUpdate(o.name, o).kind != o.kind) {
          throw new EndpointException(s"output ${o.name} is a scalar in one variant and a vector in another")
        }
      }
    }
    if (specs.isEmpty) {
      throw new EndpointException(s"no variant${targetVariant.map(" " + _).getOrElse("")} reported outputs")
    }
    specs.values.toSeq
  }

  private def spec(node: JsonNode): OutputSpec = {
    val name = Option(node.get("name")).filter(_.isTextual).map(_.asText).getOrElse(
      throw new IllegalArgumentException(s"an output needs a name: $node"))
    val kind = Option(node.get("kind")).filter(_.isTextual).map(_.asText).getOrElse(OutputSpec.Scalar)
    if (kind != OutputSpec.Scalar && kind != OutputSpec.Vector) {
      throw new IllegalArgumentException(s"output $name has kind ${Quote.py(kind)}; use scalar or vector")
    }
    OutputSpec(name, kind)
  }
}
