"""Masks as plain boolean tensors kept beside the model, never on it.

Pruned weights are re-zeroed after every optimizer step, so momentum and
weight decay cannot revive them; nothing (no hooks, no ``*_orig`` copies)
is left on the model for a checkpoint to pick up.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import numpy as np

import torch
from torch import nn

from nncompress.chunked import chunks
from nncompress.layers import Compressible
from nncompress.pruning.masks import count_kept

Masks = dict[str, torch.Tensor]


def initial_masks(layers: Mapping[str, Compressible]) -> Masks:
    """Masks that keep every weight not already zero (so a pruned model stays pruned)."""
    return {name: m.weight.detach() != 0 for name, m in layers.items()}


@torch.no_grad()
def apply_masks_(layers: Mapping[str, Compressible], masks: Masks) -> None:
    """Zero the pruned weights, a chunk at a time (``mul_`` by a bool mask widens it to float)."""
    for name, mask in masks.items():
        weight = layers[name].weight
        if not weight.is_contiguous() or weight.shape != mask.shape:
            weight.mul_(mask)
            continue
        flat, keep = weight.view(-1), mask.reshape(-1)
        for part in chunks(flat.numel()):
            flat[part].mul_(keep[part])


def densities(masks: Masks) -> dict[str, float]:
    return {name: count_kept(mask) / max(1, mask.numel()) for name, mask in masks.items()}


def overall_density(masks: Masks) -> float:
    kept = sum(count_kept(m) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return kept / max(1, total)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all weights and biases, nonzero ones)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p)) for p in params)


#: masks of at least this many bytes are held at one bit per weight while the model trains
PACK_BYTES = 32 * 2**20


class PackedMasks:
    """Masks at one bit per weight (an eighth of a bool mask), applied a chunk at a time.

    Fine-tuning VGG-16 holds the model, its momentum and its largest layer's gradient; its
    bool masks would add a quarter of the model on top, which is what packing saves."""

    def __init__(self, masks: Masks) -> None:
        self.shapes = {n: m.shape for n, m in masks.items()}
        self.bits = {n: np.packbits(m.detach().cpu().numpy().reshape(-1)) for n, m in masks.items()}

    def _chunk(self, name: str, part: slice, device: torch.device) -> torch.Tensor:
        data = self.bits[name][part.start // 8 : (part.stop + 7) // 8]  # CHUNK is a multiple of 8
        bits = np.unpackbits(data, count=part.stop - part.start).view(np.bool_)
        return torch.from_numpy(bits).to(device)

    @torch.no_grad()
    def apply_(self, layers: Mapping[str, Compressible]) -> None:
        """``apply_masks_`` from the packed bits."""
        for name in self.bits:
            flat = layers[name].weight.view(-1)
            for part in chunks(flat.numel()):
                flat[part].mul_(self._chunk(name, part, flat.device))

    def unpack(self, device: Mapping[str, torch.device]) -> Masks:
        out: Masks = {}
        for name, shape in self.shapes.items():
            n = math.prod(shape)
            mask = torch.empty(n, dtype=torch.bool, device=device[name])
            for part in chunks(n):
                mask[part] = self._chunk(name, part, device[name])
            out[name] = mask.view(shape)
        return out


_Finetune = Callable[[Iterable[nn.Parameter], int, Callable[[], None]], None]


def packing_masks(finetune: _Finetune, layers: Mapping[str, Compressible], masks: Masks) -> _Finetune:
    """``finetune`` that holds ``masks`` packed while it trains, when they are ``PACK_BYTES``
    or more and every masked weight is contiguous; the dict gets equal bool masks back after."""

    def tune(params: Iterable[nn.Parameter], epochs: int, after_step: Callable[[], None]) -> None:
        size = sum(m.numel() for m in masks.values())
        if size < PACK_BYTES or not all(layers[n].weight.is_contiguous() for n in masks):
            finetune(params, epochs, after_step)
            return
        packed = PackedMasks(masks)
        devices = {n: m.device for n, m in masks.items()}
        masks.clear()
        try:
            finetune(params, epochs, lambda: packed.apply_(layers))
        finally:
            masks.update(packed.unpack(devices))

    return tune
