"""int8 weights with one scale per output channel, through PyTorch's own dynamic quantization.

``torch.ao`` quantizes the weights once and the activations per call (fbgemm/x86
kernels); it covers Linear layers only, so convolutions stay float32. torch 2.13 marks this
eager API deprecated in favour of torchao, which has no CPU wheel in this project's setup.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, TypeGuard

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear


def int8_linear(linear: nn.Linear) -> nn.Module:
    """A dynamically quantized copy of ``linear`` (per-channel int8 weights, float32 in and out)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    copy = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    holder = nn.Sequential(copy)
    with torch.no_grad():
        copy.weight.copy_(linear.weight)
        if linear.bias is not None and copy.bias is not None:
            copy.bias.copy_(linear.bias)
    with warnings.catch_warnings():  # torch.ao's eager quantization warns of its move to torchao on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(holder, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)[0]


def is_int8(module: nn.Module) -> TypeGuard[DynamicLinear]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return isinstance(module, DynamicLinear)


def int8_bytes(module: DynamicLinear) -> int:
    """Bytes of a dynamically quantized Linear's int8 weights, per-channel scales and zero points, bias."""
    weight, bias = module.weight(), module.bias()
    per_channel = weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    scales = weight.q_per_channel_scales().numel() * 12 if per_channel else 12
    return weight.numel() + scales + (bias.nbytes if bias is not None else 0)
