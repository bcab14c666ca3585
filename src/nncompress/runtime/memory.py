"""Bytes a model's weights hold, counting CSR and int8 packed weights at their real size."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from nncompress.runtime.quant import int8_bytes, is_int8


def tensor_bytes(t: torch.Tensor) -> int:
    if t.layout == torch.sparse_csr:
        return t.values().nbytes + t.crow_indices().nbytes + t.col_indices().nbytes
    return t.nbytes


def held_bytes(model: nn.Module) -> int:
    """Parameters and buffers of ``model``, each tensor once, plus dynamically quantized weights."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if is_int8(module):
            total += int8_bytes(module)
        for t in itertools.chain(module.parameters(recurse=False), module.buffers(recurse=False)):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += tensor_bytes(t)
    return total
