"""Pruned weight matrices as torch sparse CSR blocks, multiplied on MKL.

torch's CPU build calls MKL's sparse BLAS for a CSR matrix times a dense one
(int32 indices avoid a conversion on every call). Splitting the columns into
blocks keeps the slice of the input each block reads in L2 cache when many rows
are multiplied at once (bench/results/runtime_bench.md has the measurements).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

# A block's slice of the input (columns x rows x 4 bytes) should stay within about this many bytes.
CACHE_BYTES = 256 * 1024
MIN_BLOCK = 256


def block_width(n_cols: int, rows: int) -> int:
    """Columns per block for ``rows`` input rows: the whole matrix when its input slice fits, else a power
    of two whose slice fits ``CACHE_BYTES`` (at least ``MIN_BLOCK`` columns)."""
    if n_cols * max(1, rows) * 4 <= CACHE_BYTES:
        return n_cols
    width = MIN_BLOCK
    while width * 2 * rows * 4 <= CACHE_BYTES:
        width *= 2
    return min(n_cols, width)


def csr_blocks(matrix: torch.Tensor, width: int) -> list[torch.Tensor]:
    """``matrix`` (2-D, dense) as CSR tensors of ``width`` columns each, int32 indices."""
    out = []
    for start in range(0, matrix.shape[1], width):
        part = matrix[:, start : start + width]
        rows, cols = part.nonzero(as_tuple=True)
        counts = torch.bincount(rows, minlength=part.shape[0])
        crow = torch.zeros(part.shape[0] + 1, dtype=torch.int32)
        crow[1:] = torch.cumsum(counts, 0)
        out.append(
            torch.sparse_csr_tensor(crow, cols.to(torch.int32), part[rows, cols].contiguous(), size=tuple(part.shape))
        )
    return out


def csr_matmul(blocks: Sequence[torch.Tensor], xt: torch.Tensor, bias_col: Optional[torch.Tensor]) -> torch.Tensor:
    """sum_j blocks[j] @ xt[rows of block j] (+ bias per output row): (out, R) from ``xt`` (in, R)."""
    start = 0
    y: Optional[torch.Tensor] = None
    for block in blocks:
        part = xt[start : start + block.shape[1]]
        start += block.shape[1]
        if y is None:
            y = torch.addmm(bias_col, block, part) if bias_col is not None else torch.mm(block, part)
        else:
            y.addmm_(block, part)
    if y is None:
        raise ValueError("a CSR matrix needs at least one column block")
    return y


def csr_bytes(blocks: Sequence[torch.Tensor]) -> int:
    """Bytes the blocks hold: values and both index arrays."""
    return sum(b.values().nbytes + b.crow_indices().nbytes + b.col_indices().nbytes for b in blocks)
