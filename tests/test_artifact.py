"""Model artifacts: manifest written last, clear failures without one, tensors without pickle."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from algorithms import artifact
from algorithms.artifact import ArtifactError, ArtifactManifest


def model_dir(tmp_path, arrays=None) -> str:
    d = tmp_path / "local-model"
    d.mkdir()
    artifact.save_arrays(str(d), arrays or {"centroids": np.arange(12.0).reshape(3, 4), "k": np.array(3)})
    (d / "booster.json").write_text('{"learner": {}}')
    return str(d)


def manifest() -> ArtifactManifest:
    return ArtifactManifest(
        "kmeans", {"k": "3", "feature_dim": "4"}, 4, metrics={"train:msd": 0.5}, training_job="job-1"
    )


def test_write_then_read_round_trip(tmp_path):
    src = model_dir(tmp_path)
    dest = str(tmp_path / "store" / "model-1")
    assert artifact.write_artifact(src, manifest(), dest) == dest
    assert sorted(os.listdir(dest)) == ["booster.json", "manifest.json", "model.npz"]
    got = artifact.read_manifest(dest)
    want = manifest()
    assert got.algorithm == "kmeans" and got.hyperparameters == want.hyperparameters and got.feature_dim == 4
    assert got.files == ["booster.json", "model.npz"] and got.metrics == {"train:msd": 0.5}
    assert got.training_job == "job-1" and got.format_version == artifact.FORMAT_VERSION
    local, m = artifact.fetch(dest)
    assert local == dest and m.files == got.files
    arrays = artifact.load_arrays(local)
    np.testing.assert_array_equal(arrays["centroids"], np.arange(12.0).reshape(3, 4))
    assert arrays["k"] == 3


def test_manifest_is_written_last(tmp_path, monkeypatch):
    src = model_dir(tmp_path)
    dest = tmp_path / "dest"
    seen = {}
    real = artifact.fsutil.write_bytes_atomic

    def spy(fs, path, data):
        seen["files_before_manifest"] = sorted(os.listdir(dest))
        real(fs, path, data)

    monkeypatch.setattr(artifact.fsutil, "write_bytes_atomic", spy)
    artifact.write_artifact(src, manifest(), str(dest))
    assert seen["files_before_manifest"] == ["booster.json", "model.npz"]


def test_a_failed_copy_leaves_no_model(tmp_path, monkeypatch):
    src = model_dir(tmp_path)
    dest = str(tmp_path / "dest")
    calls = []

    def failing_copy(f_in, f_out, length=0):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        f_out.write(f_in.read())

    monkeypatch.setattr(artifact.shutil, "copyfileobj", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        artifact.write_artifact(src, manifest(), dest)
    with pytest.raises(
        ArtifactError,
        match=r"dest is not a model artifact \(no manifest\.json; the job that wrote "
        r"it may have failed\)",
    ):
        artifact.read_manifest(dest)


def test_reading_a_folder_without_manifest_fails_clearly(tmp_path):
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "w.npy", np.ones(3))
    with pytest.raises(ArtifactError, match="is not a model artifact"):
        artifact.read_manifest(str(tmp_path / "m"))
    with pytest.raises(ArtifactError, match="is not a model artifact"):
        artifact.fetch(str(tmp_path / "m"))


def test_existing_model_is_refused_unless_it_is_the_same_jobs_earlier_attempt(tmp_path):
    src = model_dir(tmp_path)
    dest = str(tmp_path / "dest")
    artifact.write_artifact(src, manifest(), dest)
    other = ArtifactManifest("kmeans", {"k": "3"}, 4, training_job="job-2")
    with pytest.raises(ArtifactError, match="already holds a model; choose another location"):
        artifact.write_artifact(src, other, dest)
    retried = manifest()
    retried.metrics = {"train:msd": 0.25}
    artifact.write_artifact(src, retried, dest)
    assert artifact.read_manifest(dest).metrics == {"train:msd": 0.25}


def test_nested_folders_are_copied_and_fetched(tmp_path):
    """Script-mode models may write sub-folders (e.g. a tokenizer/ next to weights)."""
    src = model_dir(tmp_path)
    os.makedirs(os.path.join(src, "sub", "deeper"))
    with open(os.path.join(src, "sub", "deeper", "vocab.txt"), "w") as f:
        f.write("a\nb\n")
    dest = str(tmp_path / "dest")
    written = artifact.write_artifact(src, manifest(), dest)
    assert "sub/deeper/vocab.txt" in artifact.read_manifest(written).files
    local, _ = artifact.fetch(dest)
    with open(os.path.join(local, "sub", "deeper", "vocab.txt")) as f:
        assert f.read() == "a\nb\n"


@pytest.mark.parametrize(
    "text,problem",
    [
        ("{not json", "not a model manifest"),
        ('["a"]', "not a model manifest"),
        ('{"algorithm": "pca"}', "not a model manifest"),
        (
            '{"algorithm": "pca", "hyperparameters": {}, "feature_dim": 3, "format_version": 9}',
            "format version 9 is newer than this library reads",
        ),
    ],
)
def test_bad_manifests(text, problem):
    with pytest.raises(ArtifactError, match=rf"^/m/manifest\.json: {problem}"):
        ArtifactManifest.from_json(text, "/m/manifest.json")


def test_manifest_ignores_unknown_keys_from_newer_minor_writers():
    doc = json.loads(manifest().to_json())
    doc["something_new"] = 1
    got = ArtifactManifest.from_json(json.dumps(doc), "m")
    assert got.algorithm == "kmeans" and not hasattr(got, "something_new")


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="array 'names' has dtype object"):
        artifact.save_arrays(str(tmp_path), {"names": np.array(["a", None], dtype=object)})


def test_pickled_arrays_are_never_loaded(tmp_path):
    np.savez(tmp_path / "model.npz", evil=np.array([{"a": 1}], dtype=object))  # numpy pickles object arrays
    with pytest.raises(ValueError, match="allow_pickle=False"):
        artifact.load_arrays(str(tmp_path))


def test_any_array_name_survives(tmp_path):
    arrays = {"file": np.ones(2), "allow_pickle": np.zeros(3), "args": np.arange(4), "x/y": np.eye(2)}
    name = artifact.save_arrays(str(tmp_path), arrays, name="weights.bin")
    assert name == "weights.bin" and os.path.exists(tmp_path / "weights.bin")
    got = artifact.load_arrays(str(tmp_path), "weights.bin")
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
    with np.load(io.BytesIO(artifact.npz_bytes(arrays)), allow_pickle=False) as z:
        assert set(z.files) == set(arrays)


def test_fetching_a_remote_artifact_copies_a_complete_folder(tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    src = model_dir(tmp_path)
    dest = str(tmp_path / "store" / "model-1")
    artifact.write_artifact(src, manifest(), dest)
    remote = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())  # not a LocalFileSystem: fetched as remote
    monkeypatch.setattr(artifact.fsutil, "resolve", lambda location, filesystem=None: (remote, location))
    into = str(tmp_path / "copy")
    local, got = artifact.fetch(dest, into=into)
    assert local == into
    assert sorted(os.listdir(into)) == ["booster.json", "manifest.json", "model.npz"]
    monkeypatch.undo()
    assert artifact.read_manifest(into).files == got.files
