"""Pruned weight matrices as column-blocked CSR for the numba kernels (``nbkernels``).

Why beside torch's CSR (MKL): on the benchmark machine neither wins everywhere (see
bench/results/runtime_bench.md), MKL's threads slow badly on cores shared with other
work, and 16-bit indices and codebooks hold fewer bytes. The format: per
block of at most ``BLOCK_COLS`` columns, row pointers (int64, one row per block),
16-bit column indices relative to the block's first column, and fp32 values, or, for
a weight-shared layer (at most 256 distinct nonzero values, as k-means sharing leaves
it), 8-bit indices into a 256-entry codebook: the very same values in half the bytes.
The codebook form measured no faster: at batch 1 a kernel spends about 0.7 ns per
nonzero with its weights in cache and about 1.8 ns reading them from memory, whether a
nonzero takes 8, 6 or 3 bytes (so the limit is loads in flight, not bandwidth; a software
prefetch 512 nonzeros ahead did not change it either). It is used for the memory it
saves, not for speed.

numba is optional (the ``runtime`` extra): without it the runtime keeps torch's CSR and
says so once in the log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

import numpy as np
import torch

from nncompress.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

BLOCK_COLS = 2048  # a 64-wide input chunk's slice is 512 KB: with a 4,096-row output (1 MB) it fits the 2 MB L2
CHUNK = 64  # input vectors per chunk, the width the main kernels are compiled for; the rest of a call is one chunk
BOOK = 256  # codebook entries an 8-bit index reaches
PARALLEL_WORK = 8_000_000  # multiply-adds (nonzeros x input vectors) from which a call uses more than one thread
PARALLEL_NONZEROS = 250_000  # nonzeros from which a one-vector product uses more than one thread
TILES_PER_THREAD = 4  # runs of rows per thread in a parallel call

_KERNELS: dict[str, Optional[ModuleType]] = {}
_READY: list[float] = []  # seconds the first warm_up took
_LOCK = threading.Lock()  # numba's workqueue threads take one parallel call at a time


def kernels() -> Optional[ModuleType]:
    """The compiled kernel module, or None when numba is not installed (logged once)."""
    if "mod" not in _KERNELS:
        try:
            import numba

            if "NUMBA_THREADING_LAYER" not in os.environ:
                # numba's OpenMP layer spins waiting workers: on cores shared with other work a kernel took
                # 30x longer; the workqueue's threads sleep. A layer the user names is kept.
                # (numba.config's settings are made from the environment at import, not declared)
                numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]
            from nncompress.runtime import nbkernels

            mod: Optional[ModuleType] = nbkernels
        except ImportError as exc:
            log.info(
                "numba is not installed (%s): sparse layers run on torch's CSR (MKL), which is slower; "
                "pip install 'nncompress[runtime]' for the numba kernels",
                exc,
            )
            mod = None
        _KERNELS["mod"] = mod
    return _KERNELS["mod"]


def available() -> bool:
    return kernels() is not None


def set_threads() -> int:
    """numba's worker count follows torch's (``torch.set_num_threads``), within numba's pool size."""
    import numba

    want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
    return want


def _call(pair: tuple, parallel: bool, *args: object) -> None:
    if not parallel:
        pair[0](*args)
        return
    with _LOCK:
        pair[1](*args)


def codebook(matrix: torch.Tensor) -> Optional[torch.Tensor]:
    """The sorted distinct nonzero values of ``matrix`` when there are at most ``BOOK`` of them, else None."""
    values = matrix[matrix != 0]
    if values.numel() == 0:
        return None
    book = torch.unique(values)
    return book if book.numel() <= BOOK else None


