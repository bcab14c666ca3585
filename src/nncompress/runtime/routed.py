"""A layer that holds one or more kernels and calls, per input, the one chosen for that input size.

The routing must cost less than the gap it exploits: a LeNet layer takes 5-15 us at batch 1, and a
second module call plus the route search added 3 us to each (a model of such layers ran at 0.87x
dense). So the kernel is remembered per input size and its ``forward`` called directly."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nncompress.runtime.kernels import positions


class Routed(nn.Module):
    """Kernels by name plus routes (input vectors measured -> kernel name); a call takes the route whose
    size is nearest on a log scale, so batch 1 and batch 64 may run different kernels."""

    MEMO = 64  # input sizes remembered; more are rare (batch sizes a model is called with)

    def __init__(self, kernels: dict[str, nn.Module], routes: Sequence[tuple[int, str]], in_features: int) -> None:
        super().__init__()
        self.kernels = nn.ModuleDict({name.replace("/", "_"): k for name, k in kernels.items()})
        self.routes = sorted((int(n), name.replace("/", "_")) for n, name in routes)
        self.in_features = in_features  # channels of a conv: what ``positions`` divides by
        self._by_size: dict[int, nn.Module] = {}  # x.numel() -> kernel; a cache, rebuilt on demand

    def kernel_for(self, x: torch.Tensor) -> str:
        n = positions(x, self)
        return min(self.routes, key=lambda route: abs(math.log(n / route[0])))[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self._by_size.get(x.numel())
        if kernel is None:
            if len(self._by_size) >= self.MEMO:
                self._by_size.clear()
            kernel = self._by_size[x.numel()] = self.kernels[self.kernel_for(x)]
        return kernel.forward(x)  # its own hooks are never set: no second module call

    def extra_repr(self) -> str:
        return "routes=" + ", ".join(f"{n}->{name}" for n, name in self.routes)
