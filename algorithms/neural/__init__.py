"""What the neural built-ins (Image Classification, Seq2Seq, NTM) share: the training loop
(:mod:`.trainer`: DDP, AMP, checkpoints, early stopping), optimizers and schedules by SageMaker's names
(:mod:`.optim`), checkpoint storage (:mod:`.checkpoints`) and background batch production (:mod:`.prefetch`).
Each algorithm keeps only its network, data decoding and metrics. Needs torch (``pip install 'spark-ml[deep]'``);
importing this package does not import torch.
"""
