"""Masks as plain boolean tensors kept beside the model, never on it.

Pruned weights are re-zeroed after every optimizer step, so momentum and
weight decay cannot revive them; nothing (no hooks, no ``*_orig`` copies)
is left on the model for a checkpoint to pick up.
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

Masks = dict[str, torch.Tensor]


def initial_masks(layers: Mapping[str, nn.Module]) -> Masks:
    """Masks that keep every weight not already zero (so a pruned model stays pruned)."""
    return {name: m.weight.detach() != 0 for name, m in layers.items()}


@torch.no_grad()
def apply_masks_(layers: Mapping[str, nn.Module], masks: Masks) -> None:
    for name, mask in masks.items():
        layers[name].weight.mul_(mask)


def densities(masks: Masks) -> dict[str, float]:
    return {name: float(mask.float().mean()) for name, mask in masks.items()}


def overall_density(masks: Masks) -> float:
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return kept / max(1, total)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all weights and biases, nonzero ones)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p)) for p in params)


def snapshot(model: nn.Module, masks: Masks) -> tuple[dict[str, torch.Tensor], Masks]:
    return copy.deepcopy(model.state_dict()), {k: v.clone() for k, v in masks.items()}


def restore_(model: nn.Module, masks: Masks, saved: tuple[dict[str, torch.Tensor], Masks]) -> None:
    state, saved_masks = saved
    model.load_state_dict(state)
    masks.clear()
    masks.update({k: v.clone() for k, v in saved_masks.items()})
