"""Resize a freshly built model's layers to a state whose dead neurons were removed.

A factory rebuilds the original layer sizes; after dead-neuron removal the
stored tensors are smaller along the unit dimensions only (a Linear's rows
and columns, a convolution's output and input channels, a BatchNorm's
features, an embedding's width). Those dimensions, and only those, may be
fitted, and only downwards: any other difference is a different model, and
is left for the strict loader to report.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _smaller(stored: tuple[int, ...], built: tuple[int, ...], free: tuple[int, ...]) -> bool:
    """Whether ``stored`` equals ``built`` except for some ``free`` dims, which may only shrink (to >= 1)."""
    if len(stored) != len(built):
        return False
    return all(s == b or (i in free and 1 <= s < b) for i, (s, b) in enumerate(zip(stored, built, strict=True)))


def _plan(module: nn.Module, shapes: dict[str, tuple[int, ...]]) -> Optional[tuple[dict[str, int], bool, bool]]:
    """New size attributes for ``module`` given its stored tensor shapes, and whether
    its outputs and its inputs shrink; None if the shapes cannot come from removal."""
    w = shapes.get("weight")
    if isinstance(module, nn.Linear) and w is not None:
        if not _smaller(w, tuple(module.weight.shape), (0, 1)) or shapes.get("bias", (w[0],)) != (w[0],):
            return None
        return ({"out_features": w[0], "in_features": w[1]}, w[0] < module.out_features, w[1] < module.in_features)
    if isinstance(module, _CONV) and w is not None and module.groups == 1 and not module.transposed:
        if not _smaller(w, tuple(module.weight.shape), (0, 1)) or shapes.get("bias", (w[0],)) != (w[0],):
            return None
        return {"out_channels": w[0], "in_channels": w[1]}, w[0] < module.out_channels, w[1] < module.in_channels
    if isinstance(module, _BN):
        sizes = {v for k, v in shapes.items() if k != "num_batches_tracked"}
        if len(sizes) != 1:
            return None
        (size,) = sizes
        if len(size) != 1 or not 1 <= size[0] < module.num_features:
            return None
        return {"num_features": size[0]}, False, True  # its features are the units of the layer before
    if isinstance(module, nn.Embedding) and w is not None:
        if not _smaller(w, tuple(module.weight.shape), (1,)):
            return None
        return {"embedding_dim": w[1]}, True, False
    return None


def _paired(plans: list[tuple[str, nn.Module, dict, tuple[dict[str, int], bool, bool]]]) -> list[int]:
    """Indices of the plans whose every shrink has its other side: removing units
    shrinks one layer's outputs and a later module's inputs together, so a lone
    change (the first layer's inputs, the last layer's outputs) is no removal."""
    alive = list(range(len(plans)))
    while True:
        outs = [i for i in alive if plans[i][3][1]]
        ins = [i for i in alive if plans[i][3][2]]
        ok = [
            i
            for i in alive
            if (not plans[i][3][1] or any(j > i for j in ins)) and (not plans[i][3][2] or any(j < i for j in outs))
        ]
        if ok == alive:
            return alive
        alive = ok


def _resize_(module: nn.Module, sizes: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> None:
    for key, shape in shapes.items():
        old = getattr(module, key)
        if not isinstance(old, torch.Tensor) or tuple(old.shape) == shape:
            continue
        new = torch.empty(shape, dtype=old.dtype, device=old.device)
        if isinstance(old, nn.Parameter):
            setattr(module, key, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            setattr(module, key, new)  # a registered buffer stays registered
    for attr, value in sizes.items():
        setattr(module, attr, value)


def fit_shapes_(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Resize, in place, the Linear/Conv/BatchNorm/Embedding modules whose stored
    tensors are smaller along their unit dimensions; return their names. The new
    tensors are uninitialised: load the state next. A shrink must have its other
    side in registration order (outputs of one layer, inputs of a later one), so
    a model's own input and output sizes never change. Modules that differ in
    any other way are left unchanged, so loading reports the mismatch."""
    plans = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        own = {
            k: tuple(v.shape)
            for k, v in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
            if v is not None
        }
        shapes = {k: tuple(state[prefix + k].shape) for k in own if prefix + k in state}
        if set(shapes) != set(own) or shapes == own:
            continue
        plan = _plan(module, shapes)
        if plan is not None:
            plans.append((name, module, shapes, plan))
    resized = []
    for i in _paired(plans):
        name, module, shapes, (sizes, _, _) = plans[i]
        _resize_(module, sizes, shapes)
        resized.append(name)
    return resized
