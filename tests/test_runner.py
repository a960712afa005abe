"""The training runner on local[2]: barrier dispatch, collectives, job records, user code, faults, stop."""

import json
import os
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from pyspark import cloudpickle
from pyspark.ml.linalg import Vectors
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler

import spark_ml
from algorithms.batch import Batch
from algorithms.builtin import load_model
from algorithms.channel import Shard
from spark_ml import jobs
from spark_ml.runner import SCRIPT, ScriptPlan, TrainingJobFailed, TrainingJobStopped, TrainingRequest, run_training
from spark_ml.runner.capacity import ClusterCapacityError
from spark_ml.runner.plan import PlanError, deal_shards

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # barrier functions below run in workers


@pytest.fixture(scope="module")
def cancer_channel(spark, tmp_path_factory):
    data = load_breast_cancer()
    x = StandardScaler().fit_transform(data.data)
    df = spark.createDataFrame([(Vectors.dense(r), float(t)) for r, t in zip(x, data.target, strict=True)],
                               ["features", "label"]).repartition(4)
    return spark_ml.to_channel(df, str(tmp_path_factory.mktemp("cancer") / "train")), x, data.target


def _source(tmp_path, code: str, name: str = "train.py") -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / name).write_text(textwrap.dedent(code))
    return str(src)


def _script_request(channel, source_dir, entry="train.py", hyperparameters=None, num_workers=2, **kw):
    from spark_ml.estimators.script import archive_source

    return TrainingRequest(algorithm="script", hyperparameters=hyperparameters or {}, channels={"train": channel},
                           num_workers=num_workers, kind=SCRIPT,
                           script=ScriptPlan(entry_point=entry, source_archive=archive_source(source_dir)),
                           progress=False, **kw)


def test_builtin_on_two_workers_completes_and_is_recorded(spark, spark_ml_home, cancer_channel, monkeypatch):
    from spark_ml.runner.rendezvous import MeetingPoint

    handed_in = []
    report = MeetingPoint.report
    monkeypatch.setattr(MeetingPoint, "report", lambda self, body: (handed_in.append(body), report(self, body)))
    channel, x, y = cancer_channel
    hps = {"feature_dim": "30", "num_factors": "4", "predictor_type": "binary_classifier", "epochs": "10",
           "mini_batch_size": "20", "linear_lr": "0.01", "factors_lr": "0.001", "bias_lr": "0.01"}
    result = run_training(spark, TrainingRequest("factorization-machines", hps, {"train": channel}, num_workers=2,
                                                 progress=False))
    job = jobs.get(result.job_name)
    assert job.status == jobs.COMPLETED and job.num_workers == 2 and job.attempts == 1
    assert job.model_location == result.model_location and job.final_metrics == result.metrics
    assert "training" in job.phases and job.ended_at >= job.started_at
    series = jobs.metric_series(result.job_name)
    assert {m["rank"] for m in series} == {0, 1}
    assert {m["epoch"] for m in series if m["name"] == "train:binary_classification_accuracy"} == set(range(10))
    assert any("worker 1/2" in line["line"] for line in jobs.logs(result.job_name))
    # the workers met at the driver's monitor, not through Spark's (one-second) allGather
    assert sum(", met via driver)" in line["line"] for line in jobs.logs(result.job_name)) == 2
    # and handed their results in there (the driver need not wait for Spark to finish the stage)
    assert sorted(b["rank"] for b in handed_in if b["result"]["status"] == "ok") == [0, 1]
    assert {b["result"]["model_location"] for b in handed_in} == {result.model_location, None}
    model = load_model(result.model_location)
    accuracy = (model.predict(Batch(x.astype(np.float32)))["predicted_label"] == y).mean()
    assert accuracy > 0.95


def _collective_probe(batches):
    """Runs in each barrier task: every collective against numpy, arrays from 1 element to 64 MiB."""
    import pyarrow as pa
    from pyspark import BarrierTaskContext

    from spark_ml.runner.barrier import BarrierCollectives

    for _ in batches:
        pass
    ctx = BarrierTaskContext.get()
    coll = BarrierCollectives(ctx)
    checks = []
    for n in (1, 1000, 256 << 10, 4 << 20, 16 << 20):  # float32 elements: up to 64 MiB
        mine = np.random.default_rng(coll.rank * 1000 + n).standard_normal(n).astype(np.float32)
        expected = sum(np.random.default_rng(r * 1000 + n).standard_normal(n).astype(np.float32)
                       for r in range(coll.world_size))
        total = coll.allreduce(mine)
        checks.append(("allreduce", n, bool(np.array_equal(total, expected.astype(np.float32)))))
    gathered = coll.allgather(np.full(3, coll.rank, np.int64))
    checks.append(("allgather", 3, [g.tolist() for g in gathered] == [[r] * 3 for r in range(coll.world_size)]))
    root_value = coll.broadcast(np.arange(5.0) if coll.rank == 1 else None, root=1)
    checks.append(("broadcast", 5, root_value.tolist() == [0, 1, 2, 3, 4]))
    states = coll.allgather_state({"count": np.array([coll.rank + 1]), "sum": np.ones((2, 2)) * coll.rank})
    checks.append(("state", 2, [int(s["count"][0]) for s in states] == [1, 2]))
    coll.finish()
    yield pa.RecordBatch.from_pylist([{"rank": coll.rank, "checks": json.dumps(checks)}])


