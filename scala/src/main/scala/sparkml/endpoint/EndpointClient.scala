package sparkml.endpoint

import java.io.IOException
import java.net.URI
import java.net.http.{HttpClient, HttpRequest, HttpResponse}
import java.time.Duration
import java.util.concurrent.ThreadLocalRandom

import scala.annotation.tailrec
import scala.jdk.OptionConverters._

/** One answer of the endpoint: its status, body and the variant that served it (None when not named). A
 * request that never got an answer has status [[EndpointClient.Unreachable]] and the error in `body`. */
final case class Answer(status: Int, body: Array[Byte], variant: Option[String], retryAfter: Option[Double] = None) {
  def ok: Boolean = status >= 200 && status < 300

  def text: String = new String(body, java.nio.charset.StandardCharsets.UTF_8)
}

/** What a partition needs to call an endpoint: where, how, and how hard to retry. */
final case class EndpointSettings(
    url: String,
    contentType: String,
    accept: String,
    token: Option[String],
    targetVariant: Option[String],
    requestTimeoutSeconds: Double,
    maxRetries: Int,
    retryBackoffSeconds: Double) {

  def invocations: URI = URI.create(url.stripSuffix("/") + "/invocations")

  override def toString: String =
    s"EndpointSettings($url, $contentType, $accept, token=${token.map(_ => "***").getOrElse("none")}, " +
      s"targetVariant=${targetVariant.getOrElse("")}, timeout=${requestTimeoutSeconds}s, maxRetries=$maxRetries)"
}

/** Calls `POST /invocations` with `java.net.http`, retrying 429 / 5xx answers and connection failures with
 * exponential backoff and jitter (honouring `Retry-After`). One HTTP client (and connection pool) per JVM. */
object EndpointClient {
  /** The status recorded for a request that got no answer at all (refused, reset, timed out). */
  val Unreachable = 599
  val Retryable: Set[Int] = Set(429, 500, 502, 503, 504, Unreachable)
  /** Longest wait between two attempts, in seconds. */
  val MaxBackoff = 10.0

  lazy val http: HttpClient = HttpClient.newBuilder()
    .version(HttpClient.Version.HTTP_1_1)
    .connectTimeout(Duration.ofSeconds(30))
    .followRedirects(HttpClient.Redirect.NEVER)
    .build()

  @tailrec
  def post(settings: EndpointSettings, body: Array[Byte], attempt: Int = 0): Answer = {
    val answer = once(settings, body)
    if (!Retryable.contains(answer.status) || attempt >= settings.maxRetries) answer
    else {
      val backoff = math.min(settings.retryBackoffSeconds * math.pow(2, attempt), MaxBackoff) *
        (0.5 + ThreadLocalRandom.current().nextDouble())
      Thread.sleep((math.max(backoff, answer.retryAfter.getOrElse(0.0)) * 1000).toLong)
      post(settings, body, attempt + 1)
    }
  }

  private def once(settings: EndpointSettings, body: Array[Byte]): Answer = {
    val builder = HttpRequest.newBuilder(settings.invocations)
      .timeout(Duration.ofMillis((settings.requestTimeoutSeconds * 1000).toLong))
      .header("Content-Type", settings.contentType)
      .header("Accept", settings.accept)
      .POST(HttpRequest.BodyPublishers.ofByteArray(body))
    settings.token.foreach(t => builder.header("Authorization", s"Bearer $t"))
    settings.targetVariant.foreach(v => builder.header("X-Target-Variant", v))
    try {
      val response = http.send(builder.build(), HttpResponse.BodyHandlers.ofByteArray())
      val headers = response.headers()
      val variant = headers.firstValue("X-Invoked-Production-Variant").toScala
        .orElse(headers.firstValue("X-Amzn-Invoked-Production-Variant").toScala)
      Answer(response.statusCode(), response.body(), variant,
        headers.firstValue("Retry-After").toScala.flatMap(_.trim.toDoubleOption))
    } catch {
      case e: IOException =>
        val reason = Option(e.getMessage).filter(_.nonEmpty).map(m => s"${e.getClass.getSimpleName}: $m")
          .getOrElse(e.getClass.getSimpleName)
        Answer(Unreachable, reason.getBytes(java.nio.charset.StandardCharsets.UTF_8), None)
      case e: InterruptedException =>
        Thread.currentThread().interrupt()
        throw e
    }
  }

  /** `GET <url>/metadata`: a spark_ml endpoint's description of its variants' outputs. */
  def metadata(url: String, token: Option[String], timeoutSeconds: Double): Answer = {
    val builder = HttpRequest.newBuilder(URI.create(url.stripSuffix("/") + "/metadata"))
      .timeout(Duration.ofMillis((timeoutSeconds * 1000).toLong)).GET()
    token.foreach(t => builder.header("Authorization", s"Bearer $t"))
    try {
      val response = http.send(builder.build(), HttpResponse.BodyHandlers.ofByteArray())
      Answer(response.statusCode(), response.body(), None)
    } catch {
      case e: IOException =>
        throw new EndpointException(s"cannot reach $url/metadata: ${e.getClass.getSimpleName}: ${e.getMessage}")
    }
  }
}

/** The endpoint failed a request (errorPolicy=fail), or could not be asked for its outputs. */
class EndpointException(message: String) extends RuntimeException(message)
