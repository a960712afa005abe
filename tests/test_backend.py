"""The one array backend: numpy and torch compute the same, and one rule chooses between them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms.backend import ENV, BackendUnavailable, NumpyBackend, TorchBackend, select_backend
from algorithms.builtin.factorization_machines.kernels import NumpyFMOps, TorchFMOps, fm_ops
from algorithms.builtin.linear_learner.kernels import NumpyLinearOps, TorchLinearOps, linear_ops
from algorithms.training import TrainingEnv

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")


@needs_torch
def test_torch_backend_operations_agree_with_numpy():
    torch_be, numpy_be = TorchBackend("cpu"), NumpyBackend()
    rng = np.random.default_rng(3)
    dense = rng.standard_normal((40, 7))
    sparse = sp.random(40, 7, density=0.3, format="csr", random_state=4)
    other = rng.standard_normal((7, 5))
    rows = rng.standard_normal((40, 5))
    segments = rng.integers(0, 6, size=40)
    for x in (dense, sparse):
        a, b = torch_be.asarray(x), numpy_be.asarray(x)
        assert torch_be.is_sparse(a) == numpy_be.is_sparse(b) == sp.issparse(x)
        pairs = [
            (torch_be.matmul(a, torch_be.asarray(other)), numpy_be.matmul(b, other)),
            (torch_be.t_matmul(a, torch_be.asarray(rows)), numpy_be.t_matmul(b, rows)),
            (torch_be.gram(a), numpy_be.gram(b)),
            (torch_be.row_sq_norms(a), numpy_be.row_sq_norms(b)),
            (torch_be.col_sums(a), numpy_be.col_sums(b)),
            (torch_be.segment_sum(a, torch_be.asarray(segments), 6), numpy_be.segment_sum(b, segments, 6)),
            (torch_be.dense(a), numpy_be.dense(b)),
        ]
        for got, want in pairs:
            np.testing.assert_allclose(torch_be.to_numpy(got), want, rtol=1e-12, atol=1e-12)
    idx, low = torch_be.argmin_rows(torch_be.asarray(dense))
    np.testing.assert_array_equal(torch_be.to_numpy(idx), dense.argmin(axis=1))
    np.testing.assert_allclose(torch_be.to_numpy(low), dense.min(axis=1))
    weights = rng.random(40)
    np.testing.assert_allclose(
        torch_be.to_numpy(torch_be.bincount(torch_be.asarray(segments), torch_be.asarray(weights), 6)),
        numpy_be.bincount(segments, weights, 6))
    elementwise = ["exp", "abs", "sign", "relu", "sigmoid", "softplus"]
    for name in elementwise:
        np.testing.assert_allclose(torch_be.to_numpy(getattr(torch_be, name)(torch_be.asarray(dense))),
                                   getattr(numpy_be, name)(dense), rtol=1e-12, err_msg=name)
    for name, args in (("clip", (-0.5, 0.5)), ("take_columns", (np.array([4, 0]),))):
        t_args = [torch_be.as_index(a) if isinstance(a, np.ndarray) else a for a in args]
        np.testing.assert_allclose(torch_be.to_numpy(getattr(torch_be, name)(torch_be.asarray(dense), *t_args)),
                                   getattr(numpy_be, name)(dense, *args), err_msg=name)
    for be in (torch_be, numpy_be):
        assert be.to_numpy(be.zeros((2, 3))).dtype == np.float32
        assert be.to_numpy(be.full(4, 2.5, np.float64)).tolist() == [2.5] * 4
        assert be.to_numpy(be.asarray(dense)).dtype == np.float64  # asarray keeps the input's dtype


def test_the_rule_numpy_on_cpu_workers_and_the_override(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert select_backend("cpu").name == "numpy"
    monkeypatch.setenv(ENV, "auto")
    assert select_backend("cpu").name == "numpy"
    monkeypatch.setenv(ENV, "numpy")
    assert select_backend("cuda").name == "numpy"  # the explicit way to compute on a GPU worker's CPU
    monkeypatch.setenv(ENV, "jax")
    with pytest.raises(ValueError, match=f"{ENV} must be one of numpy, torch, torch:cpu, torch:cuda or auto"):
        select_backend("cpu")


@needs_torch
def test_override_values_choose_torch_on_the_device_they_say(monkeypatch):
    for value, name, device in (("numpy", "numpy", "cpu"), ("torch", "torch", "cpu"), ("torch:cpu", "torch", "cpu"),
                                (" Torch:CPU ", "torch", "cpu")):
        monkeypatch.setenv(ENV, value)
        backend = select_backend("cpu")
        assert (backend.name, backend.device) == (name, device), value


@needs_torch
def test_a_gpu_worker_never_falls_back_to_the_cpu_silently(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the failure below needs a torch without it")
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(BackendUnavailable, match="this worker was given a GPU but torch sees no CUDA device"):
        select_backend("cuda")
    monkeypatch.setenv(ENV, "torch:cuda")
    with pytest.raises(BackendUnavailable, match=f"{ENV}=torch:cuda but torch sees no CUDA device"):
        select_backend("cpu")


def test_without_torch_every_builtin_imports_and_gpu_workers_fail_clearly():
    """A worker without torch installed: the built-ins import and train on numpy; a GPU worker says why it
    cannot run, and how to choose the CPU."""
    # A finder that refuses torch, rather than sys.modules['torch'] = None, which scipy's array-API probe trips on.
    code = ("import sys\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('No module named torch')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from algorithms import builtin\n"
            "from algorithms.backend import select_backend\n"
            "print(builtin.names())\n"
            "assert select_backend('cpu').name == 'numpy'\n"
            "for device, choice in (('cuda', None), ('cpu', 'torch')):\n"
            "    try:\n"
            "        select_backend(device, choice)\n"
            "    except RuntimeError as e:\n"
            "        print(e)\n"
            "assert 'torch' not in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k != ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    lines = out.stdout.splitlines()
    from algorithms import builtin

    shipped = [name for name in builtin.names() if not name.startswith("test-")]  # other tests register toys
    assert lines[0] == str(shipped)  # every built-in, the neural ones too, imports without torch
    assert lines[1].startswith("this worker was given a GPU: the array backend needs torch but torch is not "
                               "installed (pip install 'spark-ml[deep]')")
    assert f"set {ENV}=numpy" in lines[1]
    assert lines[2].startswith(f"{ENV}=torch: the array backend needs torch but torch is not installed")


def test_the_worker_chooses_its_backend_once(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    env = TrainingEnv({}, {}, str(tmp_path))
    assert env.backend is env.backend and env.backend.name == "numpy"
    assert isinstance(linear_ops(env.backend), NumpyLinearOps) and isinstance(fm_ops(env.backend), NumpyFMOps)
    assert linear_ops(env.backend, np.float64).dtype == np.float64


@needs_torch
def test_kernels_follow_the_chosen_backend(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "torch")
    env = TrainingEnv({}, {}, str(tmp_path))
    ll, fm = linear_ops(env.backend), fm_ops(env.backend)
    assert isinstance(ll, TorchLinearOps) and isinstance(fm, TorchFMOps)
    assert ll.device == fm.device == env.backend.device == "cpu"
    # Linear Learner converts everything to its working float type
    assert ll.asarray(np.ones(3, np.float64)).dtype == ll.torch.float32
    assert ll.asarray(sp.csr_matrix(np.eye(3))).is_sparse
