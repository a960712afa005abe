"""How a worker reports log lines, metrics and progress to whoever runs it."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("algorithms.training")


class Reporter:
    """Base reporter: keeps final metrics; subclasses forward everything (the Spark runner streams it)."""

    def __init__(self) -> None:
        self.final_metrics: dict[str, float] = {}

    def log(self, message: str) -> None:
        log.info(message)

    def metric(self, name: str, value: float, epoch: int | None = None, step: int | None = None) -> None:
        """A metric in SageMaker's naming (``train:objective_loss``, ``validation:rmse``, ``test:msd``)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        self.final_metrics[name] = float(value)

    def progress(self, records: int, epoch: int | None = None, total_records: int | None = None,
                 total_epochs: int | None = None) -> None:
        """Records processed so far in this epoch (by this worker)."""

    def failed(self, reason: str) -> None:
        """This worker failed (whoever runs it learns first of this failure, not of its peers' consequences)."""


def failure_reason(exc: BaseException) -> str:
    """The one line that says why a worker failed."""
    if getattr(exc, "full_reason", False):
        return str(exc)[:2000]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextmanager
def failures_reported_first(reporter: Reporter) -> Iterator[None]:
    """Report a failure inside a framework's collective (XGBoost's, torch.distributed) before leaving it.

    Leaving the collective breaks it for the other workers, which then fail too, with errors that only say a
    peer went away; the job's reason must be this worker's, so it is reported while the others still wait.
    """
    try:
        yield
    except BaseException as exc:
        reporter.failed(failure_reason(exc))
        raise


class LogReporter(Reporter):
    """Writes metrics as SageMaker-style ``#quality_metric`` log lines."""

    def __init__(self, host: str = "algo-1") -> None:
        super().__init__()
        self.host = host

    def metric(self, name: str, value: float, epoch: int | None = None, step: int | None = None) -> None:
        super().metric(name, value, epoch, step)
        where = f"epoch={epoch}, " if epoch is not None else ""
        channel, _, metric = name.partition(":")
        self.log(f"#quality_metric: host={self.host}, {where}{channel} {metric} <score>={value}")
