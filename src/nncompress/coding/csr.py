"""Compressed sparse row storage of a pruned weight, and its size accounting.

A weight of any rank is viewed as a matrix (rows = output units), which is how
both Linear and Conv2d weights are laid out. Column indices use the narrowest
integer type that holds them, so the dense/CSR break-even point is honest.
"""

from __future__ import annotations

import math
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
    return CSR(
        values=mat[r, c].astype(dense.dtype),
        col_indices=c.astype(index_dtype(mat.shape[1])),
        crow_indices=crow.astype(index_dtype(len(c))),
        shape=tuple(dense.shape),
    )


def _bad(why: str) -> FormatError:
    return FormatError(f"CSR arrays are inconsistent: {why}")


def check_csr(csr: CSR) -> None:
    """Refuse arrays that do not describe one matrix of ``shape``: non-negative integer shape; integer
    index arrays; row pointers starting at 0, never decreasing and ending at nnz; column indices in range,
    strictly increasing within each row (a repeated index would silently drop a value); one value per
    index. A FormatError says which rule failed."""
    shape = csr.shape
    if not shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _bad(f"shape must be non-negative integers, got {shape!r}")
    rows = int(shape[0])
    cols = math.prod(int(d) for d in shape[1:])
    col, crow, values = (np.asarray(a) for a in (csr.col_indices, csr.crow_indices, csr.values))
    for what, arr in (("col_indices", col), ("crow_indices", crow)):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise _bad(f"{what} must be a one-dimensional integer array, got {arr.dtype} of shape {arr.shape}")
    if values.ndim != 1 or len(values) != len(col):
        raise _bad(f"{len(col)} column indices but {values.size} values")
    if crow.shape != (rows + 1,):
        raise _bad(f"shape {tuple(shape)} needs {rows + 1} row pointers, got {len(crow)}")
    crow = crow.astype(np.int64)
    if crow[0] != 0 or crow[-1] != len(col) or np.any(np.diff(crow) < 0):
        raise _bad(f"row pointers must start at 0, never decrease and end at nnz ({len(col)})")
    col = col.astype(np.int64)
    if len(col) and (col.min() < 0 or col.max() >= cols):
        raise _bad(f"column indices must lie in 0..{cols - 1} for shape {tuple(shape)}")
    row_of = np.repeat(np.arange(rows), np.diff(crow))
    same_row = row_of[1:] == row_of[:-1]
    if np.any(same_row & (col[1:] <= col[:-1])):
        raise _bad(
            "column indices must be strictly increasing within each row (a repeated index would overwrite a value)"
        )


def from_csr(csr: CSR) -> np.ndarray:
    """The dense array, after ``check_csr``."""
    check_csr(csr)
    shape = tuple(int(s) for s in csr.shape)
    rows = shape[0]
    cols = math.prod(shape[1:])
    crow = np.asarray(csr.crow_indices, dtype=np.int64)
    col = np.asarray(csr.col_indices, dtype=np.int64)
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
