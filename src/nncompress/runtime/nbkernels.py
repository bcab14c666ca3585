"""Sparse times dense kernels compiled by numba, over column-blocked CSR with 16-bit column indices.

Only ``blocked.py`` imports this module, and only when numba is installed. The matrix is
cut into blocks of at most 65,536 columns, so a column index relative to its block fits
in 16 bits (6 bytes per nonzero with fp32 values, 3 with 8-bit codebook indices instead of
the 8 of int32 CSR): batch 1 is bound by the bytes read. For many inputs (the input
transposed, ``(columns, n)`` row-major, per chunk of ``n`` input vectors) every nonzero adds
a contiguous run of ``n`` products to its output row, which vectorises; blocks of columns
and chunks of inputs keep the slice of the input being read in L2 cache. Four nonzeros are taken at once: four
independent sums at batch 1 (one sum would wait on each add), one read and write of the
output run per four at batch R.

Only ``contract`` (fused multiply-add) is asked of fast-math: reassociating the batch-1
sum lets LLVM use gathers, which measured slower here than four scalar sums.
"""

from __future__ import annotations

import logging

import numpy as np
from numba import njit, prange

log = logging.getLogger(__name__)

FAST = {"contract"}


def _jit(fn, parallel: bool):
    """Compile ``fn`` (lazily, at its first call) with an on-disk cache; numba refuses ``cache=True`` at
    decoration when no cache folder is writable (neither NUMBA_CACHE_DIR, nor ``__pycache__`` beside this
    file, nor the user's cache folder), and then the kernel compiles on every start instead."""
    try:
        return njit(parallel=parallel, fastmath=FAST, cache=True, nogil=True)(fn)
    except RuntimeError as exc:
        log.info(
            "numba cannot cache %s (%s): it compiles on each start; set NUMBA_CACHE_DIR to a writable "
            "folder to keep the compiled code",
            fn.__name__,
            exc,
        )
        return njit(parallel=parallel, fastmath=FAST, cache=False, nogil=True)(fn)


def _spmv(indptr, starts, indices, values, x, y):
    """y[r] += sum_k values[k] * x[starts[b] + indices[k]] over the nonzeros of row r in every block b."""
    n_rows = indptr.shape[1] - 1
    for b in range(indptr.shape[0]):
        s0 = starts[b]
        for r in prange(n_rows):
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            k = indptr[b, r]
            e = indptr[b, r + 1]
            while k + 4 <= e:
                a0 += values[k] * x[s0 + indices[k]]
                a1 += values[k + 1] * x[s0 + indices[k + 1]]
                a2 += values[k + 2] * x[s0 + indices[k + 2]]
                a3 += values[k + 3] * x[s0 + indices[k + 3]]
                k += 4
            while k < e:
                a0 += values[k] * x[s0 + indices[k]]
                k += 1
            y[r] += (a0 + a1) + (a2 + a3)


def _spmv_shared(indptr, starts, indices, codes, book, x, y):
    """``_spmv`` with each value looked up in a codebook: ``book[codes[k]]``."""
    n_rows = indptr.shape[1] - 1
    for b in range(indptr.shape[0]):
        s0 = starts[b]
        for r in prange(n_rows):
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            k = indptr[b, r]
            e = indptr[b, r + 1]
            while k + 4 <= e:
                a0 += book[codes[k]] * x[s0 + indices[k]]
                a1 += book[codes[k + 1]] * x[s0 + indices[k + 1]]
                a2 += book[codes[k + 2]] * x[s0 + indices[k + 2]]
                a3 += book[codes[k + 3]] * x[s0 + indices[k + 3]]
                k += 4
            while k < e:
                a0 += book[codes[k]] * x[s0 + indices[k]]
                k += 1
            y[r] += (a0 + a1) + (a2 + a3)


def _spmm(indptr, starts, indices, values, x3, y3):
    """y3[c, r, :] += sum_k values[k] * x3[c, starts[b] + indices[k], :] for each chunk c of input vectors
    (``x3`` is (chunks, columns, n)); per chunk and block, all rows in parallel. Indexing whole 2-D chunks
    from 0 matters: an offset range into a wider array stopped LLVM from vectorising the inner loop."""
    n_rows = indptr.shape[1] - 1
    n = x3.shape[2]
    for c in range(x3.shape[0]):
        xt = x3[c]
        y = y3[c]
        for b in range(indptr.shape[0]):
            s0 = starts[b]
            for r in prange(n_rows):
                k = indptr[b, r]
                e = indptr[b, r + 1]
                while k + 4 <= e:
                    c0 = s0 + indices[k]
                    c1 = s0 + indices[k + 1]
                    c2 = s0 + indices[k + 2]
                    c3 = s0 + indices[k + 3]
                    v0 = values[k]
                    v1 = values[k + 1]
                    v2 = values[k + 2]
                    v3 = values[k + 3]
                    for j in range(n):
                        y[r, j] += (v0 * xt[c0, j] + v1 * xt[c1, j]) + (v2 * xt[c2, j] + v3 * xt[c3, j])
                    k += 4
                while k < e:
                    c0 = s0 + indices[k]
                    v0 = values[k]
                    for j in range(n):
                        y[r, j] += v0 * xt[c0, j]
                    k += 1


def _spmm_shared(indptr, starts, indices, codes, book, x3, y3):
    """``_spmm`` with each value looked up in a codebook."""
    n_rows = indptr.shape[1] - 1
    n = x3.shape[2]
    for c in range(x3.shape[0]):
        xt = x3[c]
        y = y3[c]
        for b in range(indptr.shape[0]):
            s0 = starts[b]
            for r in prange(n_rows):
                k = indptr[b, r]
                e = indptr[b, r + 1]
                while k + 4 <= e:
                    c0 = s0 + indices[k]
                    c1 = s0 + indices[k + 1]
                    c2 = s0 + indices[k + 2]
                    c3 = s0 + indices[k + 3]
                    v0 = book[codes[k]]
                    v1 = book[codes[k + 1]]
                    v2 = book[codes[k + 2]]
                    v3 = book[codes[k + 3]]
                    for j in range(n):
                        y[r, j] += (v0 * xt[c0, j] + v1 * xt[c1, j]) + (v2 * xt[c2, j] + v3 * xt[c3, j])
                    k += 4
                while k < e:
                    c0 = s0 + indices[k]
                    v0 = book[codes[k]]
                    for j in range(n):
                        y[r, j] += v0 * xt[c0, j]
                    k += 1


# (serial, parallel) pairs: waking worker threads costs tens of microseconds per parallel loop, more than a
# small layer's whole product, and one thread needs none.
spmv = (_jit(_spmv, False), _jit(_spmv, True))
spmv_shared = (_jit(_spmv_shared, False), _jit(_spmv_shared, True))
spmm = (_jit(_spmm, False), _jit(_spmm, True))
spmm_shared = (_jit(_spmm_shared, False), _jit(_spmm_shared, True))
