"""Which layers are prunable, and the pure threshold rule."""
from __future__ import annotations

import torch
from torch import nn

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and convolution layers by qualified name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def layer_kind(module: nn.Module) -> str:
    return "fc" if isinstance(module, nn.Linear) else "conv"


def threshold_mask(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep weights whose magnitude reaches the threshold."""
    return weight.detach().abs() >= threshold


def std_threshold(std: float, q: float) -> float:
    """Han et al.'s rule: the threshold is q standard deviations."""
    return q * std
