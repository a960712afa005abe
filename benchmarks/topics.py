"""Topic models on 20 Newsgroups: spark_ml's LDA (spectral) and NTM against MLlib's LDA (online and EM) and
gensim's LdaMulticore when it is installed, in the same ``local[2]`` Spark session.

    python benchmarks/topics.py [--vocabulary 20000] [--topics 20 50] [--sweep 10 25 50 100] [--skip-em]

Every model is fitted on the same counts (the 11,294 training posts, the ``--vocabulary`` words found in the
most documents, English stop words left out; the DataFrame cached before timing) and scored on the 7,529 test
posts. Held-out perplexity is ``exp(-mean over words of log p(word | the document's inferred topics))``, each
model inferring the document's topics its own way (MLlib: ``transform``'s topicDistribution with its
normalized topicsMatrix; gensim: its variational inference; ours: ``topic_mixture`` / the NTM decoder); the same
formula for all. Fit time is wall time of ``fit`` on the cached DataFrame (ours includes writing the channel).
Targets (issue 17): spectral LDA ≥ 10x faster than MLlib online at perplexity ≤ 1.1x MLlib's; NTM perplexity
below MLlib's at a fit time ≤ MLlib's. ``--sweep`` prints our LDA's training time as topics grow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # benchmarks/xgboost.py shadows xgboost
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def per_word(word_probs: np.ndarray, counts: sp.csr_matrix) -> float:
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    p = np.maximum(word_probs[rows, counts.indices], 1e-300)
    return float((counts.data * np.log(p)).sum() / counts.sum())


def frame(spark, counts: sp.csr_matrix):
    from pyspark.ml.linalg import Vectors

    rows = [(i, Vectors.sparse(counts.shape[1], counts.indices[a:b].tolist(), counts.data[a:b].tolist()))
            for i, (a, b) in enumerate(zip(counts.indptr[:-1], counts.indptr[1:], strict=True))]
    return spark.createDataFrame(rows, ["id", "features"])


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def compare(k, args, train_df, test_df, counts, held_out, vocabulary, have_gensim) -> None:
    from pyspark.ml.clustering import LDA as MLlibLDA

    import spark_ml

    results: dict[str, tuple[float, float]] = {}
    print(f"\nk = {k}: fitting (load average {os.getloadavg()[0]:.1f})", flush=True)

    def note(name: str, value: tuple[float, float]) -> None:
        results[name] = value
        print(f"  {name}: fit {value[1]:.1f} s, perplexity {np.exp(-value[0]):.1f} (load average "
              f"{os.getloadavg()[0]:.1f})", flush=True)

    def mllib(optimizer: str):
        model, seconds = timed(lambda: MLlibLDA(k=k, optimizer=optimizer, seed=1).fit(train_df))
        beta = np.array(model.topicsMatrix().toArray()).T
        beta /= beta.sum(axis=1, keepdims=True)
        theta = np.array([r.topicDistribution.toArray() for r in model.transform(test_df).orderBy("id").collect()])
        return per_word(theta @ beta, held_out), seconds

    note("MLlib online", mllib("online"))
    if not args.skip_em:
        note("MLlib em", mllib("em"))
    for passes in (0, 1):
        model, seconds = timed(lambda passes=passes: spark_ml.LDA(
            numTopics=k, refinementPasses=passes, showProgress=False).fit(train_df))
        loglik, words = model.algorithm_model.log_likelihood(held_out)
        note(f"spark_ml LDA (spectral{' + 1 EM pass' if passes else ''})", (loglik / words, seconds))
    model, seconds = timed(lambda: spark_ml.NTM(numTopics=k, epochs=args.ntm_epochs, optimizer="adam",
                                                learningRate=0.005, miniBatchSize=256,
                                                showProgress=False).fit(train_df))
    loglik, words = model.algorithm_model.log_likelihood(held_out)
    note("spark_ml NTM", (loglik / words, seconds))
    if have_gensim:
        from gensim.models import LdaMulticore

        def bow(m):
            return [list(zip(m.indices[a:b].tolist(), m.data[a:b].astype(int).tolist(), strict=True))
                    for a, b in zip(m.indptr[:-1], m.indptr[1:], strict=True)]

        corpus = bow(counts)
        lda, seconds = timed(lambda: LdaMulticore(corpus, num_topics=k, workers=2, passes=1, random_state=1,
                                                  id2word=dict(enumerate(vocabulary))))
        gamma, _ = lda.inference(bow(held_out))
        theta = gamma / gamma.sum(axis=1, keepdims=True)
        note("gensim LdaMulticore (1 pass)", (per_word(theta @ lda.get_topics(), held_out), seconds))
    base_ll, base_seconds = results["MLlib online"]
    print(f"\nk = {k} (load average {os.getloadavg()[0]:.1f})")
    print(f"{'model':40s} {'fit s':>8s} {'perplexity':>11s} {'speed vs online':>16s} {'perplexity ratio':>17s}")
    for name, (ll, seconds) in results.items():
        print(f"{name:40s} {seconds:8.1f} {np.exp(-ll):11.1f} {base_seconds / seconds:15.1f}x "
              f"{np.exp(base_ll - ll):16.3f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocabulary", type=int, default=20000)
    parser.add_argument("--topics", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--sweep", type=int, nargs="*", default=[10, 25, 50, 100])
    parser.add_argument("--ntm-epochs", type=int, default=15)
    parser.add_argument("--skip-em", action="store_true", help="leave out MLlib's EM optimizer (slow)")
    args = parser.parse_args()

    from pyspark.sql import SparkSession
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    from text_datasets import count_matrix, newsgroups

    import spark_ml

    train_texts, _, test_texts, _ = newsgroups()
    counts, vocabulary = count_matrix(train_texts, max_words=args.vocabulary,
                                      stop_words=frozenset(ENGLISH_STOP_WORDS))
    held_out, _ = count_matrix(test_texts, vocabulary=vocabulary)
    held_out = held_out[np.asarray(held_out.sum(axis=1)).ravel() > 0]
    print(f"20 Newsgroups: {counts.shape[0]} training documents, {held_out.shape[0]} test documents with words, "
          f"vocabulary {counts.shape[1]}, {int(counts.sum())} training words; load average "
          f"{os.getloadavg()[0]:.1f}")
    spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "6g")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    train_df = frame(spark, counts).repartition(2).cache()
    test_df = frame(spark, held_out).cache()
    train_df.count(), test_df.count()

    try:
        import gensim  # noqa: F401
        have_gensim = True
    except ImportError:
        have_gensim = False
        print("gensim is not installed: its LdaMulticore is left out")

    for k in args.topics:
        compare(k, args, train_df, test_df, counts, held_out, vocabulary, have_gensim)

    if args.sweep:
        print(f"\nspark_ml LDA training time as topics grow (vocabulary {counts.shape[1]}, refinementPasses 0 / 1)")
        for k in args.sweep:
            times = []
            for passes in (0, 1):
                _, seconds = timed(lambda k=k, passes=passes: spark_ml.LDA(
                    numTopics=k, refinementPasses=passes, showProgress=False).fit(train_df))
                times.append(seconds)
            print(f"  k = {k:4d}: {times[0]:7.1f} s spectral, {times[1]:7.1f} s with one EM pass "
                  f"(load average {os.getloadavg()[0]:.1f})")
    spark.stop()


if __name__ == "__main__":
    main()
