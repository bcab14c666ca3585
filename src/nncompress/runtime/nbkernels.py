"""Sparse times dense kernels compiled by numba, over column-blocked CSR with 16-bit column indices.

Only ``blocked.py`` imports this module, and only when numba is installed. The matrix is
cut into blocks of at most 65,536 columns, so a column index relative to its block fits
in 16 bits (6 bytes per nonzero with fp32 values, 3 with 8-bit codebook indices instead of
the 8 of int32 CSR): batch 1 is bound by the bytes read. For many inputs the input comes
transposed in chunks of ``width`` vectors, ``(chunks, columns, width)``: every nonzero adds
a contiguous run of ``width`` products to its output row. Whole chunks of 64 go through a
kernel compiled for that width, whose rows are written as LLVM vector code (``nbvector``: the
row's 64 outputs stay in registers across its nonzeros, 1.6-1.9x faster than the loop below);
the rest of a call goes through one that takes the width at run time (a constant 16 was unrolled
into scalar code: no faster than 64). There, and at batch 1, four nonzeros are taken at once:
four independent sums at batch 1 (one sum would wait on each add), one read and write of
the output run per four at larger batches. A parallel kernel gives each thread its own
rows for the whole call, so the threads meet once per call, not once per block.

Only ``contract`` (fused multiply-add) is asked of fast-math: reassociating the batch-1
sum lets LLVM use gathers, which measured slower here than four scalar sums.

Each kernel is a closure over its constants (width, codebook or not); the serial and the
parallel build of one kernel get different names, because numba's on-disk cache keys a
function by its name and closure values, not by ``parallel``: under one name the parallel
build loaded the serial machine code from the cache and ran on one thread.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
from numba import njit, prange

from nncompress.runtime.blocked import CHUNK
from nncompress.runtime.nbvector import CODE_TAG, row64, tile16
from nncompress.runtime.nbvector import WIDTH as VECTOR_WIDTH

log = logging.getLogger(__name__)

FAST = {"contract"}


def _jit(fn: Callable[..., Any], parallel: bool) -> Any:
    """``_compile`` under a name that says which build it is (numba's cache tells builds apart by name)."""
    fn.__qualname__ = f"{fn.__qualname__}_{'parallel' if parallel else 'serial'}"
    return _compile(fn, parallel)


def _compile(fn: Callable[..., Any], parallel: bool = False) -> Any:
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


def transpose_tails(a, b, r_end, c_end):
    """b[j, i] = a[i, j] past the whole tiles: columns from ``c_end`` of the tiled rows, then rows from ``r_end``."""
    rows, cols = a.shape
    for j in range(c_end, cols):
        for i in range(r_end):
            b[j, i] = a[i, j]
    for i in range(r_end, rows):
        for j in range(cols):
            b[j, i] = a[i, j]


transpose_tails = _compile(transpose_tails)


def transpose32(a, b):
    """b[j, i] = a[i, j] in 32 x 32 scalar tiles (a constant, so each tile compiles unrolled)."""
    rows, cols = a.shape
    r_end, c_end = rows - rows % 32, cols - cols % 32
    for i0 in range(0, r_end, 32):
        for j0 in range(0, c_end, 32):
            for j in range(32):
                for i in range(32):
                    b[j0 + j, i0 + i] = a[i0 + i, j0 + j]
    transpose_tails(a, b, r_end, c_end)


transpose32 = _compile(transpose32)


def transpose(a, b):
    """b[j, i] = a[i, j] for 2-D float32 views with unit column strides: 16 x 16 blocks transposed in
    registers (``nbvector.tile16``), 2-3x faster than scalar tiles, which were themselves 2-4x faster than
    numpy's and torch's transposing copies here. Where the rows of ``b`` are a multiple of 4 KB apart (a
    4,096-row layer's outputs) the vector blocks took twice as long as 32 x 32 scalar tiles: every store
    of a block lands on one cache set, and those rows take the scalar tiles."""
    rows, cols = a.shape
    lda = np.uint64(a.strides[0] // 4)
    ldb = np.uint64(b.strides[0] // 4)
    if ldb % np.uint64(1024) == 0:
        transpose32(a, b)
        return
    r_end, c_end = rows - rows % 16, cols - cols % 16
    for i0 in range(0, r_end, 16):
        for j0 in range(0, c_end, 16):
            tile16(a, np.uint64(i0) * lda + np.uint64(j0), lda, b, np.uint64(j0) * ldb + np.uint64(i0), ldb)
    transpose_tails(a, b, r_end, c_end)


transpose.__qualname__ = f"transpose_{CODE_TAG}"  # calls nbvector's code (see nbvector._code_tag)
transpose = _compile(transpose)


def _copy(a, b):
    """b[:] = a for 2-D arrays of one shape, as a serial loop."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            b[i, j] = a[i, j]


copy = _compile(_copy)


def _spmv_source(shared: bool) -> Callable[..., None]:
    """y[r] += sum_k w[k] * x[starts[b] + indices[k]] over the nonzeros of row r in every block b, where w[k]
    is ``values[k]``, or ``book[values[k]]`` for a codebook (``values`` then holds the 8-bit codes); rows cut
    into ``tiles`` runs, one per thread, as in ``spmm``."""

    def spmv(indptr, starts, indices, values, book, x, y, tiles):
        n_rows = indptr.shape[1] - 1
        per = (n_rows + tiles - 1) // tiles
        for t in prange(tiles):
            for b in range(indptr.shape[0]):
                s0 = starts[b]
                for r in range(t * per, min(n_rows, (t + 1) * per)):
                    a0 = np.float32(0.0)
                    a1 = np.float32(0.0)
                    a2 = np.float32(0.0)
                    a3 = np.float32(0.0)
                    k = indptr[b, r]
                    e = indptr[b, r + 1]
                    while k + 4 <= e:
                        if shared:
                            v0 = book[np.int64(values[k])]
                            v1 = book[np.int64(values[k + 1])]
                            v2 = book[np.int64(values[k + 2])]
                            v3 = book[np.int64(values[k + 3])]
                        else:
                            v0 = np.float32(values[k])
                            v1 = np.float32(values[k + 1])
                            v2 = np.float32(values[k + 2])
                            v3 = np.float32(values[k + 3])
                        a0 += v0 * x[s0 + indices[k]]
                        a1 += v1 * x[s0 + indices[k + 1]]
                        a2 += v2 * x[s0 + indices[k + 2]]
                        a3 += v3 * x[s0 + indices[k + 3]]
                        k += 4
                    while k < e:
                        v0 = book[np.int64(values[k])] if shared else np.float32(values[k])
                        a0 += v0 * x[s0 + indices[k]]
                        k += 1
                    y[r] += (a0 + a1) + (a2 + a3)

    spmv.__qualname__ = f"spmv_{'shared' if shared else 'fp32'}"
    return spmv


def _spmm_source(width: int, shared: bool) -> Callable[..., None]:
    """A whole product for ``chunks`` chunks of ``w`` input vectors from vector ``first`` on: ``w`` is
    ``width`` when that is not 0 (a constant of the compiled code), else the argument ``n``. With ``by_row``
    the vectors are the rows of ``src`` (R, columns) and the results go to the rows of ``out`` (R, rows),
    else they are the columns of ``src`` (columns, R) and of ``out`` (rows, R). Each chunk is copied,
    transposed where it must be, to a flat (columns * w) run, zero past the last vector; its outputs start
    at ``bias``; every nonzero k then adds w[k] times its input run to its row's output run; the outputs
    go back to ``out``. Rows are cut into ``tiles`` runs, one per thread. One call does it all: separate
    calls for the copies cost a third of a small layer's time.

    Flat rows and unsigned offsets matter: numba wraps a negative signed index around and multiplies by
    each array's run-time stride, about ten instructions per nonzero that made up a third of the time."""

    vector = width == VECTOR_WIDTH  # whole rows in vector registers (``nbvector``)

    def spmm(indptr, starts, indices, values, book, src, bias, out, first, chunks, n, tiles, by_row):
        wi = width if width else n
        w = np.uint64(wi)
        n_rows = indptr.shape[1] - 1
        cols = src.shape[1] if by_row else src.shape[0]
        count = out.shape[0] if by_row else out.shape[1]
        x3 = np.empty((chunks, cols, wi), np.float32)
        y3 = np.empty((chunks, n_rows, wi), np.float32)
        # explicit loops, not array expressions: in a parallel build numba turns each of those into a
        # parallel region of its own (a row's bias fill woke the threads 4,096 times per call)
        for c in range(chunks):
            base = first + c * wi
            have = max(0, min(wi, count - base))
            if by_row:
                transpose(src[base : base + have], x3[c, :, :have])
            else:
                copy(src[:, base : base + have], x3[c, :, :have])
            for k in range(cols):
                for j in range(have, wi):
                    x3[c, k, j] = 0.0
            if not vector:  # the vector rows start from the bias themselves
                for r in range(n_rows):
                    for j in range(wi):
                        y3[c, r, j] = bias[r]
        x3 = x3.reshape(chunks, cols * wi)
        y3f = y3.reshape(chunks, n_rows * wi)
        per = (n_rows + tiles - 1) // tiles
        for t in prange(tiles):
            r0 = t * per
            r1 = min(n_rows, r0 + per)
            for c in range(chunks):
                xt = x3[c]
                y = y3f[c]
                for b in range(indptr.shape[0]):
                    s0 = starts[b]
                    for r in range(r0, r1):
                        k = np.uint64(indptr[b, r])
                        e = np.uint64(indptr[b, r + 1])
                        yo = np.uint64(r) * w
                        if vector:
                            row64(xt, y, indices, values, book, np.uint64(s0), k, e, yo, b == 0, bias[r])
                            continue
                        while k + np.uint64(4) <= e:
                            c0 = (s0 + indices[k]) * w
                            c1 = (s0 + indices[k + np.uint64(1)]) * w
                            c2 = (s0 + indices[k + np.uint64(2)]) * w
                            c3 = (s0 + indices[k + np.uint64(3)]) * w
                            if shared:
                                v0 = book[np.int64(values[k])]
                                v1 = book[np.int64(values[k + np.uint64(1)])]
                                v2 = book[np.int64(values[k + np.uint64(2)])]
                                v3 = book[np.int64(values[k + np.uint64(3)])]
                            else:
                                v0 = np.float32(values[k])
                                v1 = np.float32(values[k + np.uint64(1)])
                                v2 = np.float32(values[k + np.uint64(2)])
                                v3 = np.float32(values[k + np.uint64(3)])
                            for j in range(w):
                                y[yo + j] += (v0 * xt[c0 + j] + v1 * xt[c1 + j]) + (v2 * xt[c2 + j] + v3 * xt[c3 + j])
                            k += np.uint64(4)
                        while k < e:
                            c0 = (s0 + indices[k]) * w
                            v0 = book[np.int64(values[k])] if shared else np.float32(values[k])
                            for j in range(w):
                                y[yo + j] += v0 * xt[c0 + j]
                            k += np.uint64(1)
        for c in range(chunks):
            base = first + c * wi
            have = max(0, min(wi, count - base))
            if by_row:
                transpose(y3[c, :, :have], out[base : base + have])
            else:
                copy(y3[c, :, :have], out[:, base : base + have])

    # the tag: these call nbvector's code, which numba's cache does not check (see nbvector._code_tag)
    spmm.__qualname__ = f"spmm{width or 'n'}_{'shared' if shared else 'fp32'}_{CODE_TAG}"
    return spmm


# (serial, parallel) pairs: waking worker threads costs tens of microseconds per parallel loop, more than a
# small layer's whole product, and one thread needs none.
SPMV = {shared: (_jit(_spmv_source(shared), False), _jit(_spmv_source(shared), True)) for shared in (False, True)}
SPMM = {
    (width, shared): (_jit(_spmm_source(width, shared), False), _jit(_spmm_source(width, shared), True))
    for width in (0, CHUNK)
    for shared in (False, True)
}
