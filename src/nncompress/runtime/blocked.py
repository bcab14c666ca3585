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
from types import ModuleType
from typing import Optional

import numpy as np
import torch

from nncompress.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

BLOCK_COLS = 2048  # a 64-wide input chunk's slice is 512 KB: with a 4,096-row output (1 MB) it fits the 2 MB L2
CHUNK = 64  # input vectors per pass over the weights (conv im2col gives thousands)
BOOK = 256  # codebook entries an 8-bit index reaches
PARALLEL_WORK = 1_000_000  # multiply-adds (nonzeros x input vectors) from which a call uses more than one thread

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


def _chunked(xt: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``xt`` (columns, R) as (chunks, columns, n) with chunks * n >= R (zero padded), n <= ``CHUNK``."""
    cols, width = xt.shape
    chunks = -(-width // CHUNK)
    if chunks == 1:
        return xt.contiguous().unsqueeze(0), width
    n = -(-width // chunks)
    if chunks * n != width:
        xt = torch.cat([xt, xt.new_zeros(cols, chunks * n - width)], 1)
    return xt.reshape(cols, chunks, n).permute(1, 0, 2).contiguous(), n


def matmul(parts: dict[str, torch.Tensor], xt: torch.Tensor, bias_col: Optional[torch.Tensor]) -> torch.Tensor:
    """W @ xt (+ bias per output row): (rows, R) from ``xt`` (columns, R), float32."""
    mod = kernels()
    if mod is None:
        raise ConfigError("the numba kernels need numba: pip install 'nncompress[runtime]'")
    if xt.dtype != torch.float32 or xt.device.type != "cpu":
        raise ModelError(
            f"the sparse kernels take float32 inputs on the CPU; got {xt.dtype} on {xt.device}: "
            "convert the input (x.float().cpu())"
        )
    threads = set_threads()
    indptr = parts["indptr"].numpy()
    starts = parts["starts"].numpy()
    indices = parts["indices"].numpy().view(np.uint16)
    n_rows, width = indptr.shape[1] - 1, xt.shape[1]
    shared = "codes" in parts
    parallel = threads > 1 and indices.shape[0] * width >= PARALLEL_WORK
    if width == 1:
        y = torch.zeros(n_rows) if bias_col is None else bias_col.reshape(n_rows).clone()
        x = xt.reshape(-1).contiguous().numpy()
        if shared:
            _call(
                mod.spmv_shared,
                parallel,
                indptr,
                starts,
                indices,
                parts["codes"].numpy(),
                parts["book"].numpy(),
                x,
                y.numpy(),
            )
        else:
            _call(mod.spmv, parallel, indptr, starts, indices, parts["values"].numpy(), x, y.numpy())
        return y.reshape(n_rows, 1)
    x3, n = _chunked(xt)
    chunks = x3.shape[0]
    y3 = (
        torch.zeros(chunks, n_rows, n)
        if bias_col is None
        else torch.empty(chunks, n_rows, n).copy_(bias_col.reshape(1, n_rows, 1).expand(chunks, n_rows, n))
    )
    if shared:
        _call(
            mod.spmm_shared,
            parallel,
            indptr,
            starts,
            indices,
            parts["codes"].numpy(),
            parts["book"].numpy(),
            x3.numpy(),
            y3.numpy(),
        )
    else:
        _call(mod.spmm, parallel, indptr, starts, indices, parts["values"].numpy(), x3.numpy(), y3.numpy())
    if chunks == 1:
        return y3[0]
    return y3.permute(1, 0, 2).reshape(n_rows, chunks * n)[:, :width]


def transposed(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of the 2-D float32 ``t`` transposed; numpy's copy took half the time of torch's
    ``t().contiguous()`` for a (64, 784) input, which matters next to a small layer's product."""
    return torch.from_numpy(np.ascontiguousarray(t.detach().numpy().T))


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
    x1, x3, y1, y3 = (
        np.ones(3, np.float32),
        np.ones((1, 3, 2), np.float32),
        np.zeros(2, np.float32),
        np.zeros((1, 2, 2), np.float32),
    )
    for shared in (False, True):
        parts = build(matrix, shared=shared)
        head = [parts["indptr"].numpy(), parts["starts"].numpy(), parts["indices"].numpy().view(np.uint16)]
        vals = [parts["codes"].numpy(), parts["book"].numpy()] if shared else [parts["values"].numpy()]
        for parallel in (False, True):
            _call(mod.spmv_shared if shared else mod.spmv, parallel, *head, *vals, x1, y1)
            _call(mod.spmm_shared if shared else mod.spmm, parallel, *head, *vals, x3, y3)
    seconds = time.perf_counter() - start
    _READY.append(seconds)
    log.info("numba sparse kernels ready in %.2f s", seconds)
    return seconds