def build(matrix: torch.Tensor, shared: bool = False, width: int = BLOCK_COLS) -> dict[str, torch.Tensor]:
    """``matrix`` (2-D float32, dense with zeros) as blocked CSR tensors: ``indptr`` (blocks, rows + 1),
    ``starts`` (first column of each block), ``indices`` (int16 holding uint16) and ``values``, or
    ``codes`` (uint8) and ``book`` (256 float32) when ``shared`` (the matrix must have a codebook)."""
    if not 1 <= width <= 65536:
        raise ConfigError(f"block width must be 1..65536 columns (16-bit indices), got {width}")
    matrix = matrix.detach().to(torch.float32)
    n_rows, n_cols = matrix.shape
    starts = list(range(0, max(1, n_cols), width))
    indptr = torch.zeros(len(starts), n_rows + 1, dtype=torch.int64)
    indices, values = [], []
    offset = 0
    for b, start in enumerate(starts):
        part = matrix[:, start : start + width]
        rows, cols = part.nonzero(as_tuple=True)
        indptr[b, 0] = offset
        indptr[b, 1:] = offset + torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
        offset += rows.numel()
        indices.append(cols.to(torch.int16))  # wraps above 32767: read back as uint16
        values.append(part[rows, cols])
    out = {
        "indptr": indptr,
        "starts": torch.tensor(starts, dtype=torch.int64),
        "indices": torch.cat(indices) if indices else torch.zeros(0, dtype=torch.int16),
    }
    flat = torch.cat(values) if values else torch.zeros(0)
    if shared:
        book = codebook(matrix)
        if book is None:
            raise ConfigError(
                f"the matrix has more than {BOOK} distinct nonzero values: no 8-bit codebook; "
                'use the engine with fp32 values ("numba")'
            )
        out["codes"] = torch.searchsorted(book, flat).to(torch.uint8)
        out["book"] = torch.cat([book, torch.zeros(BOOK - book.numel())]).contiguous()
    else:
        out["values"] = flat.contiguous()
    return out


def _tiles(threads: int, n_rows: int, parallel: bool) -> int:
    """How many runs of rows a call's threads share out."""
    return max(1, min(threads * TILES_PER_THREAD, n_rows)) if parallel else 1


def _spmm(mod: ModuleType, width: int, shared: bool) -> tuple:
    """The (serial, parallel) product kernels for chunks of ``width``: compiled for ``CHUNK``, else any width."""
    return mod.SPMM[(CHUNK if width == CHUNK else 0, shared)]


def _plan(count: int) -> list[tuple[int, int, int]]:
    """(width, first, chunks) runs that cover ``count`` input vectors: chunks of ``CHUNK``, then one chunk of
    the rest."""
    full = count // CHUNK
    plan = [(CHUNK, 0, full)] if full else []
    if count > full * CHUNK:
        plan.append((count - full * CHUNK, full * CHUNK, 1))
    return plan


@dataclass(frozen=True)
class Prepared:
    """The kernels' arguments for one matrix as numpy arrays: (indptr, starts, indices as uint16),
    (values or codes, codebook) and the bias per row (zeros without one), with the counts a call reads.
    Made once per matrix: from the tensors on every call they took 5 us, a fifth of a LeNet layer's
    product at batch 1, and every attribute or property read on the call path costs a tenth of one."""

    head: tuple[np.ndarray, ...]
    vals: tuple[np.ndarray, ...]
    shared: bool
    bias: np.ndarray
    n_rows: int
    nonzeros: int


def prepare(parts: dict[str, torch.Tensor], bias_col: Optional[torch.Tensor] = None) -> Prepared:
    """The arrays the kernels take, viewing (not copying) the tensors of ``build`` and ``bias_col``."""
    head = (parts["indptr"].numpy(), parts["starts"].numpy().view(np.uint64), parts["indices"].numpy().view(np.uint16))
    n_rows = int(head[0].shape[1]) - 1
    bias = np.zeros(n_rows, np.float32) if bias_col is None else bias_col.detach().numpy().reshape(n_rows)
    if "codes" in parts:
        vals: tuple[np.ndarray, ...] = (parts["codes"].numpy(), parts["book"].numpy())
    else:
        vals = (parts["values"].numpy(), _NO_BOOK)
    return Prepared(head, vals, "codes" in parts, bias, n_rows, int(head[2].shape[0]))


_NO_BOOK = np.zeros(1, np.float32)


def _multiply(args: Prepared, src: np.ndarray, by_row: bool, one_thread: bool) -> np.ndarray:
    """W x^T (+ bias): (R, rows) from ``src`` = x (R, columns) when ``by_row`` (``nn.Linear``'s layout),
    else W xt as (rows, R) from ``src`` = xt (columns, R) (im2col's): one kernel call for the chunks of
    ``CHUNK`` vectors, one for the rest. numba's thread count is read and set only for a parallel call:
    the two calls cost 1 us, a thirtieth of a LeNet layer's product at batch 64; a serial call of one
    chunk goes straight to its kernel (the plan, the lock and the tiles took another microsecond)."""
    mod = _KERNELS["mod"]
    assert mod is not None
    count = src.shape[0 if by_row else 1]
    out = np.empty((count, args.n_rows) if by_row else (args.n_rows, count), np.float32)
    head, (values, book), bias = args.head, args.vals, args.bias
    parallel = not one_thread and args.nonzeros * count >= PARALLEL_WORK and torch.get_num_threads() > 1
    if not parallel and count == CHUNK:
        _spmm(mod, CHUNK, args.shared)[0](*head, values, book, src, bias, out, 0, 1, CHUNK, 1, by_row)
        return out
    tiles = _tiles(set_threads(), args.n_rows, True) if parallel else 1
    for width, first, chunks in _plan(count):
        kernel = _spmm(mod, width, args.shared)
        _call(kernel, parallel, *head, values, book, src, bias, out, first, chunks, width, tiles, by_row)
    return out


