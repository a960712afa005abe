"""SageMaker Seq2Seq's hyperparameters (its documented names, defaults and ranges) and their cross-checks.

Beyond SageMaker: ``encoder_type`` / ``decoder_type`` also take ``transformer`` (with the ``transformer_*``
sizes below), and ``label_smoothing`` spreads that much of the target probability over the vocabulary, as
Sockeye's option of the same name does. ``max_num_epochs`` unset means "until early stopping or
``max_num_batches``", as in SageMaker.
"""

from __future__ import annotations

from typing import Any

from ...hyperparameters import Hyperparameter, HyperparameterError, HyperparameterSpec

H = Hyperparameter

NETWORKS = ("rnn", "cnn", "transformer")
CELLS = ("lstm", "gru")
ATTENTIONS = ("mlp", "dot", "bilinear", "fixed")
STATE_INITS = ("last", "avg", "zero")
CNN_ACTIVATIONS = ("glu", "relu", "softrelu", "sigmoid", "tanh")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("plateau_reduce", "fixed_rate_inv_t", "fixed_rate_inv_sqrt_t")
METRICS = ("perplexity", "accuracy", "bleu")


def _dropout(name: str, what: str) -> Hyperparameter:
    return H(name, float, 0.0, low=0, high=1, high_open=True, doc=f"dropout probability of {what}")


SPEC = HyperparameterSpec([
    # data
    H("max_seq_len_source", int, 100, low=1, doc="source sequences longer than this are truncated to it "
      "(in training and inference)"),
    H("max_seq_len_target", int, 100, low=1, doc="target sequences longer than this are truncated to it; "
      "translations stop at it"),
    H("batch_size", int, 64, low=1, doc="sentence pairs per update, summed over all workers"),
    H("bucketing_enabled", bool, True, doc="group sentence pairs of similar lengths into the same batches; "
      "false: batches mix all lengths"),
    H("bucket_width", int, 10, low=1, doc="width of the length buckets, in tokens, on the longer side"),
    # network
    H("encoder_type", str, "rnn", choices=NETWORKS, doc="rnn (Bahdanau-style, bidirectional first layer), "
      "cnn (Gehring et al.) or transformer (Vaswani et al.; not in SageMaker)"),
    H("decoder_type", str, "rnn", choices=NETWORKS, doc="rnn (with attention), cnn or transformer"),
    H("num_layers_encoder", int, 1, low=1, doc="encoder layers"),
    H("num_layers_decoder", int, 1, low=1, doc="decoder layers"),
    H("num_embed_source", int, 512, low=1, doc="source embedding size"),
    H("num_embed_target", int, 512, low=1, doc="target embedding size"),
    H("rnn_num_hidden", int, 1024, low=2, doc="rnn hidden units of encoder and decoder (even: the first "
      "encoder layer is bidirectional, half each way)"),
    H("rnn_cell_type", str, "lstm", choices=CELLS, doc="rnn cell"),
    H("rnn_attention_type", str, "mlp", choices=ATTENTIONS, doc="rnn attention: mlp (Luong's concat), dot, "
      "bilinear (Luong's general) or fixed (the last encoder state, i.e. no attention)"),
    H("rnn_attention_num_hidden", int, None, low=1, doc="hidden units of the mlp attention; unset: "
      "rnn_num_hidden"),
    H("rnn_attention_in_upper_layers", bool, True, doc="feed the attention context to every decoder rnn layer, "
      "not only the first (GNMT)"),
    H("rnn_decoder_state_init", str, "last", choices=STATE_INITS, doc="initial decoder state: from the "
      "encoder's last state, its average over positions, or zeros"),
    H("rnn_residual_connections", bool, False, doc="residual connections between stacked rnn layers"),
    H("rnn_first_residual_layer", int, 2, low=2, doc="first rnn layer (from 1) with a residual connection"),
    H("rnn_decoder_hidden_dropout", float, 0.0, low=0, high=1, high_open=True,
      doc="dropout probability of the decoder's hidden state that combines context and rnn output"),
    H("cnn_num_hidden", int, 512, low=1, doc="cnn hidden units of encoder and decoder"),
    H("cnn_kernel_width_encoder", int, 3, low=1, doc="kernel width of the cnn encoder"),
    H("cnn_kernel_width_decoder", int, 5, low=1, doc="kernel width of the cnn decoder"),
    H("cnn_activation_type", str, "glu", choices=CNN_ACTIVATIONS, doc="cnn activation"),
    _dropout("cnn_hidden_dropout", "the cnn layers' outputs"),
    H("transformer_model_size", int, 512, low=1, doc="transformer model size (not in SageMaker)"),
    H("transformer_attention_heads", int, 8, low=1, doc="transformer attention heads (not in SageMaker)"),
    H("transformer_feed_forward_num_hidden", int, 2048, low=1, doc="transformer feed-forward hidden units "
      "(not in SageMaker)"),
    _dropout("transformer_dropout", "the transformer's attention, activations and residual branches "
             "(not in SageMaker)"),
    _dropout("embed_dropout_source", "source embeddings"),
    _dropout("embed_dropout_target", "target embeddings"),
    H("weight_init_type", str, "xavier", choices=("xavier", "uniform"), doc="weight initialization"),
    H("weight_init_scale", float, 2.34, low=0, low_open=True, doc="xavier magnitude, or the uniform range "
      "[-scale, scale]"),
    H("xavier_factor_type", str, "in", choices=("in", "out", "avg"), doc="xavier's fan: in, out or their "
      "average"),
    # training
    H("loss_type", str, "cross-entropy", choices=("cross-entropy",), doc="training loss"),
    H("label_smoothing", float, 0.0, low=0, high=1, high_open=True, doc="probability mass spread over the "
      "vocabulary in the training loss (Sockeye's label smoothing)"),
    H("training_metric", str, "perplexity", choices=("perplexity", "accuracy"),
      doc="training metric reported as train:<metric>"),
    H("optimized_metric", str, "perplexity", choices=METRICS, doc="validation metric that early stopping, "
      "the learning-rate plateau and the kept weights follow"),
    H("bleu_sample_size", int, 0, low=-1, doc="validation sentences decoded (beam search) for validation:bleu "
      "at every checkpoint; -1: all; 0: none unless optimized_metric is bleu (then all)"),
    H("max_num_batches", int, -1, low=-1, doc="most updates; -1: no limit"),
    H("max_num_epochs", int, None, low=1, doc="most passes over the training data; unset: no limit"),
    H("min_num_epochs", int, 0, low=0, doc="epochs before early stopping may stop training"),
    H("checkpoint_frequency_num_batches", int, 1000, low=1, doc="updates between checkpoints (an evaluation "
      "on the validation channel, and a saved training state)"),
    H("checkpoint_threshold", int, 3, low=1, doc="checkpoints without improvement of optimized_metric before "
      "training stops"),
    H("optimizer_type", str, "adam", choices=OPTIMIZERS, doc="optimizer"),
    H("learning_rate", float, 0.0003, low=0, low_open=True, doc="initial learning rate"),
    H("momentum", float, None, low=0, high=1, high_open=True, doc="momentum of sgd"),
    H("weight_decay", float, 0.0, low=0, doc="L2 weight decay"),
    H("clip_gradient", float, 1.0, doc="clip gradient values to [-clip, clip]; negative: no clipping"),
    H("lr_scheduler_type", str, "plateau_reduce", choices=SCHEDULES, doc="plateau_reduce: multiply the rate "
      "by plateau_reduce_lr_factor when optimized_metric stalls; fixed_rate_inv_t / fixed_rate_inv_sqrt_t: "
      "decay as 1/t or 1/sqrt(t)"),
    H("plateau_reduce_lr_factor", float, 0.5, low=0, high=1, low_open=True, high_open=True,
      doc="factor of plateau_reduce"),
    H("plateau_reduce_lr_threshold", int, 3, low=1, doc="checkpoints without improvement before plateau_reduce "
      "lowers the rate"),
    H("fixed_rate_lr_half_life", int, 10, low=1, doc="checkpoints until the fixed_rate_* schedules halve the "
      "rate"),
    H("beam_size", int, 5, low=1, doc="beam width of the translations (validation BLEU and inference)"),
])


