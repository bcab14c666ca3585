"""Which layers are prunable, and the pure threshold rule."""
from __future__ import annotations

import torch
from torch import nn

from nncompress.layers import layer_kind, select_layers

__all__ = ["PRUNABLE", "DEFAULT_PRUNE_LAYERS", "layer_kind", "prunable_layers", "std_threshold", "threshold_mask"]

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: the layers pruned unless a config says otherwise (embeddings are opted in with "embedding")
DEFAULT_PRUNE_LAYERS = "fc,conv"


def prunable_layers(model: nn.Module, spec: str = DEFAULT_PRUNE_LAYERS, exclude: str = "") -> dict[str, nn.Module]:
    """The layers a pruner works on, by qualified name, in registration order:
    by default every Linear and convolution (see ``nncompress.layers.select_layers``)."""
    return select_layers(model, spec, exclude, what="prune layers")


def threshold_mask(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep weights whose magnitude reaches the threshold."""
    return weight.detach().abs() >= threshold


def std_threshold(std: float, q: float) -> float:
    """Han et al.'s rule: the threshold is q standard deviations."""
    return q * std
