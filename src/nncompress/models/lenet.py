"""LeNet-300-100, LeNet-5 (Caffe form) and a small MLP for 8x8 digits.

Each model is an ``nn.Sequential`` with named children and is fully described by
its ``config()``: layer sizes (which shrink when dead neurons are removed) and
dropout rates (which the pruner adjusts). Keeping them sequential lets the
generic dead-neuron remover walk them.
"""

from __future__ import annotations

from collections import OrderedDict
from math import prod
from typing import Any, Sequence

from torch import nn


def _check_sizes(sizes: Sequence[int], what: str) -> list[int]:
    sizes = [int(s) for s in sizes]
    if any(s < 1 for s in sizes):
        raise ValueError(f"{what} must all be >= 1, got {sizes}")
    return sizes


def _dropouts(dropout: float | Sequence[float], n: int) -> list[float]:
    rates = [float(dropout)] * n if isinstance(dropout, (int, float)) else [float(d) for d in dropout]
    if len(rates) != n or any(not 0.0 <= d < 1.0 for d in rates):
        raise ValueError(f"need {n} dropout rates in [0, 1), got {rates}")
    return rates


class _MLP(nn.Sequential):
    """Fully connected net: flatten, then Linear/ReLU(/Dropout) stacks."""

    def __init__(self, sizes: Sequence[int], dropout: float | Sequence[float] = 0.0) -> None:
        sizes = _check_sizes(sizes, "layer sizes")
        if len(sizes) < 2:
            raise ValueError("an MLP needs at least an input and an output size")
        n_hidden = len(sizes) - 2
        rates = _dropouts(dropout, n_hidden)
        layers: "OrderedDict[str, nn.Module]" = OrderedDict(flatten=nn.Flatten())
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            if i > 1 and rates[i - 2] > 0:
                layers[f"drop{i - 1}"] = nn.Dropout(rates[i - 2])
            layers[f"fc{i}"] = nn.Linear(n_in, n_out)
            if i <= n_hidden:
                layers[f"relu{i}"] = nn.ReLU()
        super().__init__(layers)

    def config(self) -> dict[str, Any]:
        modules = list(self)
        linears = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
        fcs = [m for m in modules if isinstance(m, nn.Linear)]
        sizes = [fcs[0].in_features] + [m.out_features for m in fcs]
        rates = [float(m.p) if isinstance(m := modules[i - 1], nn.Dropout) else 0.0 for i in linears[1:]]
        return {"sizes": sizes, "dropout": rates}


class LeNet300(_MLP):
    """LeNet-300-100: 784-300-100-10."""

    @classmethod
    def default(cls, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> "LeNet300":
        n_in = prod(input_shape) if input_shape else 784
        return cls([n_in, 300, 100, num_classes or 10])


class DigitsMLP(_MLP):
    """A small MLP for the 8x8 digits (64-128-64-10) with dropout, so the
    dropout adjustment has something to act on."""

    @classmethod
    def default(cls, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> "DigitsMLP":
        n_in = prod(input_shape) if input_shape else 64
        return cls([n_in, 128, 64, num_classes or 10], dropout=0.2)


class LeNet5(nn.Sequential):
    """LeNet-5 as in Caffe's example: conv 20@5x5, pool, conv 50@5x5, pool,
    fc 800->500, ReLU, fc 500->10 (no activation between the convolutions)."""

    # the named children, as ``nn.Sequential`` exposes them
    conv1: nn.Conv2d
    conv2: nn.Conv2d
    fc1: nn.Linear
    fc2: nn.Linear

    def __init__(
        self,
        in_channels: int = 1,
        image: int = 28,
        channels: Sequence[int] = (20, 50),
        hidden: int = 500,
        classes: int = 10,
    ) -> None:
        c1, c2 = _check_sizes(channels, "channels")
        hidden, classes, in_channels = _check_sizes([hidden, classes, in_channels], "sizes")
        side = ((int(image) - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"image side {image} is too small for LeNet-5 (needs >= 16)")
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, c1, 5),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(c1, c2, 5),
                pool2=nn.MaxPool2d(2),
                flatten=nn.Flatten(),
                fc1=nn.Linear(c2 * side * side, hidden),
                relu1=nn.ReLU(),
                fc2=nn.Linear(hidden, classes),
            )
        )
        self.image = int(image)

    @classmethod
    def default(cls, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> "LeNet5":
        c, h, w = input_shape if input_shape else (1, 28, 28)
        if h != w:
            raise ValueError(f"LeNet-5 takes square images, got {h}x{w}")
        return cls(in_channels=c, image=h, classes=num_classes or 10)

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.conv1.in_channels,
            "image": self.image,
            "channels": [self.conv1.out_channels, self.conv2.out_channels],
            "hidden": self.fc1.out_features,
            "classes": self.fc2.out_features,
        }
