"""Factorization Machines (SageMaker ``factorization-machines``): :mod:`.algorithm` (the training driver),
:mod:`.model`, :mod:`.params`, :mod:`.trainer` (Adam steps on a batch), :mod:`.kernels` (products on the array
backend), :mod:`.state` (merging workers' models), :mod:`.metrics`."""

from .algorithm import FactorizationMachines
from .model import NAME, FactorizationMachinesModel

__all__ = ["NAME", "FactorizationMachines", "FactorizationMachinesModel"]
