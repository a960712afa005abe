"""Seq2Seq as a Spark estimator: ``Seq2Seq`` trains on a DataFrame of sentence pairs (or SageMaker's three
channels), ``Seq2SeqModel`` translates a string column in the executors with batched beam search.

From a DataFrame: ``sourceCol`` / ``targetCol`` hold sentences; the ``tokenizer`` splits them (whitespace, or a
SentencePiece model file); the source and target vocabularies keep the ``vocabSize`` most frequent tokens
seen at least ``minCount`` times; ``validationFraction`` of the pairs are held out for the ``validation``
channel unless ``fit({"train": df, "validation": df2})`` gives one. From channels: ``fit({"train": ch,
"validation": ch, "vocab": ch})`` with SageMaker's files, unchanged.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from algorithms import fs as fsutil
from algorithms.builtin.seq2seq.tokenize import Tokenizer
from algorithms.builtin.seq2seq.vocab import Vocabulary
from algorithms.channel import FULLY_REPLICATED, Channel

from ..arrow_vectors import ColumnError
from ..runner import TrainingRequest, run_training
from .base import SageMakerEstimator, SageMakerModel
from .params import DeclaredParams, ParamError, setting_param
from .scoring import _load, artifact_files


class _TranslationParams(DeclaredParams):
    sourceCol = setting_param("sourceCol", str, "The column of source sentences (strings).", "source")
    translationCol = setting_param("translationCol", str, "The column transform adds: the translation.",
                                   "translation")
    attentionCol = setting_param("attentionCol", str, "When set, transform also adds this column: the attention "
                                 "matrix of each translation (one row per target token, one column per source "
                                 "token).")
    translationBatchSize = setting_param("translationBatchSize", int, "Sentences per beam-search batch in the "
                                         "executors.", 64, low=1)


class Seq2SeqModel(SageMakerModel, _TranslationParams):
    """A trained Seq2Seq model. ``transform`` adds ``translationCol`` (and ``attentionCol`` when set), translating
    ``sourceCol`` with beam search (``beamSize`` of training) in the executors, on their GPU when they have one.

    Examples
    --------
    >>> import spark_ml
    >>> pairs = spark.createDataFrame([("1 2 3", "one two three"), ("3 2", "three two")] * 20, ["source", "target"])
    >>> model = spark_ml.Seq2Seq(encoderType="cnn", decoderType="cnn", cnnNumHidden=16, numEmbedSource=16,
    ...                          numEmbedTarget=16, batchSize=8, maxNumBatches=5).fit(pairs)
    >>> model.sourceVocabulary
    ['<pad>', '<unk>', '<s>', '</s>', '3', '2', '1']
    >>> row = model.setAttentionCol("attention").transform(pairs).first()
    >>> len(row.attention) == len(row.translation.split()), len(row.attention[0]) == len(row.source.split())
    (True, True)
    """

    @property
    def sourceVocabulary(self) -> list[str]:
        return list(self.algorithm_model.source_vocab.tokens)

    @property
    def targetVocabulary(self) -> list[str]:
        return list(self.algorithm_model.target_vocab.tokens)

    def translate(self, sentences: list[str], attention: bool = False):
        """Translations on the driver (a few sentences; ``transform`` for DataFrames)."""
        return self.algorithm_model.translate(sentences, attention=attention)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        source = self.getOrDefault(self.sourceCol)
        if source not in dataset.columns:
            raise ColumnError(f"sourceCol {source!r} is not a column (columns: {', '.join(dataset.columns)})")
        if not isinstance(dataset.schema[source].dataType, StringType):
            raise ColumnError(f"sourceCol {source!r} must hold strings, not "
                              f"{dataset.schema[source].dataType.simpleString()}")
        out_col = self.getOrDefault(self.translationCol)
        attention_col = self.getOrDefault(self.attentionCol) if self.isDefined(self.attentionCol) else None
        added = [c for c in (out_col, attention_col) if c]
        clash = [c for c in added if c in dataset.columns]
        if clash:
            raise ColumnError(f"the input already has column(s) {', '.join(clash)}, which transform adds; rename "
                              "them or set translationCol / attentionCol")
        files = artifact_files(self.getOrDefault(self.modelLocation))
        key = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()
        position = dataset.columns.index(source)
        batch_size = self.getOrDefault(self.translationBatchSize)
        fields = [StructField(out_col, StringType(), True)]
        if attention_col:
            fields.append(StructField(attention_col, ArrayType(ArrayType(FloatType())), True))
        schema = StructType(list(dataset.schema.fields) + fields)

        def translate(batches):
            model = _load(files, key)
            for batch in batches:
                texts = batch.column(position).to_pylist()
                rows = [i for i, t in enumerate(texts) if t is not None]
                found = [None] * len(texts)
                matrices = [None] * len(texts)
                if rows:
                    sources = [model.source_vocab.encode(model.tokenizer.split(texts[i])) for i in rows]
                    result = model.translate_ids(sources, attention=bool(attention_col), batch_size=batch_size)
                    for i, t in zip(rows, result, strict=True):
                        found[i] = model.target_text(t.tokens)
                        if attention_col:
                            matrices[i] = t.attention.tolist()
                columns = list(batch.columns) + [pa.array(found, pa.string())]
                names = list(batch.schema.names) + [out_col]
                if attention_col:
                    columns.append(pa.array(matrices, pa.list_(pa.list_(pa.float32()))))
                    names.append(attention_col)
                yield pa.RecordBatch.from_arrays(columns, names)

        return dataset.mapInArrow(translate, schema)


class Seq2Seq(SageMakerEstimator, _TranslationParams):
    """SageMaker's Seq2Seq (Sockeye-style): RNN encoder–decoder with attention, convolutional, or (beyond
    SageMaker) Transformer encoders and decoders, trained with PyTorch DDP across ``numWorkers`` executors.

    Examples
    --------
    >>> import spark_ml
    >>> pairs = spark.createDataFrame([("1 2 3", "one two three"), ("3 2", "three two")] * 20, ["source", "target"])
    >>> s2s = spark_ml.Seq2Seq(encoderType="transformer", decoderType="transformer", transformerModelSize=16,
    ...                        transformerAttentionHeads=2, transformerFeedForwardNumHidden=32, numEmbedSource=16,
    ...                        numEmbedTarget=16, batchSize=8, maxNumBatches=5, checkpointFrequencyNumBatches=5)
    >>> model = s2s.fit(pairs)
    >>> model.targetVocabulary
    ['<pad>', '<unk>', '<s>', '</s>', 'two', 'three', 'one']
    >>> sorted(model.metrics)
    ['train:perplexity', 'validation:accuracy', 'validation:perplexity']
    >>> model.transform(pairs).columns
    ['source', 'target', 'translation']
    """

    _algorithm = "seq2seq"
    _model_class = Seq2SeqModel

    targetCol = setting_param("targetCol", str, "The column of target sentences (strings), for training.",
                              "target")
    tokenizer = setting_param("tokenizer", str, "How sentences are split into tokens: 'whitespace', or the path "
                              "of a SentencePiece model file (needs the sentencepiece package).", "whitespace")
    vocabSize = setting_param("vocabSize", int, "Most tokens of each vocabulary (besides <pad>, <unk>, <s>, "
                              "</s>), the most frequent ones.", 50000, low=1)
    minCount = setting_param("minCount", int, "Tokens seen fewer times than this are left out of the "
                             "vocabularies (read as <unk>).", 1, low=1)
    validationFraction = setting_param("validationFraction", float, "Share of the pairs held out for validation "
                                       "when fit is given one DataFrame.", 0.1, low=0, high=1, low_open=True,
                                       high_open=True)
    seed = setting_param("seed", int, "Seed of the validation split.", 0)

    def _tokenizer(self) -> Tokenizer:
        choice = self.getOrDefault(self.tokenizer)
        if choice == "whitespace":
            return Tokenizer()
        try:
            fs, inner = fsutil.resolve(choice)
            data = fsutil.read_bytes(fs, inner)
        except (OSError, ValueError) as exc:
            raise ParamError(f"Param tokenizer: {choice!r} is neither 'whitespace' nor a readable SentencePiece "
                             f"model file ({exc})") from None
        try:
            return Tokenizer(data)
        except ImportError as exc:
            raise ParamError(f"Param tokenizer: {exc}") from None
        except RuntimeError as exc:
            raise ParamError(f"Param tokenizer: {choice} is not a SentencePiece model ({exc})") from None

    def _fit_channels(self, data: dict[str, DataFrame | Channel]) -> Seq2SeqModel:
        hps = self.hyperparameters()  # every check that needs no data, before any Spark job
        unknown = sorted(set(data) - {"train", "validation", "vocab"})
        if unknown:
            raise ValueError(f"Seq2Seq reads the channels train, validation and vocab, not {', '.join(unknown)}")
        spark = self._session(data)
        started = time.perf_counter()
        channels, staged = self._channels(spark, data)
        seconds = time.perf_counter() - started
        try:
            result = run_training(spark, TrainingRequest(
                algorithm=self._algorithm, hyperparameters=hps, channels=channels,
                num_workers=self.getOrDefault(self.numWorkers), gpus_per_worker=self.getOrDefault(self.gpusPerWorker),
                model_store=self._model_store(spark), progress=self.getOrDefault(self.showProgress),
                phases={"conversion": seconds} if staged else {}))
        finally:
            self._discard_staged(staged)
        model = self._model_class(modelLocation=result.model_location)
        for name in ("sourceCol", "translationCol", "translationBatchSize"):
            model._set(**{name: self.getOrDefault(getattr(self, name))})
        if self.isDefined(self.attentionCol):
            model._set(attentionCol=self.getOrDefault(self.attentionCol))
        model._training_job = result.job_name
        model._training_metrics = dict(result.metrics)
        return model

    def _channels(self, spark, data: dict) -> tuple[dict[str, Channel], list[str]]:
        from ..seq2seq_channels import check_columns, count_tokens, write_pairs, write_vocab

        train = data.get("train")
        if isinstance(train, Channel):
            missing = [n for n in ("validation", "vocab") if not isinstance(data.get(n), Channel)]
            if missing:
                raise ValueError(f"a train Channel needs the {' and '.join(missing)} Channel(s) too (SageMaker's "
                                 "three channels); or fit on DataFrames")
            return {"train": train, "validation": data["validation"].with_distribution(FULLY_REPLICATED),
                    "vocab": data["vocab"].with_distribution(FULLY_REPLICATED)}, []
        if not isinstance(train, DataFrame):
            raise TypeError(f"channel train: expected a DataFrame or a Channel, got {type(train).__name__}")
        if "vocab" in data:
            raise ValueError("the vocab channel is built from the train DataFrame; give it only with Channels")
        source_col, target_col = self.getOrDefault(self.sourceCol), self.getOrDefault(self.targetCol)
        validation = data.get("validation")
        check_columns(train, sourceCol=source_col, targetCol=target_col)
        if validation is None:
            fraction = self.getOrDefault(self.validationFraction)
            train, validation = train.randomSplit([1 - fraction, fraction], seed=self.getOrDefault(self.seed))
        elif isinstance(validation, DataFrame):
            check_columns(validation, sourceCol=source_col, targetCol=target_col)
        else:
            raise TypeError("validation must be a DataFrame when train is one")
        tokenizer = self._tokenizer()
        size, min_count = self.getOrDefault(self.vocabSize), self.getOrDefault(self.minCount)
        source_vocab = Vocabulary.build(count_tokens(train, source_col, tokenizer), size, min_count)
        target_vocab = Vocabulary.build(count_tokens(train, target_col, tokenizer), size, min_count)
        folder = fsutil.join(self._staging_dir(spark), f"seq2seq-{uuid.uuid4().hex[:12]}")
        workers = self.getOrDefault(self.numWorkers)
        try:
            channels = {
                "train": write_pairs(train, fsutil.join(folder, "train"), source_col, target_col, source_vocab,
                                     target_vocab, tokenizer, workers),
                "validation": write_pairs(validation, fsutil.join(folder, "validation"), source_col, target_col,
                                          source_vocab, target_vocab, tokenizer, 1).with_distribution(FULLY_REPLICATED),
                "vocab": write_vocab(fsutil.join(folder, "vocab"), source_vocab, target_vocab, tokenizer),
            }
        except Exception:
            self._discard_staged([folder])
            raise
        for name in ("train", "validation"):
            if not channels[name].num_records:
                raise ValueError(f"the {name} pairs are all empty after tokenization (sourceCol {source_col!r}, "
                                 f"targetCol {target_col!r})")
        return channels, [folder]

__all__ = ["Seq2Seq", "Seq2SeqModel"]