def validate(values: dict[str, Any]) -> dict[str, Any]:
    """SageMaker's checks between hyperparameters, on parsed values."""
    encoder, decoder = values["encoder_type"], values["decoder_type"]
    if values["rnn_num_hidden"] % 2:
        raise HyperparameterError("rnn_num_hidden", f"must be even (the first encoder layer is bidirectional), "
                                  f"got {values['rnn_num_hidden']}")
    if values["momentum"] is not None and values["optimizer_type"] != "sgd":
        raise HyperparameterError("momentum", f"applies to optimizer_type sgd only, not "
                                  f"{values['optimizer_type']}")
    if "transformer" in (encoder, decoder):
        size, heads = values["transformer_model_size"], values["transformer_attention_heads"]
        if size % heads:
            raise HyperparameterError("transformer_model_size", f"{size} is not divisible by "
                                      f"transformer_attention_heads={heads}")
    max_epochs = values["max_num_epochs"]
    if max_epochs is not None and values["min_num_epochs"] > max_epochs:
        raise HyperparameterError("min_num_epochs", f"{values['min_num_epochs']} exceeds max_num_epochs="
                                  f"{max_epochs}")
    if values["max_num_batches"] == 0:
        raise HyperparameterError("max_num_batches", "must be -1 (no limit) or at least 1, got 0")
    return values


__all__ = ["ATTENTIONS", "CELLS", "NETWORKS", "SPEC", "validate"]
