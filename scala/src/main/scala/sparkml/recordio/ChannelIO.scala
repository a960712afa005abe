package sparkml.recordio

import java.util.Locale

import scala.jdk.CollectionConverters._

import org.apache.spark.sql.{DataFrame, SaveMode, SparkSession}

/** A small entry point for callers that reach the JVM directly (PySpark through its gateway, Scala code that
 * wants the manifest back): `ChannelIO.write(df, path, "overwrite", options)` returns the manifest JSON. */
object ChannelIO {
  def version: String = Option(getClass.getPackage.getImplementationVersion).getOrElse("dev")

  def write(data: DataFrame, path: String, mode: String, options: java.util.Map[String, String]): String =
    write(data, path, saveMode(mode), options.asScala.toMap)

  def write(data: DataFrame, path: String, mode: SaveMode, options: Map[String, String]): String =
    ChannelWriter.write(data, path, mode, options + ("path" -> path)).map(_.toJson).orNull

  def read(spark: SparkSession, path: String): DataFrame =
    spark.read.format(classOf[RecordIOProtobufDataSource].getName).load(path)

  private def saveMode(mode: String): SaveMode = mode.toLowerCase(Locale.ROOT) match {
    case "overwrite" => SaveMode.Overwrite
    case "append" => SaveMode.Append
    case "ignore" => SaveMode.Ignore
    case "error" | "errorifexists" | "default" => SaveMode.ErrorIfExists
    case other => throw new IllegalArgumentException(s"recordio-protobuf: unknown save mode '$other'; use " +
      "overwrite, append, ignore or errorifexists")
  }
}
