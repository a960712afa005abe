"""The model server: one process serving one model artifact under SageMaker's serving contract.

``GET /ping``, ``POST /invocations`` (``text/csv``, ``application/json``, ``application/jsonlines``,
``application/x-recordio-protobuf``, ``text/libsvm``; ``Accept`` picks JSON, JSON Lines, CSV or
recordIO-protobuf), plus ``GET /metadata`` (the model's outputs) and ``GET /execution-parameters``.
Run it with ``python -m algorithms.serving --model PATH``. This package stays light to import: the
entry point caps BLAS threads before numpy loads.
"""
