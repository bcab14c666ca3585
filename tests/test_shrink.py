"""Dead-neuron removal: smaller layers, same outputs, rebuildable from the record."""

from __future__ import annotations

import pytest
import torch

from nncompress.models import arch_record, build_model, from_record
from nncompress.pruning.shrink import remove_dead_neurons_


def _kill(model, name: str) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in model.children():
            if hasattr(layer, "weight"):
                layer.weight.mul_(torch.rand_like(layer.weight) > 0.5)
                layer.bias.uniform_(-0.5, 0.5)
        if name == "lenet5":
            model.conv1.weight[:3] = 0  # 3 channels with no inputs (bias folds forward)
            model.conv2.weight[:, 5] = 0  # channel 5 of conv1 feeds nothing
            model.conv2.weight[7] = 0  # conv2 channel 7: no inputs -> 16 fc1 columns fold
            model.fc1.weight[:, 16 * 9 : 16 * 10] = 0  # conv2 channel 9 feeds nothing
            model.fc2.weight[:, :4] = 0  # fc1 units 0-3 feed nothing
        else:
            model.fc1.weight[:6] = 0  # no inputs
            model.fc2.weight[:, 10:13] = 0  # fc1 units 10-12 feed nothing
            model.fc2.weight[2] = 0  # fc2 unit 2: no inputs


@pytest.mark.parametrize(
    "name, shape, expected",
    [
        ("lenet300", (1, 28, 28), {"fc1": 9, "fc2": 1}),
        ("mlp", (1, 8, 8), {"fc1": 9, "fc2": 1}),
        ("lenet5", (1, 28, 28), {"conv1": 4, "conv2": 2, "fc1": 4}),
    ],
)
def test_shrink_is_exact_and_smaller(name: str, shape: tuple, expected: dict) -> None:
    model = build_model(name, shape).eval()
    _kill(model, name)
    x = torch.randn(32, *shape)
    with torch.no_grad():
        before = model(x)
    params_before = sum(p.numel() for p in model.parameters())
    report = remove_dead_neurons_(model)
    assert report.applicable
    assert report.removed == expected
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < params_before
    rebuilt = from_record(arch_record(model))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), before, rtol=1e-5, atol=1e-5)


def test_nothing_dead_nothing_removed() -> None:
    model = build_model("lenet300")
    report = remove_dead_neurons_(model)
    assert report.removed == {}
    assert report.sizes == {"fc1": (784, 300), "fc2": (300, 100), "fc3": (100, 10)}


def test_layer_keeps_one_unit_when_all_are_dead() -> None:
    model = build_model("lenet300").eval()
    with torch.no_grad():
        model.fc3.weight.zero_()
    report = remove_dead_neurons_(model)
    assert model.fc2.out_features == 1 and report.removed["fc2"] == 99
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(model(x), model.fc3.bias.expand(4, 10))


# ---------------------------------------------------------------- where folding is exact, and where it is not

from torch import nn  # noqa: E402