def test_barrier_collectives_equal_numpy(spark):
    rows = (spark.range(0, 2, 1, numPartitions=2)
            .mapInArrow(_collective_probe, "rank long, checks string", barrier=True).collect())
    assert sorted(r.rank for r in rows) == [0, 1]
    for row in rows:
        for op, n, ok in json.loads(row.checks):
            assert ok, f"{op} of {n} elements differs from numpy on worker {row.rank}"


def _torch_probe(batches):
    import pyarrow as pa
    import torch
    from pyspark import BarrierTaskContext

    from algorithms.training.distributed import init_torch_process_group
    from spark_ml.runner.barrier import BarrierCollectives

    for _ in batches:
        pass
    ctx = BarrierTaskContext.get()
    coll = BarrierCollectives(ctx)
    dist = init_torch_process_group(coll, "127.0.0.1")
    t = torch.full((4,), float(coll.rank + 1))
    dist.all_reduce(t)
    backend = dist.get_backend()
    dist.destroy_process_group()
    coll.finish()
    yield pa.RecordBatch.from_pylist([{"rank": coll.rank, "sum": float(t[0]), "backend": backend}])


def test_torch_distributed_bootstraps_through_the_barrier(spark):
    rows = spark.range(0, 2, 1, numPartitions=2).mapInArrow(_torch_probe, "rank long, sum double, backend string",
                                                              barrier=True).collect()
    assert sorted((r.rank, r.sum, r.backend) for r in rows) == [(0, 3.0, "gloo"), (1, 3.0, "gloo")]


def _xgboost_probe(batches):
    import pyarrow as pa
    import xgboost as xgb
    from pyspark import BarrierTaskContext
    from sklearn.datasets import load_diabetes

    from algorithms.training.distributed import xgboost_communicator
    from spark_ml.runner.barrier import BarrierCollectives

    for _ in batches:
        pass
    ctx = BarrierTaskContext.get()
    coll = BarrierCollectives(ctx)
    x, y = load_diabetes(return_X_y=True)
    half = slice(0, 221) if coll.rank == 0 else slice(221, None)
    with xgboost_communicator(coll, "127.0.0.1"):
        booster = xgb.train({"max_depth": 3, "eta": 0.3, "tree_method": "hist", "seed": 0},
                            xgb.DMatrix(x[half], y[half]), num_boost_round=10)
    coll.finish()
    yield pa.RecordBatch.from_pylist([{"rank": coll.rank, "model": booster.save_raw("json").decode()}])


def test_xgboost_collective_bootstraps_through_the_barrier(spark):
    rows = spark.range(0, 2, 1, numPartitions=2).mapInArrow(_xgboost_probe, "rank long, model string",
                                                              barrier=True).collect()
    a, b = (json.loads(r.model) for r in sorted(rows, key=lambda r: r.rank))
    # Workers that really trained together hold the same trees, built from both halves of the data.
    assert a["learner"]["gradient_booster"] == b["learner"]["gradient_booster"]


