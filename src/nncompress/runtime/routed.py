"""A layer that holds one or more kernels and calls, per input, the one chosen for that input size."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nncompress.runtime.kernels import positions


class Routed(nn.Module):
    """Kernels by name plus routes (input vectors measured -> kernel name); a call takes the route whose
    size is nearest on a log scale, so batch 1 and batch 64 may run different kernels."""

    def __init__(self, kernels: dict[str, nn.Module], routes: Sequence[tuple[int, str]], in_features: int) -> None:
        super().__init__()
        self.kernels = nn.ModuleDict({name.replace("/", "_"): k for name, k in kernels.items()})
        self.routes = sorted((int(n), name.replace("/", "_")) for n, name in routes)
        self.in_features = in_features  # channels of a conv: what ``positions`` divides by

    def kernel_for(self, x: torch.Tensor) -> str:
        n = positions(x, self)
        return min(self.routes, key=lambda route: abs(math.log(n / route[0])))[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels[self.kernel_for(x)](x)

    def extra_repr(self) -> str:
        return "routes=" + ", ".join(f"{n}->{name}" for n, name in self.routes)
