"""The shared trainer of the neural built-ins, on a small network whose answers are known."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from algorithms.neural.checkpoints import KEEP, CheckpointStore  # noqa: E402
from algorithms.neural.optim import InverseTime, ReduceOnPlateau, StepsAtEpochs, make_optimizer  # noqa: E402
from algorithms.neural.prefetch import prefetch  # noqa: E402
from algorithms.neural.trainer import Trainer, TrainSettings  # noqa: E402
from algorithms.training import Reporter, TrainingEnv  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _file_collectives import FileCollectives  # noqa: E402


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated classes in 8 dimensions: a small network reaches ~100% accuracy."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0, 3, size=(3, 8))
    y = rng.integers(0, 3, size=n)
    return (centers[y] + rng.normal(0, 1, size=(n, 8))).astype(np.float32), y


class Blobs:
    """A Task: an MLP over this worker's rows, accuracy on a validation set split among the workers."""

    def __init__(self, env: TrainingEnv, x, y, x_val, y_val, batch: int = 32, fail_at_epoch: int | None = None,
                 scripted: list[float] | None = None):
        self.env, self.x, self.y, self.batch = env, x, y, batch
        self.x_val, self.y_val = x_val, y_val
        self.fail_at_epoch, self.scripted = fail_at_epoch, scripted
        self.evaluations: list[dict] = []  # (metrics, weights) of every evaluation

    def network(self):
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def optimizer(self, parameters):
        return make_optimizer("sgd", parameters, lr=0.05, momentum=0.9)

    def schedule(self, optimizer):
        return None

    def batches(self, epoch):
        if epoch == self.fail_at_epoch:
            raise RuntimeError("the executor was lost")
        order = np.random.default_rng([epoch, self.env.rank]).permutation(len(self.x))
        for start in range(0, len(order), self.batch):
            rows = order[start:start + self.batch]
            yield len(rows), (torch.from_numpy(self.x[rows]), torch.from_numpy(self.y[rows]))

    def loss(self, network, batch, device):
        x, y = batch
        logits = network(x.to(device))
        loss = torch.nn.functional.cross_entropy(logits, y.to(device))
        hits = float((logits.argmax(1) == y.to(device)).sum())
        return loss, {"accuracy": (hits, len(y)), "loss": (float(loss.detach()) * len(y), len(y))}

    def evaluate(self, network, device):
        c = self.env.collectives
        part = slice(c.rank, None, c.world_size)
        logits = network(torch.from_numpy(self.x_val[part]).to(device))
        hits = float((logits.argmax(1).cpu().numpy() == self.y_val[part]).sum())
        hits, count = c.allreduce(np.array([hits, len(self.y_val[part])], dtype=np.float64))
        value = hits / count
        if self.scripted is not None:
            value = self.scripted[len(self.evaluations)]
        state = {k: v.clone() for k, v in network.state_dict().items()}
        self.evaluations.append({"validation:accuracy": value, "weights": state})
        return {"validation:accuracy": value}


class Recorder(Reporter):
    def __init__(self):
        super().__init__()
        self.metrics: list[tuple[str, float, int | None]] = []
        self.logs: list[str] = []

    def metric(self, name, value, epoch=None, step=None):
        super().metric(name, value, epoch, step)
        self.metrics.append((name, value, epoch))

    def log(self, message):
        self.logs.append(message)


def env_for(tmp_path, rank=0, world=1, collectives=None, checkpoint=False, reporter=None) -> TrainingEnv:
    kwargs = {} if collectives is None else {"collectives": collectives}
    return TrainingEnv({}, {}, str(tmp_path / f"model-{rank}"), rank=rank,
                       hosts=[f"algo-{i + 1}" for i in range(world)], reporter=reporter or Recorder(),
                       checkpoint_dir=str(tmp_path / "checkpoints") if checkpoint else None, **kwargs)