def test_script_mode_sees_sagemaker_variables_and_its_model_lands(spark, spark_ml_home, cancer_channel, tmp_path):
    channel, _, _ = cancer_channel
    src = _source(tmp_path, """
        import json, os, sys
        env = {k: v for k, v in os.environ.items() if k.startswith(("SM_", "MASTER_", "RANK", "WORLD_SIZE"))}
        env["argv"] = sys.argv[1:]
        env["train_files"] = sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))
        with open(os.path.join(os.environ["SM_MODEL_DIR"], f"env-{os.environ['SM_CURRENT_HOST']}.json"), "w") as f:
            json.dump(env, f)
        print("loss=0.25")
    """)
    request = _script_request(channel, src, hyperparameters={"epochs": "3", "lr": "0.1"})
    request.script.metric_definitions = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}]
    result = run_training(spark, request)
    assert result.metrics == {"train:loss": 0.25}
    files = sorted(os.listdir(result.model_location))
    assert files == ["env-algo-1.json", "manifest.json"]  # rank 0's model folder is the artifact
    with open(os.path.join(result.model_location, "env-algo-1.json")) as f:
        env = json.load(f)
    assert json.loads(env["SM_HOSTS"]) == ["algo-1", "algo-2"] and env["SM_CURRENT_HOST"] == "algo-1"
    assert json.loads(env["SM_CHANNELS"]) == ["train"]
    assert json.loads(env["SM_HPS"]) == {"epochs": 3, "lr": 0.1}
    assert env["SM_HP_EPOCHS"] == "3" and env["SM_HP_LR"] == "0.1"
    assert env["argv"] == ["--epochs", "3", "--lr", "0.1"]
    assert env["SM_NUM_GPUS"] == "0" and int(env["SM_NUM_CPUS"]) >= 1
    assert env["RANK"] == "0" and env["WORLD_SIZE"] == "2" and env["MASTER_ADDR"]
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["channel_input_dirs"]["train"] == env["SM_CHANNEL_TRAIN"]
    assert training_env["job_name"] == result.job_name
    all_shards = sorted(s.path for s in channel.shards())
    assert set(env["train_files"]) < set(all_shards) and len(env["train_files"]) == 2  # ShardedByKey: 2 of 4


def test_torch_script_trains_with_distributed_data_parallel(spark, spark_ml_home, cancer_channel, tmp_path):
    channel, _, _ = cancer_channel
    src = _source(tmp_path, """
        import os, torch, torch.distributed as dist
        dist.init_process_group("gloo")  # MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE from the runner
        t = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(t)
        if dist.get_rank() == 0:
            torch.save({"sum": t}, os.path.join(os.environ["SM_MODEL_DIR"], "weights.pt"))
        dist.destroy_process_group()
    """)
    result = run_training(spark, _script_request(channel, src))
    import torch

    weights = torch.load(os.path.join(result.model_location, "weights.pt"), weights_only=True)
    assert float(weights["sum"][0]) == 3.0


def test_failing_worker_fails_the_job_with_its_reason(spark, spark_ml_home, cancer_channel, tmp_path):
    channel, _, _ = cancer_channel
    src = _source(tmp_path, """
        import os, sys
        with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "..", "..", "pid"), "w") as f:
            f.write(str(os.getpid()))
        if os.environ["SM_CURRENT_HOST"] == "algo-2":
            print("about to fail", file=sys.stderr)
            raise SystemExit("bad learning rate: -1")
    """)
    with pytest.raises(TrainingJobFailed, match="(?s)worker 1: .*bad learning rate: -1") as info:
        run_training(spark, _script_request(channel, src))
    job = jobs.get(info.value.job_name)
    assert job.status == jobs.FAILED and job.failure_reason.startswith("worker 1:")
    assert "bad learning rate" in job.failure_reason
    assert job.model_location is None
    assert not os.path.exists(os.path.join(str(spark_ml_home), "models", info.value.job_name))


def test_builtin_bad_hyperparameter_names_rank_and_range(spark, spark_ml_home, cancer_channel):
    channel, _, _ = cancer_channel
    hps = {"feature_dim": "30", "num_factors": "0", "predictor_type": "binary_classifier"}
    with pytest.raises(TrainingJobFailed, match=r"worker [01]: HyperparameterError: hyperparameter num_factors"):
        run_training(spark, TrainingRequest("factorization-machines", hps, {"train": channel}, num_workers=2,
                                            progress=False))


def test_executable_follows_the_container_contract(spark, spark_ml_home, cancer_channel, tmp_path):
    channel, _, _ = cancer_channel
    src = _source(tmp_path, """
        import json, os, sys
        base = sys.argv[1]
        config = {n.split(".")[0]: json.load(open(os.path.join(base, "input", "config", n)))
                  for n in ("hyperparameters.json", "resourceconfig.json", "inputdataconfig.json")}
        data = sorted(os.listdir(os.path.join(base, "input", "data", "train")))
        if config["hyperparameters"].get("fail") == "yes":
            with open(os.path.join(base, "output", "failure"), "w") as f:
                f.write("the executable explains: no convergence")
            sys.exit(3)
        with open(os.path.join(base, "model", "seen.json"), "w") as f:
            json.dump({"config": config, "data": data}, f)
    """, name="algo.py")
    from spark_ml.estimators.script import archive_source
    from spark_ml.runner import EXECUTABLE

    def request(hps):
        return TrainingRequest(algorithm="my-algo", hyperparameters=hps, channels={"train": channel}, num_workers=2,
                               kind=EXECUTABLE, progress=False,
                               script=ScriptPlan(command=[sys.executable, "{code_dir}/algo.py", "{base_dir}"],
                                                 source_archive=archive_source(src)))

    result = run_training(spark, request({"depth": "3"}))
    with open(os.path.join(result.model_location, "seen.json")) as f:
        seen = json.load(f)
    assert seen["config"]["hyperparameters"] == {"depth": "3"}
    assert seen["config"]["resourceconfig"]["hosts"] == ["algo-1", "algo-2"]
    assert seen["config"]["inputdataconfig"]["train"]["S3DistributionType"] == "ShardedByS3Key"
    assert len(seen["data"]) == 2
    with pytest.raises(TrainingJobFailed, match="exited with status 3: the executable explains: no convergence"):
        run_training(spark, request({"fail": "yes"}))


