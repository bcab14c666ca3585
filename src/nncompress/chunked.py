"""Element-wise passes over large tensors a chunk at a time.

A whole-tensor ``abs()``, ``isfinite()`` or ``mul_(bool mask)`` allocates a temporary the
size of the tensor (VGG-16's first fully connected layer: 0.4 GB each time). Done in
chunks, the temporaries stay at 64 MB, which is what keeps a large model's stages inside
their memory bound.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

__all__ = ["CHUNK", "all_finite", "chunks"]

#: elements per pass (64 MB of float32)
CHUNK = 1 << 24


def chunks(n: int, size: Optional[int] = None) -> Iterator[slice]:
    """Slices of ``range(n)``, ``size`` (default ``CHUNK``) elements each."""
    step = CHUNK if size is None else size
    return (slice(i, min(n, i + step)) for i in range(0, n, step))


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in ``t`` (True for non-float tensors)."""
    if not (t.is_floating_point() or t.is_complex()):
        return True
    flat = t.detach().reshape(-1)
    return all(bool(torch.isfinite(flat[part]).all()) for part in chunks(flat.numel()))
