"""Physically remove dead neurons from a sequential model.

A unit with no remaining inputs outputs a constant (its activated bias):
that constant is folded into the next layer's bias and the unit is dropped.
A unit whose outputs are all pruned is dropped outright. Both are exact in
eval mode, so the shrunk model gives the same outputs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Identity,
                nn.Dropout)
_SHAPE_ONLY = (nn.MaxPool2d, nn.AvgPool2d, nn.MaxPool1d, nn.AvgPool1d, nn.Flatten)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class ShrinkReport:
    removed: dict[str, int]   # layer name -> output units removed
    sizes: dict[str, tuple[int, int]]  # layer name -> (in, out) units after removal
    applicable: bool = True
    reason: str = ""


def _units_out(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _pairs(seq: nn.Sequential) -> list[tuple[str, str, list[nn.Module]]] | None:
    items = list(seq.named_children())
    idx = [i for i, (_, m) in enumerate(items) if isinstance(m, _LAYERS)]
    pairs = []
    for a, b in zip(idx[:-1], idx[1:]):
        between = [m for _, m in items[a + 1:b]]
        if not all(isinstance(m, _ELEMENTWISE + _SHAPE_ONLY) for m in between):
            return None
        pairs.append((items[a][0], items[b][0], between))
    return pairs


def _block(layer_a: nn.Module, layer_b: nn.Module) -> int:
    """How many inputs of layer b each output unit of layer a feeds (the spatial size after a Flatten)."""
    units = _units_out(layer_a)
    fan = layer_b.in_features if isinstance(layer_b, nn.Linear) else layer_b.in_channels
    if fan % units:
        raise ValueError(f"cannot map {units} outputs onto {fan} inputs")
    return fan // units


def _activated(value: torch.Tensor, between: list[nn.Module]) -> torch.Tensor:
    out = value
    for m in between:
        if isinstance(m, _ELEMENTWISE) and not isinstance(m, nn.Dropout):
            out = m(out)
    return out


def _slice_out(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    w = m.weight.detach()[keep]
    b = m.bias.detach()[keep] if m.bias is not None else None
    return _rebuild(m, w, b)


def _slice_in(m: nn.Module, keep_cols: torch.Tensor) -> nn.Module:
    return _rebuild(m, m.weight.detach()[:, keep_cols], m.bias.detach() if m.bias is not None else None)


def _rebuild(m: nn.Module, w: torch.Tensor, b: torch.Tensor | None) -> nn.Module:
    if isinstance(m, nn.Linear):
        new: nn.Module = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    else:
        cls = type(m)
        new = cls(w.shape[1] * m.groups, w.shape[0], m.kernel_size, stride=m.stride, padding=m.padding,
                  dilation=m.dilation, groups=m.groups, bias=b is not None, padding_mode=m.padding_mode)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def remove_dead_neurons_(model: nn.Module) -> ShrinkReport:
    """Shrink a sequential ``model`` in place; report what was removed."""
    if not isinstance(model, nn.Sequential):
        return ShrinkReport({}, {}, False, "model is not an nn.Sequential; dead neurons left in place")
    pairs = _pairs(model)
    if pairs is None:
        return ShrinkReport({}, {}, False, "a module between two layers is not elementwise/pooling")
    if any(getattr(model, n).groups != 1 for a, b, _ in pairs for n in (a, b)
           if not isinstance(getattr(model, n), nn.Linear)):
        return ShrinkReport({}, {}, False, "grouped convolutions are not shrunk")
    removed: dict[str, int] = {}
    changed = True
    while changed:
        changed = False
        for a, b, between in pairs:
            la, lb = getattr(model, a), getattr(model, b)
            block = _block(la, lb)
            units = _units_out(la)
            wa = la.weight.detach().reshape(units, -1)
            wb = lb.weight.detach()
            wb_units = wb.transpose(0, 1).reshape(units, block, wb.shape[0], -1)  # unit, block, out, k
            no_out = (wb_units != 0).flatten(1).sum(1) == 0
            no_in = (wa != 0).sum(1) == 0
            bias = la.bias.detach() if la.bias is not None else torch.zeros(units)
            const = _activated(bias.clone(), between)
            foldable = (const == 0) | ((lb.bias is not None) & (isinstance(lb, nn.Linear) or all(
                p == 0 for p in (lb.padding if isinstance(lb.padding, tuple) else (1,)))))
            dead = no_out | (no_in & foldable)
            if dead.all():
                dead[0] = False  # a layer keeps at least one unit
            if not dead.any():
                continue
            fold = no_in & ~no_out & dead & (const != 0)
            if fold.any():
                contrib = (wb_units[fold].sum(dim=(1, 3)) * const[fold][:, None]).sum(0)  # out units of b
                with torch.no_grad():
                    lb.bias.add_(contrib)
            keep = ~dead
            keep_cols = keep.repeat_interleave(block)
            setattr(model, a, _slice_out(la, keep))
            setattr(model, b, _slice_in(lb, keep_cols))
            removed[a] = removed.get(a, 0) + int(dead.sum())
            changed = True
    sizes = {}
    for name, m in model.named_children():
        if isinstance(m, _LAYERS):
            sizes[name] = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels,
                                                                                            m.out_channels)
    log.info("dead neurons removed: %s", removed)
    return ShrinkReport(removed, sizes)