def _check(xt: torch.Tensor) -> ModuleType:
    """The kernel module, once ``xt`` is an input it can take."""
    mod = kernels()
    if mod is None:
        raise ConfigError("the numba kernels need numba: pip install 'nncompress[runtime]'")
    if xt.dtype != torch.float32 or not xt.is_cpu:
        raise ModelError(
            f"the sparse kernels take float32 inputs on the CPU; got {xt.dtype} on {xt.device}: "
            "convert the input (x.float().cpu())"
        )
    return mod


def _array(x: torch.Tensor) -> np.ndarray:
    """``x`` as a C-contiguous numpy array, a view where it already is one."""
    if not x.is_contiguous():
        x = x.contiguous()
    return x.detach().numpy() if x.requires_grad else x.numpy()


def linear(args: Prepared, x: torch.Tensor, one_thread: bool = False) -> torch.Tensor:
    """x W^T (+ bias): (R, rows) from ``x`` (R, columns), float32; the layout of ``nn.Linear``. ``one_thread``:
    never more than one thread. The usual input (float32 on the CPU, contiguous, no gradient, kernels
    loaded) skips the checks that explain the others."""
    if x.dtype is not torch.float32 or not x.is_cpu or _KERNELS.get("mod") is None:
        _check(x)
    if x.shape[0] == 1:
        return matmul(args, x.reshape(-1, 1), one_thread).reshape(1, -1)
    return torch.from_numpy(_multiply(args, _array(x), True, one_thread))


def matmul(args: Prepared, xt: torch.Tensor, one_thread: bool = False) -> torch.Tensor:
    """W @ xt (+ bias per output row): (rows, R) from ``xt`` (columns, R), float32; the layout of im2col."""
    mod = _check(xt)
    if xt.shape[1] != 1:
        return torch.from_numpy(_multiply(args, _array(xt), False, one_thread))
    n_rows = args.n_rows
    parallel = not one_thread and args.nonzeros >= PARALLEL_NONZEROS and torch.get_num_threads() > 1
    tiles = _tiles(set_threads(), n_rows, True) if parallel else 1
    y1 = args.bias.copy()
    _call(mod.SPMV[args.shared], parallel, *args.head, *args.vals, _array(xt).reshape(-1), y1, tiles)
    return torch.from_numpy(y1).reshape(n_rows, 1)


def part_bytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.nbytes for t in parts.values())


def warm_up() -> float:
    """Seconds to make every kernel ready: compiling them, or loading numba's cache of them (fast after the
    first run on a machine). The runtime calls it once when it first builds a numba kernel."""
    mod = kernels()
    if mod is None or _READY:
        return 0.0
    start = time.perf_counter()
    matrix = torch.tensor([[0.5, 0.0, -1.0], [0.0, 0.0, 0.5]])
    x1, y1 = np.ones(3, np.float32), np.zeros(2, np.float32)
    for shared in (False, True):
        args = prepare(build(matrix, shared=shared))
        for parallel in (False, True):
            _call(mod.SPMV[shared], parallel, *args.head, *args.vals, x1, y1, 1)
            for width in (3, CHUNK):
                kernel = _spmm(mod, width, shared)
                for by_row in (True, False):
                    src = np.ones((width, 3) if by_row else (3, width), np.float32)
                    out = np.empty((width, 2) if by_row else (2, width), np.float32)
                    bias = np.zeros(2, np.float32)
                    _call(kernel, parallel, *args.head, *args.vals, src, bias, out, 0, 1, width, 1, by_row)
    seconds = time.perf_counter() - start
    _READY.append(seconds)
    log.info("numba sparse kernels ready in %.2f s", seconds)
    return seconds
