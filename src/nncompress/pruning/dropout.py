"""Dropout adjusted to the pruned size: D_r = D_o * sqrt(C_ir / C_io).

A pruned layer has fewer connections, so less co-adaptation to break; the
rate of each Dropout is scaled by the square root of the kept fraction of
the connections of the layer it feeds.
"""

from __future__ import annotations

import math
from typing import Mapping

from torch import nn

from nncompress.pruning.masks import PRUNABLE


def dropout_targets(model: nn.Module) -> dict[str, str]:
    """Dropout module name -> name of the next prunable layer in module order."""
    pairs: dict[str, str] = {}
    pending: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            pending.append(name)
        elif isinstance(module, PRUNABLE):
            for d in pending:
                pairs[d] = name
            pending = []
    return pairs


def original_rates(model: nn.Module) -> dict[str, float]:
    return {name: float(m.p) for name, m in model.named_modules() if isinstance(m, nn.Dropout)}


def adjust_dropout_(model: nn.Module, rates: Mapping[str, float], densities: Mapping[str, float]) -> dict[str, float]:
    """Set each Dropout's rate from its original rate and its layer's density."""
    modules = dict(model.named_modules())
    new: dict[str, float] = {}
    for drop, layer in dropout_targets(model).items():
        if drop in rates and layer in densities:
            modules[drop].p = rates[drop] * math.sqrt(densities[layer])
            new[drop] = modules[drop].p
    return new
