"""Channels: manifest round trip, opening folders with and without a manifest, SDK-style folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from algorithms import tensor_codec
from algorithms.channel import (
    CSV,
    FULLY_REPLICATED,
    MANIFEST,
    RECORDIO_PROTOBUF,
    SHARDED_BY_KEY,
    Channel,
    Manifest,
    Shard,
    base_content_type,
    content_type_params,
)
from algorithms.reader import iter_batches


def manifest(**kw) -> Manifest:
    defaults = dict(
        content_type=RECORDIO_PROTOBUF,
        shards=(Shard("part-00000.pbr", 10, 1234), Shard("part-00001.pbr", 5, 600)),
        feature_dim=7,
        has_label=True,
        label_dim=1,
        sparse=False,
        feature_dtype="float32",
    )
    return Manifest(**{**defaults, **kw})


def test_manifest_json_round_trip():
    for m in (
        manifest(),
        manifest(extra={"source": "spark", "n": [1, 2]}),
        manifest(feature_dim=None, sparse=None),
    ):
        assert Manifest.from_json(m.to_json()) == m


def test_manifest_json_layout():
    doc = json.loads(manifest().to_json())
    assert doc["format"] == "spark_ml.channel" and doc["version"] == 1
    assert doc["num_records"] == 15
    assert doc["shards"][0] == {"path": "part-00000.pbr", "records": 10, "bytes": 1234}
    assert "extra" not in doc


def test_num_records_unknown_when_any_shard_is_uncounted():
    assert manifest(shards=(Shard("a", 3), Shard("b"))).num_records is None


@pytest.mark.parametrize(
    "text,problem",
    [
        ("not json", "not a valid channel manifest"),
        ('{"format": "other", "shards": []}', "format is 'other'"),
        (
            '{"format": "spark_ml.channel", "version": 99, "content_type": "x", "shards": []}',
            "version 99 is newer",
        ),
        ('{"format": "spark_ml.channel", "content_type": "x"}', "not a valid channel manifest: 'shards'"),
        ('{"format": "spark_ml.channel", "content_type": "x", "shards": [{"records": 1}]}', "not a valid"),
        ("[1, 2]", "not a valid channel manifest"),
    ],
)
def test_bad_manifests_name_the_file(text, problem):
    with pytest.raises(ValueError, match=rf"^/data/ch/manifest\.json: .*{problem}"):
        Manifest.from_json(text, "/data/ch/manifest.json")


def write_channel(root, with_manifest: bool) -> Manifest:
    root.mkdir()
    shards = []
    for i, n in enumerate([4, 6]):
        data = tensor_codec.encode_dense(np.full((n, 3), i, np.float32), np.zeros(n, np.float32))
        (root / f"part-{i:05d}.pbr").write_bytes(data)
        shards.append(Shard(f"part-{i:05d}.pbr", n, len(data)))
    (root / "_SUCCESS").write_bytes(b"")
    (root / ".part-00000.pbr.crc").write_bytes(b"crc")
    m = Manifest(RECORDIO_PROTOBUF, tuple(shards), feature_dim=3, has_label=True)
    if with_manifest:
        (root / MANIFEST).write_text(m.to_json())
    return m


def test_open_with_manifest(tmp_path):
    m = write_channel(tmp_path / "ch", with_manifest=True)
    ch = Channel.open(str(tmp_path / "ch"))
    assert ch.manifest == m and ch.content_type == RECORDIO_PROTOBUF
    assert ch.num_records == 10 and ch.feature_dim == 3
    assert ch.shards() == list(m.shards)
    assert ch.shard_uri(ch.shards()[1]) == str(tmp_path / "ch" / "part-00001.pbr")
    assert "records=10" in repr(ch)


def test_open_without_manifest_lists_data_files_only(tmp_path):
    write_channel(tmp_path / "ch", with_manifest=False)
    ch = Channel.open(str(tmp_path / "ch"))
    assert ch.manifest is None and ch.num_records is None and ch.feature_dim is None
    assert [s.path for s in ch.shards()] == ["part-00000.pbr", "part-00001.pbr"]
    assert all(s.records is None and s.bytes > 0 for s in ch.shards())
    assert ch.content_type == RECORDIO_PROTOBUF
    batches = list(iter_batches([ch.shard_uri(s) for s in ch.shards()], batch_size=100))
    assert len(batches) == 1 and len(batches[0]) == 10


def test_sdk_style_folder(tmp_path):
    """record_set() writes matrix_<i>.pbr shards plus a hidden .amazon.manifest: shards only."""
    root = tmp_path / "sdk"
    root.mkdir()
    for i in range(3):
        (root / f"matrix_{i}.pbr").write_bytes(tensor_codec.encode_dense(np.full((2, 4), i, np.float32)))
    (root / ".amazon.manifest").write_text(
        json.dumps([{"prefix": f"file://{root}/"}, "matrix_0.pbr", "matrix_1.pbr", "matrix_2.pbr"])
    )
    ch = Channel.open(str(root))
    assert [s.path for s in ch.shards()] == ["matrix_0.pbr", "matrix_1.pbr", "matrix_2.pbr"]
    got = np.concatenate([b.features for b in iter_batches([ch.shard_uri(s) for s in ch.shards()], 10)])
    np.testing.assert_array_equal(got[:, 0], [0, 0, 1, 1, 2, 2])


def test_open_a_single_file(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("1,2,3\n")
    ch = Channel.open(str(f))
    assert ch.content_type == CSV and ch.path == str(tmp_path)
    assert [s.path for s in ch.shards()] == ["train.csv"]
    assert ch.shard_uri(ch.shards()[0]) == str(f)


def test_content_type_from_extensions_or_given(tmp_path):
    root = tmp_path / "csv"
    root.mkdir()
    (root / "a.csv").write_text("1,2\n")
    assert Channel.open(str(root)).content_type == CSV
    assert (
        Channel.open(str(root), content_type="text/csv;label_size=0").content_type == "text/csv;label_size=0"
    )


def test_content_type_must_match_the_manifest(tmp_path):
    write_channel(tmp_path / "ch", with_manifest=True)
    assert Channel.open(str(tmp_path / "ch"), "application/x-recordio-protobuf").manifest is not None
    with pytest.raises(ValueError, match="holds application/x-recordio-protobuf, not text/csv"):
        Channel.open(str(tmp_path / "ch"), CSV)


def test_missing_or_empty_channels(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Channel.open(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no manifest.json and no data files"):
        Channel.open(str(tmp_path / "empty"))


def test_distribution(tmp_path):
    write_channel(tmp_path / "ch", with_manifest=True)
    ch = Channel.open(str(tmp_path / "ch"))
    assert ch.distribution == SHARDED_BY_KEY
    assert ch.with_distribution(FULLY_REPLICATED).distribution == FULLY_REPLICATED
    with pytest.raises(
        ValueError, match="distribution must be one of ShardedByKey, FullyReplicated, got 'Shard'"
    ):
        Channel.open(str(tmp_path / "ch"), distribution="Shard")


def test_file_uri_channels(tmp_path):
    write_channel(tmp_path / "ch", with_manifest=False)
    ch = Channel.open(f"file://{tmp_path}/ch")
    assert [s.path for s in ch.shards()] == ["part-00000.pbr", "part-00001.pbr"]
    assert ch.shard_uri(ch.shards()[0]) == f"file://{tmp_path}/ch/part-00000.pbr"
    assert sum(len(b) for b in iter_batches([ch.shard_uri(s) for s in ch.shards()], 3)) == 10


def test_content_type_helpers():
    assert base_content_type("Text/CSV; label_size=1") == "text/csv"
    assert content_type_params("text/csv; Label_Size = 1;x") == {"label_size": "1"}


# ------------------------------------------------------------------------------------------ hostile channels


def _channel_with_shard(tmp_path, name: str):
    folder = tmp_path / "ch"
    folder.mkdir()
    data = tensor_codec.encode_dense(np.ones((2, 3), np.float32))
    (folder / "part-00000.pbr").write_bytes(data)
    shards = [{"path": "part-00000.pbr", "records": 2, "bytes": len(data)}, {"path": name, "records": 1}]
    doc = json.loads(manifest(shards=(Shard("part-00000.pbr", 2),), feature_dim=3, has_label=False).to_json())
    doc["shards"] = shards
    (folder / MANIFEST).write_text(json.dumps(doc))
    return folder


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.pbr", "sub/../../outside.pbr", "", "a\\..\\x.pbr",
                                  "file:///etc/passwd"])
def test_manifests_may_not_name_shards_outside_the_channel(tmp_path, name):
    (tmp_path / "outside.pbr").write_bytes(tensor_codec.encode_dense(np.zeros((1, 3), np.float32)))
    folder = _channel_with_shard(tmp_path, name)
    with pytest.raises(ValueError, match=r"ch/manifest\.json: not a valid channel manifest: file name .* is not a "
                                         r"plain relative path"):
        Channel.open(str(folder))


def test_a_shard_symlinked_out_of_the_channel_is_refused(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    folder = _channel_with_shard(tmp_path, "part-00001.pbr")
    (folder / "part-00001.pbr").symlink_to(outside)
    with pytest.raises(ValueError, match=r"ch/manifest\.json: shard part-00001\.pbr resolves outside the channel "
                                         r"folder"):
        Channel.open(str(folder))
    (folder / MANIFEST).unlink()  # an SDK-style folder, listed instead of read from a manifest
    with pytest.raises(ValueError, match=r"ch: part-00001\.pbr resolves outside the channel folder"):
        Channel.open(str(folder))


def test_read_errors_do_not_print_what_the_file_holds(tmp_path):
    from algorithms.recordio import RecordIOError

    path = tmp_path / "part-00000.pbr"
    path.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(RecordIOError) as err:
        list(iter_batches([str(path)], 10))
    assert "bad magic" in str(err.value) and "at byte offset 0" in str(err.value)
    assert "0x746F6F72" not in str(err.value).upper() and "root:x" not in str(err.value)


def test_a_manifests_record_count_is_checked_against_the_shard(tmp_path):
    from algorithms.training.env import ChannelInput

    folder = tmp_path / "ch"
    folder.mkdir()
    for i, n in enumerate((3, 2)):
        (folder / f"part-{i:05d}.pbr").write_bytes(tensor_codec.encode_dense(np.ones((n, 3), np.float32)))
    lying = manifest(shards=(Shard("part-00000.pbr", 3), Shard("part-00001.pbr", 5)), feature_dim=3, has_label=False)
    (folder / MANIFEST).write_text(lying.to_json())
    channel_input = ChannelInput.from_channel("train", Channel.open(str(folder)))
    with pytest.raises(ValueError, match=r"part-00001\.pbr: holds 2 records; the channel's manifest says 5"):
        list(channel_input.batches(2))
    with pytest.raises(ValueError, match=r"part-00001\.pbr: holds 2 records; the channel's manifest says 5"):
        list(channel_input.blocks(100))
    honest = manifest(shards=(Shard("part-00000.pbr", 3), Shard("part-00001.pbr", 2)), feature_dim=3, has_label=False)
    (folder / MANIFEST).write_text(honest.to_json())
    rows = sum(len(b) for b in ChannelInput.from_channel("train", Channel.open(str(folder))).batches(2))
    assert rows == 5
