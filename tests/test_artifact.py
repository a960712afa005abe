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
        ('{"algorithm": "pca", "hyperparameters": {}, "feature_dim": 3, "files": "../x"}',
         "not a model manifest: files must be a list of file names"),
        ('{"algorithm": "pca", "hyperparameters": [], "feature_dim": 3}',
         "not a model manifest: hyperparameters must be an object"),
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


# ------------------------------------------------------------------------------------------ hostile artifacts


def _remote(monkeypatch):
    """Make fetch() treat local paths as a remote store (a pyarrow filesystem that is not LocalFileSystem)."""
    import pyarrow.fs as pafs

    remote = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())
    monkeypatch.setattr(artifact.fsutil, "resolve", lambda location, filesystem=None: (remote, location))


def _with_files(dest: str, files: list[str]) -> None:
    """Rewrite an artifact's manifest to list ``files`` (what a crafted manifest says)."""
    path = os.path.join(dest, artifact.MANIFEST)
    with open(path) as f:
        doc = json.load(f)
    doc["files"] = files
    with open(path, "w") as f:
        json.dump(doc, f)


@pytest.mark.parametrize("name", ["../outside.txt", "../../outside.txt", "sub/../../outside.txt", "/etc/hostname",
                                  "", ".", "sub//x", "a\\..\\..\\x", "C:/x"])
def test_fetch_refuses_names_that_leave_the_folder(tmp_path, monkeypatch, name):
    src = model_dir(tmp_path)
    store = tmp_path / "store"
    dest = str(store / "model-1")
    artifact.write_artifact(src, manifest(), dest)
    (store / "outside.txt").write_text("a file of the store, next to the model")
    _with_files(dest, ["model.npz", name])
    _remote(monkeypatch)
    into = tmp_path / "downloads" / "copy"
    into.mkdir(parents=True)
    with pytest.raises(ArtifactError, match=r"model-1/manifest\.json: file name .* is not a plain relative path"):
        artifact.fetch(dest, into=str(into))
    assert sorted(os.listdir(tmp_path / "downloads")) == ["copy"]  # nothing written beside the download folder
    assert os.listdir(into) == []  # and nothing inside it: names are checked before the first copy


def test_a_symlink_leaving_a_local_artifact_is_refused(tmp_path):
    src = model_dir(tmp_path)
    dest = str(tmp_path / "store" / "model-1")
    artifact.write_artifact(src, manifest(), dest)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    artifact.save_arrays(str(elsewhere), {"secret": np.arange(3.0)})
    os.remove(os.path.join(dest, "model.npz"))
    os.symlink(elsewhere / "model.npz", os.path.join(dest, "model.npz"))
    with pytest.raises(ArtifactError, match=r"model\.npz resolves outside the artifact folder"):
        artifact.fetch(dest)
    with pytest.raises(ArtifactError, match=r"model\.npz resolves outside"):
        artifact.load_arrays(dest)


def test_a_symlink_staying_inside_the_artifact_is_followed(tmp_path):
    dest = artifact.write_artifact(model_dir(tmp_path), manifest(), str(tmp_path / "m"))
    os.makedirs(os.path.join(dest, "v1"))
    os.replace(os.path.join(dest, "model.npz"), os.path.join(dest, "v1", "model.npz"))
    os.symlink(os.path.join("v1", "model.npz"), os.path.join(dest, "model.npz"))
    local, _ = artifact.fetch(dest)
    assert artifact.load_arrays(local)["k"] == 3


def _npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def zip_bomb(path, shape=(2**28, 5), descr="<f4") -> int:
    """A real deflate bomb, built in ~0.1 s: an .npy member declaring ``shape`` (5 GiB by default) whose data
    is zeros, deflated block by block (a full flush resets the compressor, so every 16 MiB block of zeros
    compresses to the same bytes, repeated). Zip64 sizes, written by hand. Returns the archive's size."""
    import struct
    import zlib

    header = _npy_header(shape, descr)
    nbytes = int(np.prod(shape)) * np.dtype(descr).itemsize
    chunk = 16 << 20
    assert nbytes % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    data += block * (nbytes // chunk) + c.flush()
    name, size = b"w.npy", len(header) + nbytes
    sizes = struct.pack("<HHQQ", 1, 16, size, len(data))  # zip64 extra field: uncompressed, compressed
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 33, 0, 0xFFFFFFFF, 0xFFFFFFFF, len(name), 20)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 8, 0, 33, 0, 0xFFFFFFFF, 0xFFFFFFFF,
                          len(name), 20, 0, 0, 0, 0, 0)
    body = local + name + sizes + data
    directory = central + name + sizes
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), len(body), 0)
    with open(path, "wb") as f:
        f.write(body + directory + end)
    return len(body) + len(directory) + len(end)


_LOAD_IN_A_CAGE = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a regression must fail, not eat the machine
from algorithms import artifact
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    artifact.load_arrays(sys.argv[1])
    outcome = "loaded"
