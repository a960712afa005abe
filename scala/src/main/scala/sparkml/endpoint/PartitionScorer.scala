package sparkml.endpoint

import java.util.concurrent.{ExecutionException, ExecutorService, Executors, Future, ThreadFactory}
import java.util.concurrent.atomic.AtomicInteger

import scala.collection.mutable.ArrayBuffer

import org.apache.spark.TaskContext
import org.apache.spark.ml.linalg.Vectors
import org.apache.spark.sql.Row
import org.apache.spark.sql.catalyst.expressions.GenericRow

import sparkml.recordio.OutputBlock
import sparkml.scoring.{FeatureReader, OutputSpec}

/** Everything a partition needs to score its rows through an endpoint (built on the driver, shipped to tasks). */
final case class ScoringPlan(
    settings: EndpointSettings,
    serializer: RequestSerializer,
    deserializer: ResponseDeserializer,
    outputs: Seq[OutputSpec],
    featuresCol: String,
    featuresOrdinal: Int,
    inputWidth: Int,
    maxBatchRows: Int,
    maxBatchBytes: Int,
    concurrency: Int,
    variantColumn: Boolean,
    errorColumn: Boolean)

/** The rows of one request batch and their encoding: row `i` is `bytes(ends(i-1) until ends(i))`. */
final class EncodedBatch(val rows: Array[Row], bytes: Array[Byte], ends: Array[Int], serializer: RequestSerializer) {
  def size: Int = rows.length

  /** The request body for rows `start until stop`. */
  def body(start: Int, stop: Int): Array[Byte] = {
    val prefix = serializer.prefix
    val separator = serializer.separator
    val suffix = serializer.suffix
    val from = if (start == 0) 0 else ends(start - 1)
    val rowBytes = ends(stop - 1) - from
    val out = new Array[Byte](prefix.length + rowBytes + separator.length * (stop - start - 1) + suffix.length)
    System.arraycopy(prefix, 0, out, 0, prefix.length)
    var at = prefix.length
    var i = start
    while (i < stop) {
      if (i > start) { System.arraycopy(separator, 0, out, at, separator.length); at += separator.length }
      val lo = if (i == 0) 0 else ends(i - 1)
      System.arraycopy(bytes, lo, out, at, ends(i) - lo)
      at += ends(i) - lo
      i += 1
    }
    System.arraycopy(suffix, 0, out, at, suffix.length)
    out
  }
}

/** The answer for rows `start until stop` of a batch: outputs, or the error that replaced them. */
final case class Segment(start: Int, stop: Int, outputs: Map[String, Array[Array[Double]]], variant: Option[String],
                         error: String)

/** Scores one partition's rows through the endpoint, in order.
 *
 * Rows are encoded once and cut into requests of at most `maxBatchRows` rows and `maxBatchBytes` body bytes;
 * up to `concurrency` requests are in flight at once (the next batch is encoded while they run), and batches
 * are emitted in input order as their answers arrive. Failed requests are retried by [[EndpointClient]]; what
 * still fails either fails the task (errorPolicy=fail) or fills the error column, a client error (4xx) being
 * bisected first so only the rows at fault are marked.
 */
final class PartitionScorer(plan: ScoringPlan, input: Iterator[Row]) extends Iterator[Row] {
  private val reader = new FeatureReader(plan.featuresCol)
  private val overhead = plan.serializer.prefix.length + plan.serializer.suffix.length
  private val separator = plan.serializer.separator.length
  private val inFlight = new java.util.ArrayDeque[(EncodedBatch, Future[Seq[Segment]])]()
  private var current: Iterator[Row] = Iterator.empty
  private var position = 0L
  private var carried: (Row, Array[Byte]) = _
  private var pool: ExecutorService = _
  private var finished = false

  private val outputWidth = plan.inputWidth + plan.outputs.size + (if (plan.variantColumn) 1 else 0) +
    (if (plan.errorColumn) 1 else 0)

  Option(TaskContext.get()).foreach(_.addTaskCompletionListener[Unit](_ => shutdown()))

  override def hasNext: Boolean = {
    while (!current.hasNext) {
      if (!inFlight.isEmpty && inFlight.peek()._2.isDone) {
        current = assemble(inFlight.poll())
      } else if (inFlight.size < plan.concurrency && (carried != null || input.hasNext)) {
        val batch = nextBatch()
        inFlight.add(batch -> executor.submit(() => call(batch, 0, batch.size)))
      } else if (!inFlight.isEmpty) {
        current = assemble(inFlight.poll())
      } else {
        shutdown()
        return false
      }
    }
    true
  }

  override def next(): Row = {
    if (!hasNext) throw new NoSuchElementException("no more rows in this partition")
    current.next()
  }

  private def executor: ExecutorService = {
    if (pool == null) {
      val partition = Option(TaskContext.get()).map(_.partitionId()).getOrElse(-1)
      val count = new AtomicInteger()
      pool = Executors.newFixedThreadPool(plan.concurrency, new ThreadFactory {
        override def newThread(r: Runnable): Thread = {
          val t = new Thread(r, s"sparkml-endpoint-p$partition-${count.incrementAndGet()}")
          t.setDaemon(true)
          t
        }
      })
    }
    pool
  }

