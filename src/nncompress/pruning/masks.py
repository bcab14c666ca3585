"""Which layers are prunable, and the pure threshold rule."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from nncompress.chunked import chunks
from nncompress.layers import Compressible, layer_kind, select_layers

__all__ = [
    "PRUNABLE",
    "DEFAULT_PRUNE_LAYERS",
    "count_kept",
    "layer_kind",
    "prunable_layers",
    "std_threshold",
    "threshold_mask",
]

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: the layers pruned unless a config says otherwise (embeddings are opted in with "embedding")
DEFAULT_PRUNE_LAYERS = "fc,conv"


def prunable_layers(model: nn.Module, spec: str = DEFAULT_PRUNE_LAYERS, exclude: str = "") -> dict[str, Compressible]:
    """The layers a pruner works on, by qualified name, in registration order:
    by default every Linear and convolution (see ``nncompress.layers.select_layers``)."""
    return select_layers(model, spec, exclude, what="prune layers")


@torch.no_grad()
def threshold_mask(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep weights whose magnitude reaches the threshold."""
    flat = weight.detach().reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.bool, device=flat.device)
    for part in chunks(flat.numel()):
        torch.ge(flat[part].abs(), threshold, out=out[part])
    return out.view(weight.shape)


@torch.no_grad()
def count_kept(mask: torch.Tensor, weight: Optional[torch.Tensor] = None, threshold: float = 0.0) -> int:
    """Weights ``mask`` keeps; with ``weight``, only those that also reach ``threshold``
    (a bool ``sum()`` would first widen the mask to int64, eight times its size)."""
    if weight is None:
        return int(torch.count_nonzero(mask))
    flat, keep = weight.detach().reshape(-1), mask.reshape(-1)
    return sum(int(torch.count_nonzero(keep[part] & (flat[part].abs() >= threshold))) for part in chunks(flat.numel()))


def std_threshold(std: float, q: float) -> float:
    """Han et al.'s rule: the threshold is q standard deviations."""
    return q * std
