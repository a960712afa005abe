package sparkml.recordio

import java.util

import scala.jdk.CollectionConverters._

import org.apache.spark.sql.{DataFrame, SaveMode, SQLContext}
import org.apache.spark.sql.catalyst.util.CaseInsensitiveMap
import org.apache.spark.sql.classic
import org.apache.spark.sql.connector.catalog.{Table, TableProvider}
import org.apache.spark.sql.connector.expressions.Transform
import org.apache.spark.sql.sources.{BaseRelation, CreatableRelationProvider, DataSourceRegister}
import org.apache.spark.sql.types.StructType
import org.apache.spark.sql.util.CaseInsensitiveStringMap

/** The `recordio-protobuf` data source: SageMaker's recordIO-protobuf channels for Spark.
 *
 * Reads go through DataSource V2 (`TableProvider`, one input partition per shard); writes go through
 * `CreatableRelationProvider`, which sees every save mode and runs one job with its own commit (see
 * [[ChannelWriter]] and scala/README.md for why).
 *
 * {{{
 *   df.write.format("recordio-protobuf").option("labelCol", "label").mode("overwrite").save(path)
 *   spark.read.format("recordio-protobuf").load(path)   // features: Vector, label: double
 * }}}
 */
class RecordIOProtobufDataSource extends TableProvider with DataSourceRegister with CreatableRelationProvider {
  override def shortName(): String = RecordIOProtobufDataSource.ShortName

  override def inferSchema(options: CaseInsensitiveStringMap): StructType = {
    val session = org.apache.spark.sql.SparkSession.active.asInstanceOf[classic.SparkSession]
    ChannelListing.open(ReadOptions.paths(options.asCaseSensitiveMap().asScala.toMap),
      session.sessionState.newHadoopConf()).schema
  }

  /** The table's schema comes from `inferSchema` on reads; a writer's own schema only decides capabilities. */
  override def supportsExternalMetadata(): Boolean = true

  override def getTable(schema: StructType, partitioning: Array[Transform],
                        properties: util.Map[String, String]): Table = {
    val options = properties.asScala.toMap
    val paths = try ReadOptions.paths(options) catch { case _: IllegalArgumentException => Nil }
    new ChannelTable(schema, paths)
  }

  override def createRelation(sqlContext: SQLContext, mode: SaveMode, parameters: Map[String, String],
                              data: DataFrame): BaseRelation = {
    val path = parameters.collectFirst { case (k, v) if k.equalsIgnoreCase("path") => v }.getOrElse {
      throw new IllegalArgumentException("recordio-protobuf: no path given; use save(path)")
    }
    val original = parameters match {
      case m: CaseInsensitiveMap[String @unchecked] => m.originalMap // the user's spelling, for error messages
      case m => m
    }
    ChannelWriter.write(data, path, mode, original)
    val written = data.schema
    val context = sqlContext
    new BaseRelation {
      override def sqlContext: SQLContext = context
      override def schema: StructType = written
    }
  }
}

object RecordIOProtobufDataSource {
  val ShortName = "recordio-protobuf"
}

/** Lets `format("sparkml.recordio")` find the source by package name, as Spark looks up `<name>.DefaultSource`. */
class DefaultSource extends RecordIOProtobufDataSource
