"""The topic models as Spark estimators: LDA (spectral) and NTM (neural), from ``CountVectorizer``'s vectors.

Both take the sparse word-count vectors ``pyspark.ml.feature.CountVectorizer`` produces as they are, and a
``vocabulary`` Param (e.g. ``CountVectorizerModel.vocabulary``): it becomes the job's ``auxiliary`` channel
(``vocab.txt``, SageMaker's NTM contract) and the trained model's word list, so topics read as words.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from pyspark.sql import DataFrame

from algorithms import fs as fsutil
from algorithms.builtin.topic_words import VOCABULARY_FILE
from algorithms.channel import FULLY_REPLICATED, Channel

from .base import SageMakerEstimator, SageMakerModel
from .params import ParamError, setting_param

_VOCABULARY_DOC = ("The words of the vocabulary in word-id order (e.g. CountVectorizerModel.vocabulary); its "
                   "length must be the vectors' size. It reaches training as the auxiliary channel's vocab.txt "
                   "and stays with the model, so topics are listed as words.")


class _TopicEstimator(SageMakerEstimator):
    vocabulary = setting_param("vocabulary", list, _VOCABULARY_DOC)

    def _fit_channels(self, data: dict[str, Any]) -> SageMakerModel:
        words = self.getOrDefault(self.vocabulary) if self.isDefined(self.vocabulary) else None
        if not words:
            return super()._fit_channels(data)
        if "auxiliary" in data:
            raise ParamError("set either the vocabulary Param or an auxiliary channel, not both")
        declared = self.getOrDefault(self.featureDim) if self.isSet(self.featureDim) else None
        if declared is not None and declared != len(words):
            raise ParamError(f"Param vocabulary has {len(words)} words but featureDim is {declared}")
        spark = self._session(data)
        folder = fsutil.join(self._staging_dir(spark), f"vocabulary-{uuid.uuid4().hex[:12]}")
        _write_vocabulary(folder, words)
        try:
            auxiliary = Channel(folder, "text/plain", FULLY_REPLICATED)
            return super()._fit_channels({**data, "auxiliary": auxiliary})
        finally:
            self._discard_staged([folder])

    def hyperparameters(self, feature_dim: int | None = None) -> dict[str, str]:
        words = self.getOrDefault(self.vocabulary) if self.isDefined(self.vocabulary) else None
        if words and feature_dim is not None and feature_dim != len(words):
            raise ParamError(f"Param vocabulary has {len(words)} words but the train data's vectors have "
                             f"{feature_dim} features; pass the vocabulary of the CountVectorizerModel that made "
                             "them")
        return super().hyperparameters(feature_dim)


def _write_vocabulary(folder: str, words: list[str]) -> None:
    bad = [w for w in words if "\n" in w or "\r" in w]
    if bad:
        raise ParamError(f"Param vocabulary: word {bad[0]!r} contains a line break")
    fs, root = fsutil.resolve(folder)
    fs.create_dir(root, recursive=True)
    _, path = fsutil.resolve(fsutil.join(folder, VOCABULARY_FILE))
    fsutil.write_bytes_atomic(fs, path, "".join(f"{w}\n" for w in words).encode("utf-8"))


class _TopicModel(SageMakerModel):
    @property
    def vocabulary(self) -> list[str] | None:
        """The words of the vocabulary the model was trained with (None when it had none)."""
        return self.algorithm_model.vocabulary

    @property
    def topics(self) -> np.ndarray:
        """(numTopics, vocabSize): each topic's weights over the words."""
        return np.array(self.algorithm_model.topics)

    @property
    def numTopics(self) -> int:
        return int(self.algorithm_model.num_topics)

    def vocabSize(self) -> int:
        return int(self.algorithm_model.feature_dim)


# ------------------------------------------------------------------------------------------------------ LDA


