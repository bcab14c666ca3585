"""VGG-11 and VGG-16 with BatchNorm, ImageNet-shaped, for any input from 28x28 up.

The original experiments' second workload pruned VGG on ImageNet; these let that workload
run as a recipe on the data at hand. The classifier keeps ImageNet's form
(an adaptive average pool to 7x7, then 25088-4096-4096-classes, dropout 0.5),
so VGG-16 has its 138 M parameters whatever the input size; pools round up
(``ceil_mode``) so 28x28 inputs survive five of them. One flat
``nn.Sequential`` with named children, fully described by ``config()``,
like the LeNets: the dead-neuron remover walks it, the pruner adjusts its
dropout, and a shrunk model is rebuilt from its record.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence, Union

from torch import nn

from nncompress.models.lenet import _check_sizes, _dropouts

Plan = Sequence[Union[int, str]]

PLANS: dict[str, list[Union[int, str]]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _check_plan(plan: Plan) -> list[Union[int, str]]:
    out: list[Union[int, str]] = []
    for item in plan:
        if item == "M":
            out.append("M")
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 1:
            out.append(int(item))
        else:
            raise ValueError(f"a VGG plan holds channel counts >= 1 and 'M' (max pool), got {item!r}")
    if not any(isinstance(i, int) for i in out):
        raise ValueError("a VGG plan needs at least one convolution")
    return out


class VGG(nn.Sequential):
    """Convolutions (3x3, BatchNorm, ReLU) and max pools per ``plan``, an adaptive
    average pool to ``pool`` x ``pool``, and a fully connected classifier."""

    def __init__(
        self,
        plan: Plan,
        in_channels: int = 3,
        classifier: Sequence[int] = (4096, 4096),
        classes: int = 1000,
        pool: int = 7,
        dropout: Union[float, Sequence[float]] = 0.5,
    ) -> None:
        plan = _check_plan(plan)
        in_channels, classes, pool = _check_sizes([in_channels, classes, pool], "sizes")
        widths = _check_sizes(classifier, "classifier widths")
        rates = _dropouts(dropout, len(widths))
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        channels, block, conv = in_channels, 1, 1
        for item in plan:
            if item == "M":
                layers[f"pool{block}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
                block, conv = block + 1, 1
                continue
            layers[f"conv{block}_{conv}"] = nn.Conv2d(channels, int(item), 3, padding=1)
            layers[f"bn{block}_{conv}"] = nn.BatchNorm2d(int(item))
            layers[f"relu{block}_{conv}"] = nn.ReLU(inplace=True)
            channels, conv = int(item), conv + 1
        layers["avgpool"] = nn.AdaptiveAvgPool2d(pool)
        layers["flatten"] = nn.Flatten()
        n_in = channels * pool * pool
        for i, (width, rate) in enumerate(zip(widths, rates, strict=True), start=1):
            layers[f"fc{i}"] = nn.Linear(n_in, width)
            layers[f"relu_fc{i}"] = nn.ReLU(inplace=True)
            layers[f"drop{i}"] = nn.Dropout(rate)
            n_in = width
        layers[f"fc{len(widths) + 1}"] = nn.Linear(n_in, classes)
        super().__init__(layers)
        self.pool = pool

    @classmethod
    def build(cls, name: str, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> "VGG":
        c, h, w = input_shape if input_shape else (3, 224, 224)
        if min(h, w) < 28:
            raise ValueError(f"{name} needs images of at least 28x28, got {h}x{w}")
        return cls(PLANS[name], in_channels=c, classes=num_classes or 1000)

    def config(self) -> dict[str, Any]:
        plan: list[Union[int, str]] = []
        linears: list[nn.Linear] = []
        rates: list[float] = []
        in_channels = None
        for module in self:
            if isinstance(module, nn.Conv2d):
                in_channels = in_channels or module.in_channels
                plan.append(module.out_channels)
            elif isinstance(module, nn.MaxPool2d):
                plan.append("M")
            elif isinstance(module, nn.Linear):
                linears.append(module)
            elif isinstance(module, nn.Dropout):
                rates.append(float(module.p))
        return {
            "plan": plan,
            "in_channels": in_channels,
            "classifier": [m.out_features for m in linears[:-1]],
            "classes": linears[-1].out_features,
            "pool": self.pool,
            "dropout": rates,
        }


class VGG11(VGG):
    """VGG-11 with BatchNorm (configuration A of Simonyan and Zisserman)."""

    @classmethod
    def default(cls, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> "VGG":
        return cls.build("vgg11", input_shape, num_classes)


class VGG16(VGG):
    """VGG-16 with BatchNorm (configuration D): 138 M parameters with 1000 classes."""

    @classmethod
    def default(cls, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> "VGG":
        return cls.build("vgg16", input_shape, num_classes)