  private def shutdown(): Unit = if (!finished) {
    finished = true
    if (pool != null) pool.shutdownNow()
  }

  /** Reads and encodes rows until the batch is full by count or by bytes (the row that would overflow it
   * starts the next batch). */
  private def nextBatch(): EncodedBatch = {
    val block = new OutputBlock(1 << 16)
    val rows = ArrayBuffer.empty[Row]
    val ends = ArrayBuffer.empty[Int]
    if (carried != null) {
      val (row, bytes) = carried
      block.reserve(bytes.length)
      block.copy(bytes, 0, bytes.length)
      rows += row
      ends += block.pos
      carried = null
    }
    var full = false
    while (!full && rows.size < plan.maxBatchRows && input.hasNext) {
      val row = input.next()
      val x = reader.read(row, plan.featuresOrdinal, position)
      val start = block.pos
      plan.serializer.write(x, block, plan.featuresCol, position)
      position += 1
      val rowBytes = block.pos - start
      if (rowBytes + overhead > plan.maxBatchBytes) {
        throw new EndpointException(s"a row of $rowBytes bytes exceeds maxBatchBytes=${plan.maxBatchBytes} (row " +
          s"${position - 1} of this partition)")
      }
      if (rows.nonEmpty && overhead + block.pos + separator * rows.size > plan.maxBatchBytes) {
        carried = row -> java.util.Arrays.copyOfRange(block.bytes, start, block.pos)
        block.pos = start
        full = true
      } else {
        rows += row
        ends += block.pos
      }
    }
    new EncodedBatch(rows.toArray, block.bytes, ends.toArray, plan.serializer)
  }

  private def call(batch: EncodedBatch, start: Int, stop: Int): Seq[Segment] = {
    val settings = plan.settings
    val n = stop - start
    val answer = EndpointClient.post(settings, batch.body(start, stop))
    if (answer.ok) {
      val variantText = answer.variant.map(v => s"variant $v").getOrElse("the endpoint")
      try {
        val out = plan.deserializer.deserialize(answer.body, n, plan.outputs)
        val wrong = out.filter(_._2.length != n)
        if (wrong.nonEmpty) {
          throw new ResponseFormatException(s"the endpoint returned ${wrong.map { case (k, v) => s"$k: ${v.length}" }
            .mkString("{", ", ", "}")} predictions for $n rows")
        }
        Seq(Segment(start, stop, out, answer.variant, null))
      } catch {
        case e: ResponseFormatException =>
          val message = s"cannot read the response of $variantText: ${e.getMessage}"
          if (!plan.errorColumn) throw new EndpointException(s"endpoint ${settings.url}: $message")
          Seq(Segment(start, stop, null, answer.variant, message))
      }
    } else {
      val unreachable = answer.status == EndpointClient.Unreachable
      val attempts = s"${settings.maxRetries + 1} attempt(s)"
      if (!plan.errorColumn) {
        val what = if (unreachable) s"gave no answer after $attempts (${answer.text})"
          else s"answered ${answer.status}: ${answer.text.take(1000)}"
        throw new EndpointException(s"endpoint ${settings.url} $what for a batch of $n rows")
      }
      val message = if (unreachable) s"no answer after $attempts: ${answer.text}"
        else s"${answer.status}: ${answer.text.take(1000)}"
      // only answers the rows can cause (unparsable row, body too large) are worth splitting the batch for
      if ((answer.status == 400 || answer.status == 413) && n > 1) {
        val middle = (start + stop) / 2 // isolate the rows at fault
        call(batch, start, middle) ++ call(batch, middle, stop)
      } else Seq(Segment(start, stop, null, answer.variant, message))
    }
  }

  private def assemble(entry: (EncodedBatch, Future[Seq[Segment]])): Iterator[Row] = {
    val (batch, future) = entry
    val segments = try future.get() catch {
      case e: ExecutionException => throw e.getCause match {
        case r: RuntimeException => r
        case other => new EndpointException(s"endpoint ${plan.settings.url}: $other")
      }
    }
    val width = plan.inputWidth
    val out = new Array[Row](batch.size)
    segments.foreach { s =>
      var i = s.start
      while (i < s.stop) {
        val row = batch.rows(i)
        val values = new Array[Any](outputWidth)
        var c = 0
        while (c < width) { values(c) = row.get(c); c += 1 }
        var k = 0
        while (k < plan.outputs.size) {
          val spec = plan.outputs(k)
          values(width + k) = if (s.outputs == null) null else s.outputs.get(spec.name) match {
            case Some(columns) =>
              val v = columns(i - s.start)
              if (spec.isVector) Vectors.dense(v) else java.lang.Double.valueOf(v(0))
            case None => null
          }
          k += 1
        }
        var at = width + plan.outputs.size
        if (plan.variantColumn) { values(at) = s.variant.orNull; at += 1 }
        if (plan.errorColumn) values(at) = s.error
        out(i) = new GenericRow(values)
        i += 1
      }
    }
    out.iterator
  }
}
