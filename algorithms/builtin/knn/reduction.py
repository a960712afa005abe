"""k-NN's random projections (``dimension_reduction_type``): they keep distances approximately (Johnson-Lindenstrauss)
while shrinking the vectors the index holds.

- ``sign``: ``y = x R / sqrt(target)`` with ``R`` a random ±1 matrix (feature_dim x target); O(d * target) per row.
- ``fjlt``: the fast Johnson-Lindenstrauss transform in its subsampled randomized Hadamard form: pad ``x`` with
  zeros to a power of two ``D``, flip the signs of random coordinates, apply the Walsh-Hadamard transform (a
  butterfly: O(D log D) per row), keep ``target`` random coordinates and divide by ``sqrt(target)``.

Both keep squared norms in expectation. The random draws are seeded and saved with the model, so training and
inference (here, in the model server and in the JVM scorer) project alike. Projections are computed in float64.
"""

from __future__ import annotations

import numpy as np

from ...backend import Backend, NumpyBackend

_SEED = 0x4E4E


class Reduction:
    """A dimension reduction (or none): :meth:`apply` to rows, :meth:`to_arrays` / :meth:`from_arrays` to save."""

    def __init__(self, kind: str, input_dim: int, target: int, matrix: np.ndarray | None = None,
                 signs: np.ndarray | None = None, coordinates: np.ndarray | None = None):
        self.kind, self.input_dim, self.target = kind, int(input_dim), int(target)
        self.matrix = None if matrix is None else np.asarray(matrix, np.float64)
        self.signs = None if signs is None else np.asarray(signs, np.float64)
        self.coordinates = None if coordinates is None else np.asarray(coordinates, np.int64)
        if kind == "sign" and (self.matrix is None or self.matrix.shape != (self.input_dim, self.target)):
            raise ValueError(f"a sign reduction needs a ({self.input_dim}, {self.target}) matrix")
        if kind == "fjlt" and (self.signs is None or self.coordinates is None or len(self.coordinates) != self.target
                               or len(self.signs) != hadamard_size(self.input_dim)):
            raise ValueError(f"an fjlt reduction needs {hadamard_size(self.input_dim)} signs and {self.target} "
                             "coordinates")

    @classmethod
    def create(cls, kind: str, input_dim: int, target: int | None) -> Reduction:
        """A new seeded reduction of ``kind`` (none, sign or fjlt) from ``input_dim`` to ``target`` dimensions."""
        rng = np.random.default_rng(_SEED)
        if kind == "none":
            return cls("none", input_dim, input_dim)
        if kind == "sign":
            return cls("sign", input_dim, target, matrix=rng.choice([-1.0, 1.0], size=(input_dim, target)))
        if kind == "fjlt":
            size = hadamard_size(input_dim)
            return cls("fjlt", input_dim, target, signs=rng.choice([-1.0, 1.0], size=size),
                       coordinates=np.sort(rng.choice(size, size=target, replace=False)))
        raise ValueError(f"unknown dimension reduction {kind!r}; use none, sign or fjlt")

    @property
    def output_dim(self) -> int:
        return self.target

    def apply(self, x: np.ndarray, backend: Backend | None = None) -> np.ndarray:
        """Rows ``(n, input_dim)`` projected to ``(n, output_dim)`` float32 (``backend`` for the sign product)."""
        if self.kind == "none":
            return np.ascontiguousarray(x, np.float32)
        x = np.asarray(x, np.float64)
        if self.kind == "sign":
            be = backend or NumpyBackend()
            product = be.to_numpy(be.matmul(be.asarray(x), be.asarray(self.matrix)))
            return (product / np.sqrt(self.target)).astype(np.float32)
        padded = np.zeros((len(x), len(self.signs)))
        padded[:, :self.input_dim] = x
        padded *= self.signs
        transformed = walsh_hadamard(padded)
        return (transformed[:, self.coordinates] / np.sqrt(self.target)).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.kind == "sign":
            return {"sign_matrix": self.matrix}
        if self.kind == "fjlt":
            return {"fjlt_signs": self.signs, "fjlt_coordinates": self.coordinates}
        return {}

    @classmethod
    def from_arrays(cls, kind: str, input_dim: int, target: int, arrays: dict[str, np.ndarray]) -> Reduction:
        if kind == "sign":
            return cls(kind, input_dim, target, matrix=arrays["sign_matrix"])
        if kind == "fjlt":
            return cls(kind, input_dim, target, signs=arrays["fjlt_signs"], coordinates=arrays["fjlt_coordinates"])
        return cls("none", input_dim, input_dim)


def hadamard_size(dim: int) -> int:
    """The smallest power of two at least ``dim``."""
    return 1 << max(0, int(dim - 1).bit_length())


def walsh_hadamard(x: np.ndarray) -> np.ndarray:
    """The unnormalized Walsh-Hadamard transform of each row (length a power of two), by butterflies: at each
    stage, pairs ``(a, b)`` that are ``h`` apart become ``(a + b, a - b)``."""
    out = np.array(x, dtype=np.float64, copy=True)
    n, size = out.shape
    h = 1
    while h < size:
        blocks = out.reshape(n, size // (2 * h), 2, h)
        a = blocks[:, :, 0, :].copy()
        b = blocks[:, :, 1, :]
        blocks[:, :, 0, :] += b
        blocks[:, :, 1, :] = a - b
        h *= 2
    return out


__all__ = ["Reduction", "hadamard_size", "walsh_hadamard"]
