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
            model.conv1.weight[:3] = 0          # 3 channels with no inputs (bias folds forward)
            model.conv2.weight[:, 5] = 0        # channel 5 of conv1 feeds nothing
            model.conv2.weight[7] = 0           # conv2 channel 7: no inputs -> 16 fc1 columns fold
            model.fc1.weight[:, 16 * 9:16 * 10] = 0  # conv2 channel 9 feeds nothing
            model.fc2.weight[:, :4] = 0         # fc1 units 0-3 feed nothing
        else:
            model.fc1.weight[:6] = 0            # no inputs
            model.fc2.weight[:, 10:13] = 0      # fc1 units 10-12 feed nothing
            model.fc2.weight[2] = 0             # fc2 unit 2: no inputs


@pytest.mark.parametrize("name, shape, expected", [
    ("lenet300", (1, 28, 28), {"fc1": 9, "fc2": 1}),
    ("mlp", (1, 8, 8), {"fc1": 9, "fc2": 1}),
    ("lenet5", (1, 28, 28), {"conv1": 4, "conv2": 2, "fc1": 4}),
])
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
