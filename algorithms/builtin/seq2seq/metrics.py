"""Validation metrics of Seq2Seq, computed in parts on each worker and combined exactly.

Perplexity and accuracy are per target token (``</s>`` included, padding excluded): sums of negative
log-likelihoods, hits and tokens are all-reduced. BLEU is sacrebleu's corpus BLEU on the decoded tokens
(``tokenize="none"``, floor smoothing 0.01, on the 0–1 scale: Sockeye's ``raw_corpus_bleu`` / 100, what
SageMaker reports): each worker extracts the n-gram statistics of its sentences and the summed
statistics give the BLEU of the whole sample, the same as one process scoring all of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ORDER = 4


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """``[sys_len, ref_len, correct_1..4, total_1..4]`` of a part of a corpus."""
    from sacrebleu.metrics import BLEU

    if not hypotheses:
        return np.zeros(2 + 2 * ORDER, np.float64)
    score = BLEU(tokenize="none", smooth_method="floor", smooth_value=0.01).corpus_score(list(hypotheses),
                                                                                        [list(references)])
    return np.array([score.sys_len, score.ref_len, *score.counts, *score.totals], np.float64)


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU in [0, 1] from summed :func:`bleu_statistics`."""
    from sacrebleu.metrics import BLEU

    sys_len, ref_len = int(stats[0]), int(stats[1])
    if sys_len == 0:
        return 0.0
    correct = [int(v) for v in stats[2:2 + ORDER]]
    total = [int(v) for v in stats[2 + ORDER:]]
    score = BLEU.compute_bleu(correct, total, sys_len, ref_len, smooth_method="floor", smooth_value=0.01)
    return float(score.score) / 100.0


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    return bleu_from_statistics(bleu_statistics(hypotheses, references))
