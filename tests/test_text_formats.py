"""text/csv and text/libsvm channel readers against scikit-learn's svmlight reader and numpy's text writer."""

import os

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, load_breast_cancer, load_svmlight_file

from algorithms.batch import Batch
from algorithms.channel import Channel
from algorithms.text_formats import TextFormatError, iter_text_batches, text_feature_dim
from algorithms.training import ChannelInput


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return x.astype(np.float32), y.astype(np.float32)


def _read_all(files, content_type, batch_size=64, **kw) -> Batch:
    batches = list(iter_text_batches(files, content_type, batch_size, **kw))
    assert all(len(b) == batch_size for b in batches[:-1])
    return Batch.concat(batches)


def _sparse_with_zeros(x: np.ndarray) -> sp.csr_matrix:
    x = x.copy()
    x[np.abs(x) < np.median(np.abs(x))] = 0  # half the entries are absent in the libsvm text
    return sp.csr_matrix(x)


def test_libsvm_equals_scikit_learns_reader_across_blocks(tmp_path, cancer):
    x, y = cancer
    sparse = _sparse_with_zeros(x)
    path = str(tmp_path / "cancer.libsvm")
    dump_svmlight_file(sparse, y, path, zero_based=True)
    expected_x, expected_y = load_svmlight_file(path, zero_based=True, n_features=30)
    got = _read_all([path], "text/libsvm", block_bytes=4096)  # many blocks, lines cut at block ends
    assert got.is_sparse and got.features.shape == (569, 30)
    np.testing.assert_array_equal(got.features.toarray(), expected_x.toarray().astype(np.float32))
    np.testing.assert_array_equal(got.labels, expected_y.astype(np.float32))
    assert got.weights is None and got.qid is None


def test_libsvm_query_ids_weights_and_comments(tmp_path, cancer):
    x, y = cancer
    qid = np.repeat(np.arange(57), 10)[:569]
    path = str(tmp_path / "ranked.svm")
    dump_svmlight_file(sp.csr_matrix(x[:569]), y, path, zero_based=True, query_id=qid, comment="made by sklearn")
    _, _, expected_qid = load_svmlight_file(path, zero_based=True, query_id=True)
    got = _read_all([path], "text/x-libsvm", block_bytes=2048)
    np.testing.assert_array_equal(got.qid, expected_qid)
    (tmp_path / "w.svm").write_text("1:0.5 0:1 2:3 # first\n\n0 1:2\r\n2.5:2 0:-1\n")
    weighted = _read_all([str(tmp_path / "w.svm")], "text/libsvm")
    np.testing.assert_array_equal(weighted.labels, [1, 0, 2.5])
    np.testing.assert_array_equal(weighted.weights, [0.5, 1, 2])
    np.testing.assert_array_equal(weighted.features.toarray(), [[1, 0, 3], [0, 2, 0], [-1, 0, 0]])


def test_libsvm_feature_dim_is_the_largest_index_over_all_files(tmp_path):
    (tmp_path / "a.svm").write_text("1 0:1 4:2\n")
    (tmp_path / "b.svm").write_text("0 9:1\n")
    files = [str(tmp_path / "a.svm"), str(tmp_path / "b.svm")]
    assert text_feature_dim(files, "text/libsvm") == 10
    got = _read_all(files, "text/libsvm")
    assert got.features.shape == (2, 10)
    assert _read_all(files, "text/libsvm", feature_dim=12).features.shape == (2, 12)
    with pytest.raises(TextFormatError, match=r"b\.svm: line 1: feature index 9 is out of range for feature_dim=5"):
        _read_all(files, "text/libsvm", feature_dim=5)


def test_csv_label_first_equals_numpy(tmp_path, cancer):
    x, y = cancer
    path = str(tmp_path / "cancer.csv")
    np.savetxt(path, np.column_stack([y, x]), delimiter=",", fmt="%.9g")  # float32 round-trips exactly
    got = _read_all([path, path], "text/csv", block_bytes=8192)
    assert not got.is_sparse and got.features.dtype == np.float32
    np.testing.assert_array_equal(got.features, np.concatenate([x, x]))
    np.testing.assert_array_equal(got.labels, np.concatenate([y, y]))
    assert text_feature_dim([path], "text/csv") == 30
    unlabeled = _read_all([path], "text/csv;label_size=0")
    assert unlabeled.labels is None and unlabeled.features.shape == (569, 31)


def test_csv_empty_fields_are_missing_values(tmp_path):
    (tmp_path / "m.csv").write_text("1,2,,4\n0,,6,\n")
    got = _read_all([str(tmp_path / "m.csv")], "text/csv")
    np.testing.assert_array_equal(np.isnan(got.features), [[False, True, False], [True, False, True]])
    np.testing.assert_array_equal(got.labels, [1, 0])


@pytest.mark.parametrize("content, ctype, message", [
    ("1,2,3\n4,5\n", "text/csv", r"bad\.txt: line 2 has 2 columns, expected 3"),
    ("1,2,3\n4,5,x7\n", "text/csv", r"bad\.txt: line 2, column 3: 'x7' is not a number"),
    ("1,2,3\n,5,6\n", "text/csv", r"bad\.txt: data row 2: the label \(first column\) is missing"),
    ("1 0:1\n\n1 2:abc\n", "text/libsvm", r"bad\.txt: line 3: value 'abc' of feature 2 is not a number"),
    ("1 0:1\nyes 1:1\n", "text/libsvm", r"bad\.txt: line 2: the label 'yes' is not a number"),
    ("1 0:1 7\n", "text/libsvm", r"bad\.txt: line 1: '7' is not index:value"),
    ("1 -1:1\n", "text/libsvm", r"bad\.txt: line 1: feature index '-1' is not a non-negative integer"),
    ("1 qid:1 0:1\n0 0:2\n", "text/libsvm", r"bad\.txt: line 2: qid must be given on every row or on none"),
    ("1,2\n", "text/csv;label_size=2", r"label_size must be 0 or 1"),
])
def test_bad_lines_are_named(tmp_path, content, ctype, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(TextFormatError, match=message):
        _read_all([str(path)], ctype)


def test_non_utf8_bytes_are_named(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"1,2\n3,\xff\n")
    with pytest.raises(TextFormatError, match=r"bin\.csv: line 2: not UTF-8 text"):
        _read_all([str(path)], "text/csv")


def test_channel_input_streams_text_channels(tmp_path, cancer):
    x, y = cancer
    folder = tmp_path / "channel"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(x)), 3)):
        np.savetxt(folder / f"part-{i}.csv", np.column_stack([y[rows], x[rows]]), delimiter=",", fmt="%.9g")
    channel = Channel.open(str(folder))
    assert channel.content_type == "text/csv" and len(channel.shards()) == 3
    got = Batch.concat(list(ChannelInput.from_channel("train", channel).batches(100)))
    np.testing.assert_array_equal(got.features, x)
    np.testing.assert_array_equal(got.labels, y)
    assert os.path.basename(channel.shard_uri(channel.shards()[0])) == "part-0.csv"