def _randomise_(model: nn.Module, seed: int = 0) -> None:
    """Random weights, biases and BatchNorm statistics, so no constant is 0 by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            for p in m.parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _cut(model: nn.Sequential, a: str, b: str, no_in: list[int], no_out: list[int], block: int = 1) -> None:
    """Units ``no_in`` of ``a`` lose their inputs, units ``no_out`` their outputs into ``b``."""
    la, lb = getattr(model, a), getattr(model, b)
    with torch.no_grad():
        for u in no_in:
            la.weight[u] = 0
        for u in no_out:
            lb.weight[:, u * block : (u + 1) * block] = 0


def _shrunk(model: nn.Sequential, x: torch.Tensor):
    model.eval()
    with torch.no_grad():
        before = model(x)
    report = remove_dead_neurons_(model)
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    return report


def _conv_pair(between: list[nn.Module], **conv2) -> nn.Sequential:
    layers = [("conv1", nn.Conv2d(2, 6, 3))] + [(f"m{i}", m) for i, m in enumerate(between)]
    layers.append(("conv2", nn.Conv2d(6, 4, 3, **conv2)))
    model = nn.Sequential(__import__("collections").OrderedDict(layers))
    _randomise_(model)
    _cut(model, "conv1", "conv2", no_in=[0, 1], no_out=[4])
    return model


@pytest.mark.parametrize(
    "between, conv2, removed, why",
    [
        ([nn.ReLU()], {}, 3, None),  # folded into conv2's bias
        ([nn.ReLU(), nn.AvgPool2d(3, 1, padding=1)], {}, 1, "averages zero padding"),  # the old bug: 0.1 off
        ([nn.ReLU(), nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)], {}, 3, None),
        ([nn.AvgPool2d(2, ceil_mode=True)], {}, 3, None),
        ([nn.MaxPool2d(3, 1, padding=1)], {}, 3, None),
        ([nn.Tanh()], {"padding": 1}, 1, "pads its input with zeros"),
        ([nn.Tanh()], {"padding": "same"}, 1, "pads its input with zeros"),
        ([nn.Tanh()], {"padding": 1, "padding_mode": "replicate"}, 3, None),
        ([nn.Tanh()], {"bias": False}, 1, "no bias"),
        ([nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout2d(0.3)], {}, 3, None),
        ([nn.BatchNorm2d(6), nn.AvgPool2d(3, 1, padding=1)], {}, 1, "averages zero padding"),
    ],
)
def test_conv_pairs_shrink_exactly_or_say_why(between, conv2, removed, why) -> None:
    model = _conv_pair(between, **conv2)
    report = _shrunk(model, torch.randn(8, 2, 12, 12))
    assert report.applicable
    assert report.removed.get("conv1", 0) == removed
    assert model.conv1.out_channels == 6 - removed
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.num_features == 6 - removed and m.running_mean.shape == (6 - removed,)
    if why is None:
        assert report.reason == "" and report.kept == {}
    else:
        assert why in report.kept["conv1"] and "2 unit(s) of conv1 without inputs kept" in report.reason


def test_a_zero_constant_folds_through_padding() -> None:
    """A unit whose activated constant is 0 contributes nothing, padding or not."""
    model = _conv_pair([nn.ReLU(), nn.AvgPool2d(3, 1, padding=1)], padding=1)
    with torch.no_grad():
        model.conv1.bias[:2] = -1.0  # ReLU(-1) = 0
    report = _shrunk(model, torch.randn(4, 2, 12, 12))
    assert report.removed == {"conv1": 3} and report.kept == {}


def test_batchnorm_linear_and_flatten_layouts() -> None:
    from collections import OrderedDict

    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 5, 3),
            bn=nn.BatchNorm2d(5),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flat=nn.Flatten(),
            fc1=nn.Linear(20, 7),
            bn1=nn.BatchNorm1d(7),
            act=nn.Sigmoid(),
            fc2=nn.Linear(7, 3),
        )
    )
    _randomise_(model)
    _cut(model, "conv", "fc1", no_in=[1], no_out=[3], block=4)
    _cut(model, "fc1", "fc2", no_in=[0, 5], no_out=[2])
    report = _shrunk(model, torch.randn(6, 1, 9, 9))
    assert report.removed == {"conv": 2, "fc1": 3} and report.kept == {}
    assert model.fc1.in_features == 12 and model.bn1.num_features == 4


def test_linear_units_interleave_after_a_flatten() -> None:
    """A Linear on (batch, tokens, features) then Flatten: unit f feeds every f-th input."""
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(15, 2))
    _randomise_(model)
    with torch.no_grad():
        model[0].weight[2] = 0  # unit 2: no inputs
        model[3].weight[:, 4::5] = 0  # unit 4: no outputs
    report = _shrunk(model, torch.randn(7, 3, 4))
    assert report.removed == {"0": 2} and model[3].in_features == 9


@pytest.mark.parametrize(
    "model, where",
    [
        (nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 8, 3)), "grouped convolution"),
        (
            nn.Sequential(
                nn.Conv2d(4, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1)
            ),
            "grouped convolution (groups=8)",
        ),
        (nn.Sequential(nn.Conv2d(3, 6, 3), nn.Linear(8, 5)), "acts on the last dimension"),
        (nn.Sequential(nn.Linear(4, 6), nn.Softmax(-1), nn.Linear(6, 2)), "Softmax"),
        (nn.Sequential(nn.Linear(4, 6), nn.MaxPool1d(2), nn.Linear(3, 2)), "MaxPool1d"),
    ],
)
def test_pairs_that_cannot_be_followed_are_declined(model: nn.Sequential, where: str) -> None:
    _randomise_(model)
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        layers[0].weight[0] = 0
        if layers[1].weight.shape[1] > 1:
            layers[1].weight[:, 1] = 0
        else:  # depthwise: input channel 1 feeds output channel 1 only
            layers[1].weight[1] = 0
    x = torch.randn(3, 4, 10, 10) if isinstance(layers[0], nn.Conv2d) else torch.randn(3, 4)
    if isinstance(layers[0], nn.Conv2d) and layers[0].in_channels == 3:
        x = torch.randn(3, 3, 10, 10)
    report = _shrunk(model, x)
    assert report.removed == {} or "0" not in report.removed
    assert where in report.reason


def test_residual_nets_are_not_applicable() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc2(torch.relu(self.fc1(x)))

    class Custom(nn.Sequential):
        def forward(self, x):
            return super().forward(x) + x

    for model in (Residual(), Custom(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))):
        report = remove_dead_neurons_(model)
        assert not report.applicable and report.removed == {}
        assert "not a plain nn.Sequential" in report.reason and "residual" in report.reason


class _ResidualBlock(nn.Module):
    """x + fc(x): every unit of the layer before reaches the output around ``fc`` too."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


@pytest.mark.parametrize(
    "middle, why",
    [
        (_ResidualBlock(6), "1 (_ResidualBlock) between 0 and 2 does not act on each unit of 0 separately"),
        (nn.LayerNorm(6), "1 (LayerNorm) between 0 and 2 does not act on each unit of 0 separately"),
    ],
)
def test_units_that_feed_a_residual_add_or_a_norm_over_units_stay(middle: nn.Module, why: str) -> None:
    """Unit 1 of layer 0 has no inputs and unit 4 no outputs into layer 2, yet neither is dead: the residual
    add carries both past layer 2's zero columns, and LayerNorm's mean and variance take in every unit, so
    removing one would move the others. The remover must leave layer 0 whole and say why."""
    model = nn.Sequential(nn.Linear(4, 6), middle, nn.Linear(6, 2))
    _randomise_(model)
    _cut(model, "0", "2", no_in=[1], no_out=[4])
    x = torch.randn(16, 4)
    with torch.no_grad():
        hidden = model.eval()[0](x)
        silenced = hidden.clone()
        silenced[:, 4] = 0
        moved = model[2](middle(silenced)) - model[2](middle(hidden))
    assert moved.abs().max() > 1e-3  # unit 4 still reaches the output: it is not dead
    report = _shrunk(model, x)  # the outputs are unchanged (checked inside)
    assert report.removed == {} and report.applicable is False
    assert model[0].out_features == 6 and model[2].in_features == 6
    assert why in report.kept["0"] and why in report.reason