def accuracy(network, x, y) -> float:
    with torch.no_grad():
        return float((network(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@pytest.fixture(scope="module")
def data():
    x, y = blobs(600, 1)
    x_val, y_val = blobs(300, 2)
    return x, y, x_val, y_val


def test_trains_and_reports_every_epoch(tmp_path, data):
    x, y, x_val, y_val = data
    env = env_for(tmp_path)
    task = Blobs(env, x, y, x_val, y_val)
    outcome = Trainer(env, TrainSettings(max_epochs=4, objective="validation:accuracy", maximize=True)).fit(task)
    assert accuracy(outcome.network, x_val, y_val) >= 0.97
    assert outcome.epochs == 4 and outcome.steps == 4 * 19  # ceil(600 / 32) updates per epoch
    reported = env.reporter.metrics
    assert [e for n, _, e in reported if n == "validation:accuracy"] == [0, 1, 2, 3]
    assert [e for n, _, e in reported if n == "train:loss"] == [0, 1, 2, 3]
    losses = [v for n, v, _ in reported if n == "train:loss"]
    assert losses[-1] < losses[0]
    best = max(v for n, v, _ in reported if n == "validation:accuracy")
    assert outcome.best["validation:accuracy"] == best == env.reporter.final_metrics["validation:accuracy"] or \
        outcome.best["validation:accuracy"] == best


def test_early_stopping_waits_for_patience_and_min_epochs_and_keeps_the_best_weights(tmp_path, data):
    x, y, x_val, y_val = data
    scripted = [0.50, 0.70, 0.69, 0.70, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9]
    settings = TrainSettings(max_epochs=10, objective="validation:accuracy", maximize=True, patience=2,
                             tolerance=0.01)
    env = env_for(tmp_path)
    task = Blobs(env, x, y, x_val, y_val, scripted=scripted)
    outcome = Trainer(env, settings).fit(task)
    # 0.69 and 0.70 do not beat 0.70 by 1%: two evaluations without improvement stop after epoch 4
    assert outcome.epochs == 4 and len(task.evaluations) == 4
    assert outcome.best["validation:accuracy"] == 0.70
    for name, value in outcome.network.state_dict().items():
        assert torch.equal(value, task.evaluations[1]["weights"][name]), name
    assert any(line.startswith("early stopping: validation:accuracy has not improved") for line in env.reporter.logs)

    env = env_for(tmp_path)
    task = Blobs(env, x, y, x_val, y_val, scripted=scripted)
    outcome = Trainer(env, TrainSettings(**{**settings.__dict__, "min_epochs": 5})).fit(task)
    assert outcome.epochs == 7 and outcome.best["validation:accuracy"] == 0.95  # 0.95 after epoch 5, then 2 bad


def test_evaluations_every_n_steps_and_a_step_limit(tmp_path, data):
    x, y, x_val, y_val = data
    env = env_for(tmp_path)
    task = Blobs(env, x, y, x_val, y_val)
    settings = TrainSettings(max_epochs=5, max_steps=45, evaluate_every_steps=20, objective="validation:accuracy",
                             maximize=True)
    outcome = Trainer(env, settings).fit(task)
    assert outcome.steps == 45 and len(task.evaluations) == 3  # after updates 20 and 40, and the last one
    steps_per_epoch = 19
    assert [e for n, _, e in env.reporter.metrics if n == "validation:accuracy"] == [20 // steps_per_epoch,
                                                                                     40 // steps_per_epoch, 2]


def test_a_rerun_resumes_from_the_last_checkpoint_and_ends_where_an_unbroken_run_ends(tmp_path, data):
    x, y, x_val, y_val = data
    settings = TrainSettings(max_epochs=5, objective="validation:accuracy", maximize=True, keep_best=False)
    torch.set_num_threads(1)
    unbroken = Trainer(env_for(tmp_path / "a"), settings).fit(Blobs(env_for(tmp_path / "a"), x, y, x_val, y_val))

    env = env_for(tmp_path / "b", checkpoint=True)
    with pytest.raises(RuntimeError, match="the executor was lost"):
        Trainer(env, settings).fit(Blobs(env, x, y, x_val, y_val, fail_at_epoch=3))
    store = CheckpointStore(env.checkpoint_dir)
    assert store.latest()["epoch"] == 3 and store.latest()["number"] == 3
    again = env_for(tmp_path / "b", checkpoint=True)
    task = Blobs(again, x, y, x_val, y_val)
    outcome = Trainer(again, settings).fit(task)
    assert outcome.resumed_from["number"] == 3 and len(task.evaluations) == 2  # epochs 3 and 4 only
    assert "resumed from checkpoint 3 at epoch 3 (update 57) of an earlier attempt" in again.reporter.logs
    for name, value in outcome.network.state_dict().items():
        torch.testing.assert_close(value, unbroken.network.state_dict()[name], rtol=0, atol=0)


def _worker(folder: str, rank: int, rows: int, out: str) -> None:
    torch.set_num_threads(1)
    x, y = blobs(rows, 10 + rank)
    x_val, y_val = blobs(300, 2)
    from pathlib import Path

    env = env_for(Path(folder), rank=rank, world=2, collectives=FileCollectives(folder, rank, 2))
    task = Blobs(env, x, y, x_val, y_val)
    outcome = Trainer(env, TrainSettings(max_epochs=3, objective="validation:accuracy", maximize=True)).fit(task)
    flat = torch.cat([p.detach().flatten() for p in outcome.network.parameters()]).numpy()
    np.savez(out, weights=flat, steps=outcome.steps, accuracy=accuracy(outcome.network, x_val, y_val),
             metrics=np.array([v for n, v, _ in env.reporter.metrics if n == "validation:accuracy"]))


def test_two_workers_with_uneven_shards_train_one_model_in_lockstep(tmp_path):
    """Worker 0 holds three times worker 1's rows: both make as many updates as worker 0 needs (worker 1 goes
    round its rows again), and DDP keeps their weights identical."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), rank, rows, str(tmp_path / f"out{rank}.npz")))
             for rank, rows in ((0, 480), (1, 160))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0]
    a, b = (np.load(tmp_path / f"out{r}.npz") for r in (0, 1))
    assert int(a["steps"]) == int(b["steps"]) == 3 * 15  # ceil(480 / 32) updates per epoch
    np.testing.assert_array_equal(a["weights"], b["weights"])
    np.testing.assert_array_equal(a["metrics"], b["metrics"])
    assert float(a["accuracy"]) >= 0.97


def test_checkpoint_store_keeps_the_newest_and_loads_only_tensors(tmp_path):
    store = CheckpointStore(str(tmp_path / "ck"))
    assert store.latest() is None
    for n in range(1, 4):
        store.save({"w": torch.full((2,), float(n)), "loop": {"epoch": n}}, n, {"epoch": n})
    assert store.latest()["number"] == 3
    assert sorted(os.listdir(tmp_path / "ck")) == ["checkpoint-000002.pt", "checkpoint-000003.pt", "latest.json"]
    assert KEEP == 2
    assert store.load(store.latest())["w"].tolist() == [3.0, 3.0]

    from fractions import Fraction  # anything but plain containers, numbers and tensors must not load

    store.save({"w": Fraction(1, 3)}, 4, {"epoch": 4})
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        store.load(store.latest())
    store.clear()
    assert not (tmp_path / "ck").exists()


def test_optimizers_and_schedules_by_sagemaker_names():
    params = [torch.nn.Parameter(torch.zeros(3))]
    kinds = {"sgd": torch.optim.SGD, "nag": torch.optim.SGD, "adam": torch.optim.Adam,
             "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta}
    for name, kind in kinds.items():
        assert isinstance(make_optimizer(name, params, lr=0.1, momentum=0.9), kind), name
    assert make_optimizer("nag", params, lr=0.1, momentum=0.9).defaults["nesterov"]
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        make_optimizer("lbfgs", params, lr=0.1)

    opt = make_optimizer("sgd", params, lr=1.0)
    steps = StepsAtEpochs(opt, [2, 4], factor=0.1)
    rates = []
    for epoch in range(5):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        steps.after_epoch(epoch)
    np.testing.assert_allclose(rates, [1.0, 1.0, 0.1, 0.1, 0.01])

    opt = make_optimizer("sgd", params, lr=1.0)
    inv = InverseTime(opt, period=10, sqrt=True)
    for step in range(1, 31):
        opt.step()
        inv.after_step(step)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)  # 1 / sqrt(1 + 30 / 10)

    opt = make_optimizer("sgd", params, lr=1.0)
    plateau = ReduceOnPlateau(opt, factor=0.5, patience=1)
    for value in (1.0, 0.9, 0.95, 0.95, 0.95):
        plateau.after_evaluation(value)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_prefetch_keeps_order_raises_the_producers_error_and_stops_with_the_consumer():
    assert list(prefetch(range(100), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise ValueError("corrupt record 7")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="corrupt record 7"):
        next(it)

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = prefetch(endless(), depth=2)
    assert [next(it) for _ in range(5)] == list(range(5))
    it.close()
    before = threading.active_count()
    count = len(produced)
    assert len(produced) == count and threading.active_count() <= before
    assert count <= 5 + 2 + 1  # never more than depth ahead


class CountedBlobs(Blobs):
    """The same task, telling its epoch's length ahead (the trainer then skips the per-update agreement)."""

    def num_batches(self, epoch):
        return -(-len(self.x) // self.batch)


def test_a_task_that_counts_its_batches_trains_exactly_as_one_that_does_not(tmp_path, data):
    x, y, x_val, y_val = data
    settings = TrainSettings(max_epochs=3, objective="validation:accuracy", maximize=True, keep_best=False)
    plain = Trainer(env_for(tmp_path / "a"), settings).fit(Blobs(env_for(tmp_path / "a"), x, y, x_val, y_val))
    counted = Trainer(env_for(tmp_path / "b"), settings).fit(CountedBlobs(env_for(tmp_path / "b"), x, y, x_val, y_val))
    assert plain.steps == counted.steps == 3 * 19
    for name, value in counted.network.state_dict().items():
        torch.testing.assert_close(value, plain.network.state_dict()[name], rtol=0, atol=0)
