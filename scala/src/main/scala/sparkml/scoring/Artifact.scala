package sparkml.scoring

import java.io.FileNotFoundException
import java.nio.charset.StandardCharsets

import scala.jdk.CollectionConverters._

import com.fasterxml.jackson.databind.{JsonNode, ObjectMapper}
import org.apache.hadoop.conf.Configuration
import org.apache.hadoop.fs.{FileSystem, LocalFileSystem, Path}

/** A model artifact's `manifest.json`, the document `algorithms.artifact.ArtifactManifest` writes. */
final case class ArtifactManifest(
    algorithm: String,
    hyperparameters: Map[String, String],
    featureDim: Option[Int],
    metrics: Map[String, Double],
    files: Seq[String],
    formatVersion: Int,
    libraryVersion: Option[String],
    trainingJob: Option[String])

object ArtifactManifest {
  val FileName = "manifest.json"
  /** The newest artifact format this library reads (`algorithms.artifact.FORMAT_VERSION`). */
  val FormatVersion = 1

  private[scoring] val mapper = new ObjectMapper()

  def parse(text: String, source: String): ArtifactManifest = {
    def fail(problem: String): Nothing = throw new ArtifactException(s"$source: not a model manifest: $problem")
    val doc = try mapper.readTree(text) catch {
      case e: Exception => fail(e.getMessage.linesIterator.take(1).mkString)
    }
    if (doc == null || !doc.isObject) fail(s"expected a JSON object")
    val version = Option(doc.get("format_version")).filterNot(_.isNull).map(_.asInt(0)).getOrElse(0)
    if (version > FormatVersion) {
      throw new ArtifactException(s"$source: format version $version is newer than this library reads " +
        s"($FormatVersion); upgrade spark-ml")
    }
    val algorithm = textField(doc, "algorithm").getOrElse(fail("it has no algorithm"))
    def obj(key: String): Seq[(String, JsonNode)] = Option(doc.get(key)).filterNot(_.isNull) match {
      case Some(node) if node.isObject => node.properties().asScala.map(e => e.getKey -> e.getValue).toSeq
      case Some(_) => fail(s"$key is not an object")
      case None => Seq.empty
    }
    val hyperparameters = obj("hyperparameters").map { case (k, v) => k -> (if (v.isTextual) v.asText else v.toString) }
    val metrics = obj("metrics").collect { case (k, v) if v.isNumber => k -> v.asDouble }
    val featureDim = Option(doc.get("feature_dim")).filterNot(_.isNull).map { v =>
      if (!v.canConvertToInt) fail("feature_dim is not an integer")
      v.asInt
    }
    val files = Option(doc.get("files")).filter(_.isArray).map(_.elements().asScala.map(_.asText).toSeq)
      .getOrElse(Seq.empty)
    ArtifactManifest(algorithm, hyperparameters.toMap, featureDim, metrics.toMap, files, version,
      textField(doc, "library_version"), textField(doc, "training_job"))
  }

  private def textField(doc: JsonNode, key: String): Option[String] =
    Option(doc.get(key)).filter(_.isTextual).map(_.asText)
}

/** A model artifact as read from its folder: the manifest, its numeric arrays (`model.npz`, any other `.npz`
 * entries and `.npy` files, by name) and its other files as bytes (k-NN's `index.faiss`). */
final case class Artifact(location: String, manifest: ArtifactManifest, arrays: Map[String, NpyArray],
                          blobs: Map[String, Array[Byte]] = Map.empty) {
  def array(name: String): NpyArray = arrays.getOrElse(name, throw new ArtifactException(
    s"$location: ${manifest.algorithm} model has no '$name' array (arrays: ${arrays.keys.toSeq.sorted.mkString(", ")})"))

  def blob(name: String): Array[Byte] = blobs.getOrElse(name, throw new ArtifactException(
    s"$location: the ${manifest.algorithm} artifact has no file '$name' (files: ${manifest.files.mkString(", ")})"))
}

/** Reading and copying artifact folders on any Hadoop file system (local paths, `file:`, `hdfs:`, `s3a:` …). */
object Artifact {
  val ArraysFile = "model.npz"

  def read(location: String, conf: Configuration): Artifact = {
    val root = new Path(location)
    val fs = fileSystem(root, conf)
    val manifestPath = new Path(root, ArtifactManifest.FileName)
    if (!fs.exists(manifestPath)) {
      throw new ArtifactException(s"$location is not a model artifact (no ${ArtifactManifest.FileName}; the job " +
        "that wrote it may have failed)")
    }
    val manifest = ArtifactManifest.parse(readText(fs, manifestPath), s"$location/${ArtifactManifest.FileName}")
    Scorer.requireNative(location, manifest.algorithm)
    val numeric = manifest.files.filter(name => name.endsWith(".npz") || name.endsWith(".npy"))
    if (numeric.isEmpty) {
      throw new ArtifactException(s"$location: the ${manifest.algorithm} artifact lists no $ArraysFile (files: " +
        s"${manifest.files.mkString(", ")}); only artifacts of numeric arrays are scored natively")
    }
    def bytes(name: String): Array[Byte] = try readBytes(fs, new Path(root, name)) catch {
      case _: FileNotFoundException =>
        throw new ArtifactException(s"$location: the manifest lists $name but the file is missing")
    }
    val arrays = numeric.flatMap { name =>
      if (name.endsWith(".npz")) Npz.read(bytes(name), s"$location/$name").toSeq
      else {
        val stem = name.stripSuffix(".npy")
        Seq(stem -> Npy.read(bytes(name), s"$location/$name", stem))
      }
    }.toMap
    val blobs = manifest.files.filterNot(numeric.contains).map(name => name -> bytes(name)).toMap
    Artifact(location, manifest, arrays, blobs)
  }

  /** Copies the artifact's files, then its manifest last (a destination without a manifest is no model). */
  def copy(location: String, destination: String, conf: Configuration): Unit = {
    val src = new Path(location)
    val srcFs = fileSystem(src, conf)
    val dst = new Path(destination)
    val dstFs = fileSystem(dst, conf)
    val manifestPath = new Path(src, ArtifactManifest.FileName)
    val manifest = ArtifactManifest.parse(readText(srcFs, manifestPath), manifestPath.toString)
    dstFs.mkdirs(dst)
    (manifest.files :+ ArtifactManifest.FileName).foreach { name =>
      val target = new Path(dst, name)
      dstFs.mkdirs(target.getParent)
      val in = srcFs.open(new Path(src, name))
      try {
        val out = dstFs.create(target, true)
        try in.transferTo(out) finally out.close()
      } finally in.close()
    }
  }

  def fileSystem(path: Path, conf: Configuration): FileSystem = path.getFileSystem(conf) match {
    case local: LocalFileSystem => local.getRawFileSystem // no .crc side files
    case other => other
  }

  def readBytes(fs: FileSystem, path: Path): Array[Byte] = {
    val in = fs.open(path)
    try in.readAllBytes() finally in.close()
  }

  def readText(fs: FileSystem, path: Path): String = new String(readBytes(fs, path), StandardCharsets.UTF_8)
}
