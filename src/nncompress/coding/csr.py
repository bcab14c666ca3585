"""Compressed sparse row storage of a pruned weight, and its size accounting.

A weight of any rank is viewed as a matrix (rows = output units), which is how
both Linear and Conv2d weights are laid out. Column indices use the narrowest
integer type that holds them, so the dense/CSR break-even point is honest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncompress.errors import FormatError


def index_dtype(n: int) -> np.dtype:
    """Narrowest signed integer type (torch has no wide unsigned types) holding 0..n."""
    for dt in (np.int16, np.int32):
        if n <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


@dataclass(frozen=True)
class CSR:
    values: np.ndarray
    col_indices: np.ndarray
    crow_indices: np.ndarray
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.col_indices.nbytes + self.crow_indices.nbytes


def to_csr(dense: np.ndarray) -> CSR:
    if dense.ndim < 1:
        raise FormatError("CSR needs an array of rank >= 1")
    rows = dense.shape[0]
    mat = dense.reshape(rows, -1)
    r, c = np.nonzero(mat)
    counts = np.bincount(r, minlength=rows)
    crow = np.concatenate([[0], np.cumsum(counts)])
    return CSR(values=mat[r, c].astype(dense.dtype), col_indices=c.astype(index_dtype(mat.shape[1])),
               crow_indices=crow.astype(index_dtype(len(c))), shape=tuple(dense.shape))


def from_csr(csr: CSR) -> np.ndarray:
    shape = tuple(int(s) for s in csr.shape)
    rows = shape[0] if shape else 0
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    crow = np.asarray(csr.crow_indices, dtype=np.int64)
    col = np.asarray(csr.col_indices, dtype=np.int64)
    if (crow.shape != (rows + 1,) or crow[0] != 0 or np.any(np.diff(crow) < 0)
            or crow[-1] != len(col) or len(col) != len(csr.values)
            or (len(col) and (col.min() < 0 or col.max() >= cols))):
        raise FormatError(f"CSR arrays are inconsistent with shape {shape}")
    out = np.zeros((rows, cols), dtype=np.asarray(csr.values).dtype)
    row_of = np.repeat(np.arange(rows), np.diff(crow))
    out[row_of, col] = csr.values
    return out.reshape(shape)


def csr_bytes(dense: np.ndarray) -> int:
    """Bytes CSR would take for this array, without building it."""
    rows = dense.shape[0]
    nnz = int(np.count_nonzero(dense))
    cols = int(dense.size // max(rows, 1))
    return nnz * dense.itemsize + nnz * index_dtype(cols).itemsize + (rows + 1) * index_dtype(nnz).itemsize
