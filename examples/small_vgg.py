"""A small VGG-style network with BatchNorm for 28x28 inputs (the DDP benchmark's model).

nncompress train --model examples/small_vgg.py:small_vgg --data fashion-mnist --out base.pt
"""

from __future__ import annotations

from torch import nn


def small_vgg(in_channels: int = 1, num_classes: int = 10, width: int = 8) -> nn.Sequential:
    """conv-BN-ReLU x2, pool, conv-BN-ReLU x2, pool, then two Linear layers (7x7 maps at 28x28)."""
    w = int(width)

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(in_channels, w),
        *block(w, w),
        nn.MaxPool2d(2),
        *block(w, 2 * w),
        *block(2 * w, 2 * w),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * w * 7 * 7, 8 * w),
        nn.ReLU(),
        nn.Linear(8 * w, num_classes),
    )