class LDAModel(_TopicModel):
    """A trained LDA model. ``transform`` adds ``topic_mixture``: each document's topic proportions (a vector
    of numTopics values summing to 1). ``topics`` holds each topic's word distribution, ``alpha`` the Dirichlet
    prior, ``describeTopics`` the heaviest words of each topic (as MLlib's).

    Examples
    --------
    >>> import spark_ml
    >>> from pyspark.ml.feature import CountVectorizer
    >>> docs = spark.createDataFrame([("apple banana apple cherry banana apple".split(),),
    ...                               ("dog cat dog mouse cat dog".split(),)] * 50, ["words"])
    >>> vectorizer = CountVectorizer(inputCol="words", outputCol="features").fit(docs)
    >>> counts = vectorizer.transform(docs)
    >>> model = spark_ml.LDA(numTopics=2, vocabulary=vectorizer.vocabulary).fit(counts)
    >>> sorted(sorted(words[:3]) for words in model.topWords(3))
    [['apple', 'banana', 'cherry'], ['cat', 'dog', 'mouse']]
    >>> row = model.transform(counts).first()
    >>> len(row.topic_mixture), round(float(row.topic_mixture.toArray().sum()), 6)
    (2, 1.0)
    """

    @property
    def alpha(self) -> np.ndarray:
        """The Dirichlet prior of the topic mixtures (numTopics,), largest first."""
        return np.array(self.algorithm_model.alpha)

    def topicsMatrix(self):
        """(vocabSize × numTopics) DenseMatrix of the topics' word distributions, as MLlib's."""
        from pyspark.ml.linalg import DenseMatrix

        topics = self.topics
        return DenseMatrix(topics.shape[1], topics.shape[0], topics.T.ravel(order="F").tolist())

    def describeTopics(self, maxTermsPerTopic: int = 10) -> DataFrame:
        """A DataFrame of ``topic``, ``termIndices``, ``termWeights`` (heaviest first), as MLlib's, plus ``terms``
        (the words) when the model has a vocabulary."""
        from pyspark.sql import SparkSession

        ids, weights = self.algorithm_model.describe_topics(int(maxTermsPerTopic))
        words = self.vocabulary
        rows = []
        for topic, (row_ids, row_weights) in enumerate(zip(ids.tolist(), weights.tolist(), strict=True)):
            row = [topic, row_ids, row_weights]
            if words is not None:
                row.append([words[i] for i in row_ids])
            rows.append(tuple(row))
        columns = ["topic", "termIndices", "termWeights"] + (["terms"] if words is not None else [])
        return SparkSession.active().createDataFrame(rows, columns)

    def topWords(self, n: int = 10) -> list[list[str]]:
        """The ``n`` most probable words of each topic (needs a vocabulary)."""
        return self.algorithm_model.top_words(int(n))


class LDA(_TopicEstimator):
    """SageMaker's LDA: spectral topic recovery (Anandkumar et al.) from moments of the word counts, summed over
    two streamed passes and merged across workers; the word-pair moment is never formed densely, so large
    vocabularies fit. 25% extra topics are computed and the best supported kept. Takes CountVectorizer's
    vectors directly; empty documents are skipped and counted (``metrics["train:empty_documents"]``).

    Examples
    --------
    >>> import spark_ml
    >>> from pyspark.ml.linalg import Vectors
    >>> df = spark.createDataFrame([(Vectors.sparse(4, [0, 1], [3.0, 2.0]),), (Vectors.sparse(4, [2, 3], [2.0, 3.0]),)]
    ...                            * 40, ["features"])
    >>> model = spark_ml.LDA(numTopics=2, alpha0=0.5).fit(df)
    >>> [sorted(ids) for ids in model.algorithm_model.describe_topics(2)[0].tolist()] in ([[0, 1], [2, 3]],
    ...                                                                               [[2, 3], [0, 1]])
    True
    """

    _algorithm = "lda"
    _model_class = LDAModel


# ------------------------------------------------------------------------------------------------------ NTM


class NTMModel(_TopicModel):
    """A trained NTM. ``transform`` adds ``topic_weights``: each document's topic proportions (numTopics values
    summing to 1). ``topWords(n)`` lists each topic's most characteristic words; the job's metrics hold the
    topics' coherence (``topics:wetc``, ``topics:npmi``) and uniqueness (``topics:tu``).

    Examples
    --------
    >>> import spark_ml
    >>> from pyspark.ml.feature import CountVectorizer
    >>> docs = spark.createDataFrame([("apple banana apple cherry".split(),), ("dog cat dog mouse".split(),)] * 64,
    ...                              ["words"])
    >>> vectorizer = CountVectorizer(inputCol="words", outputCol="features").fit(docs)
    >>> model = spark_ml.NTM(numTopics=2, epochs=3, optimizer="adam", learningRate=0.01,
    ...                      vocabulary=vectorizer.vocabulary).fit(vectorizer.transform(docs))
    >>> len(model.topWords(3)), len(model.topWords(3)[0])
    (2, 3)
    """

    def topWords(self, n: int = 10) -> list[list[str]]:
        """The ``n`` words of each topic with the largest decoder weight (word ids as strings without a
        vocabulary)."""
        return self.algorithm_model.top_words(int(n))


class NTM(_TopicEstimator):
    """SageMaker's Neural Topic Model: a variational encoder-decoder over word counts, trained by mini-batch
    SGD with DDP across the workers (``numWorkers``), early stopping on ``validation:total_loss`` when a
    validation DataFrame is given (``fit({"train": df, "validation": df2})``). Sparse vectors stay sparse.

    Examples
    --------
    >>> import spark_ml
    >>> from pyspark.ml.linalg import Vectors
    >>> df = spark.createDataFrame([(Vectors.sparse(4, [0, 1], [3.0, 2.0]),), (Vectors.sparse(4, [2, 3], [2.0, 3.0]),)]
    ...                            * 32, ["features"])
    >>> model = spark_ml.NTM(numTopics=2, epochs=2).fit(df)
    >>> model.transform(df).first().topic_weights.size
    2
    """

    _algorithm = "ntm"
    _model_class = NTMModel


__all__ = ["LDA", "NTM", "LDAModel", "NTMModel"]
