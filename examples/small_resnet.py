"""A small ResNet with BatchNorm, for 1x28x28 (Fashion-MNIST) or 3x32x32 (CIFAR) inputs.

Three stages of BasicBlocks (16/32/64 channels; the last two start with
stride 2), then global average pooling and one Linear layer. Load it by
import path, e.g. ``--model examples/small_resnet.py:small_resnet`` from the
repository root: the class ``SmallResNet`` is rebuilt from a file's record
without asking, the function ``small_resnet`` only when named again.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem conv, ``blocks`` BasicBlocks per stage, global average pool, classifier."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64), blocks: int = 1
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or any(w < 1 for w in widths) or blocks < 1:
            raise ValueError(f"need widths >= 1 and blocks >= 1, got widths={widths}, blocks={blocks}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks):
                stages.append(BasicBlock(c_in, width, stride=2 if i > 0 and j == 0 else 1))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def small_resnet(in_channels: int = 1, num_classes: int = 10, width: int = 16, blocks: int = 1) -> SmallResNet:
    """The factory: stages of width, 2 x width and 4 x width channels."""
    return SmallResNet(in_channels, num_classes, (width, 2 * width, 4 * width), blocks)