def test_stop_ends_the_job_within_seconds_and_leaves_nothing_running(spark, spark_ml_home, cancer_channel,
                                                                      tmp_path):
    channel, _, _ = cancer_channel
    pids = tmp_path / "pids"
    pids.mkdir()
    src = _source(tmp_path, f"""
        import os, time
        open(os.path.join({str(pids)!r}, str(os.getpid())), "w").close()
        print("training", flush=True)
        time.sleep(600)
    """)
    request = _script_request(channel, src, job_name="stop-me")
    errors = []

    def run():
        try:
            run_training(spark, request)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    while len(os.listdir(pids)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert len(os.listdir(pids)) == 2, "the scripts never started"
    asked = time.time()
    assert jobs.request_stop("stop-me").status == jobs.STOPPING
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert time.time() - asked < 30
    assert isinstance(errors[0], TrainingJobStopped)
    assert jobs.get("stop-me").status == jobs.STOPPED
    deadline = time.time() + 30
    alive = [int(p) for p in os.listdir(pids)]
    while alive and time.time() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.2)
    assert alive == [], f"script processes {alive} outlived the stopped job"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_capacity_is_checked_before_launch(spark, spark_ml_home, cancer_channel):
    channel, _, _ = cancer_channel
    started = time.time()
    with pytest.raises(ClusterCapacityError, match="numWorkers=3 needs 3 tasks running at once, but local.2. runs "
                                                   "at most 2"):
        run_training(spark, TrainingRequest("factorization-machines", {}, {"train": channel}, num_workers=3))
    with pytest.raises(ClusterCapacityError, match="needs 2 GPUs, but this machine has 0"):
        run_training(spark, TrainingRequest("factorization-machines", {}, {"train": channel}, num_workers=2,
                                            gpus_per_worker=1))
    assert time.time() - started < 5
    assert jobs.list_jobs() == []  # nothing was started, nothing recorded


def test_sharded_channel_needs_a_shard_per_worker(spark, spark_ml_home, tmp_path):
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0]), 1.0)] * 10, ["features", "label"]).coalesce(1)
    channel = spark_ml.to_channel(df, str(tmp_path / "one"))
    with pytest.raises(PlanError, match="channel train has 1 shard.s. but numWorkers=2"):
        run_training(spark, TrainingRequest("factorization-machines", {}, {"train": channel}, num_workers=2))


def test_deal_shards_balances_records():
    shards = [Shard(f"p{i}", n) for i, n in enumerate([100, 90, 50, 40, 30, 10, 10])]
    groups = deal_shards(shards, 3)
    loads = [sum(s.records for s in g) for g in groups]
    assert max(loads) <= 4 / 3 * sum(loads) / 3  # largest-first greedy stays within 4/3 of the ideal
    assert sorted(s.path for g in groups for s in g) == sorted(s.path for s in shards)
    even = deal_shards([Shard(f"e{i}", 1000) for i in range(8)], 4)
    assert [len(g) for g in even] == [2, 2, 2, 2]
    by_bytes = deal_shards([Shard("a", None, 10), Shard("b", None, 1), Shard("c", None, 9)], 2)
    assert [[s.path for s in g] for g in by_bytes] == [["a"], ["b", "c"]]


def test_spark_failures_are_recorded_with_sparks_reason():
    from spark_ml.runner.dispatch import _spark_reason

    text = ("An error occurred while calling o146.collectToPython.\n"
            ": org.apache.spark.SparkException: Job aborted due to stage failure: Stage 7 has failed the maximum "
            "allowable number of times: 4.\n\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages")
    assert _spark_reason(RuntimeError(text)).startswith("org.apache.spark.SparkException: Job aborted due to stage "
                                                        "failure: Stage 7 has failed the maximum")
    assert _spark_reason(RuntimeError("plain trouble")) == "plain trouble"