except BaseException as exc:
    outcome = f"{type(exc).__name__}: {exc}"
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"outcome": outcome, "grew_kib": grew}))
"""


def test_a_zip_bomb_is_refused_before_inflating(tmp_path):
    import subprocess
    import sys

    size = zip_bomb(tmp_path / "model.npz")
    assert size < 6 << 20  # a 5 MB file that inflates to 5 GiB
    done = subprocess.run([sys.executable, "-c", _LOAD_IN_A_CAGE, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"].startswith("ArtifactError: "), result
    assert "model.npz: array 'w' declares shape (268435456, 5) float32 (5368709120 bytes)" in result["outcome"]
    assert result["grew_kib"] < 32 * 1024, result  # peak RSS grew by less than 32 MiB


def test_a_header_larger_than_its_member_is_refused(tmp_path):
    """A small stored member whose header declares a huge shape: refused from the header, before allocating."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.npz", "w") as zf:
        zf.writestr("w.npy", _npy_header((10**9, 10**3), "<f8") + bytes(64))
    with pytest.raises(ArtifactError, match=r"array 'w' declares shape \(1000000000, 1000\) float64 "
                                            r"\(8000000000000 bytes\).* holds 64"):
        artifact.load_arrays(str(tmp_path))


def test_array_budget_and_expected_shapes(tmp_path, monkeypatch):
    arrays = {"centroids": np.arange(12.0, dtype=np.float32).reshape(3, 4), "k": np.array(3)}
    artifact.save_arrays(str(tmp_path), arrays)
    got = artifact.load_arrays(str(tmp_path), expected={"centroids": (3, 4), "k": ()})
    np.testing.assert_array_equal(got["centroids"], arrays["centroids"])
    assert artifact.load_arrays(str(tmp_path), expected={"centroids": (None, 4)})["k"] == 3
    with pytest.raises(ArtifactError, match=r"array 'centroids' has shape \(3, 4\); the model expects \(2, 4\)"):
        artifact.load_arrays(str(tmp_path), expected={"centroids": (2, 4)})
    with pytest.raises(ArtifactError, match=r"model\.npz has no array 'bias'"):
        artifact.load_arrays(str(tmp_path), expected={"bias": (1,)})
    with pytest.raises(ArtifactError, match=r"array 'k' declares shape \(\) int64 \(8 bytes\), 56 bytes with the "
                                            r"arrays before it; the limit is 50 bytes \(ArrayBudget.max_bytes\)"):
        artifact.load_arrays(str(tmp_path), budget=artifact.ArrayBudget(max_bytes=50))
    monkeypatch.setenv("SPARK_ML_MAX_ARRAY_BYTES", "40")
    with pytest.raises(ArtifactError, match=r"array 'centroids' declares shape \(3, 4\) float32 \(48 bytes\); "
                                            r"the limit is 40 bytes \(SPARK_ML_MAX_ARRAY_BYTES\)"):
        artifact.load_arrays(str(tmp_path))
    assert set(artifact.load_arrays(str(tmp_path), budget=artifact.ArrayBudget(max_bytes=56))) == {"centroids", "k"}


def test_deflated_archives_load_within_the_expansion_budget(tmp_path):
    """np.savez_compressed output (what other writers make) still loads: real weights compress little."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(300, 50)), "b": rng.normal(size=50).astype(np.float32), "n": np.array(7)}
    np.savez_compressed(tmp_path / "model.npz", **arrays)
    got = artifact.load_arrays(str(tmp_path))
    assert set(got) == set(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(got[key], value)
        assert got[key].dtype == value.dtype


def test_load_arrays_agrees_with_numpy_on_every_layout(tmp_path):
    import zipfile

    rng = np.random.default_rng(3)
    arrays = {
        "f8": rng.normal(size=(4, 5)), "f2": np.array([0.5, -2.25], np.float16), "b1": np.array([True, False]),
        "i8": np.array([-(2**40), 2**40]), "u1": np.array([0, 255], np.uint8), "c8": np.array([1 + 2j], np.complex64),
        "scalar": np.array(2.5), "empty": np.zeros((0, 3)), "fortran": np.asfortranarray(rng.normal(size=(2, 3))),
        "fortran3": np.asfortranarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4)),
        "big": np.arange(5, dtype=">f8") / 3, "text": np.array(["ab", "c"]),
    }
    with zipfile.ZipFile(tmp_path / "model.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, value, version=(2, 0) if key == "big" else None)
    got = artifact.load_arrays(str(tmp_path))
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        assert sorted(got) == sorted(z.files)
        for key in z.files:
            want = z[key]
            assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
            assert got[key].flags.f_contiguous == want.flags.f_contiguous, key
            np.testing.assert_array_equal(got[key], want, err_msg=key)


def test_built_in_models_check_their_arrays_against_the_manifest_before_inflating(tmp_path):
    """A model folder whose arrays do not have the shapes its manifest implies is refused from the .npy headers
    (K-Means: centroids (k, feature_dim); PCA: v (feature_dim, num_components); FM: V (feature_dim, k))."""
    from algorithms.builtin import load_model, save_model
    from algorithms.builtin.kmeans import KMeansModel

    folder = str(tmp_path / "km")
    save_model(KMeansModel({"k": "2"}, 3, np.zeros((2, 3))), folder)
    assert load_model(folder).cluster_centers.shape == (2, 3)
    with open(f"{folder}/manifest.json") as f:
        manifest = json.load(f)
    for hyperparameters, feature_dim in (({"k": "2"}, 4), ({"k": "7"}, 3)):
        manifest.update(hyperparameters=hyperparameters, feature_dim=feature_dim)
        with open(f"{folder}/manifest.json", "w") as f:
            json.dump(manifest, f)
        shown = (int(hyperparameters["k"]), feature_dim)
        with pytest.raises(ArtifactError, match=rf"array 'centroids' has shape \(2, 3\); the model expects "
                                                rf"\({shown[0]}, {shown[1]}\)"):
            load_model(folder)
