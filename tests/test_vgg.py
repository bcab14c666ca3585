"""Built-in VGG-11/VGG-16 with BatchNorm: sizes, records, and a small one through compress."""

from __future__ import annotations

import pytest
import torch

import nncompress as nnc
from nncompress.errors import ModelError
from nncompress.models import arch_record, build_model, from_record
from nncompress.models.vgg import VGG11, VGG16


def test_vgg16_has_its_published_size_for_any_input() -> None:
    with torch.device("meta"):
        imagenet = build_model("vgg16", (3, 224, 224), 1000)
        fashion = build_model("vgg16", (1, 28, 28), 10)
        vgg11 = build_model("vgg11", (3, 32, 32), 1000)
    assert sum(p.numel() for p in imagenet.parameters()) == 138_365_992  # VGG-16-BN as published
    assert sum(p.numel() for p in vgg11.parameters()) == 132_868_840  # VGG-11-BN
    assert fashion.fc1.in_features == 25088 and fashion.conv1_1.in_channels == 1 and fashion.fc3.out_features == 10
    with pytest.raises(ModelError, match="at least 28x28"):
        build_model("vgg16", (1, 16, 16), 10)


def _tiny() -> VGG11:
    torch.manual_seed(0)
    return VGG11([8, "M", 16, "M", 16, "M"], in_channels=1, classifier=[32], classes=10, pool=2, dropout=0.2)


def test_a_28x28_input_survives_five_pools_and_the_record_round_trips() -> None:
    model = build_model("vgg11", (1, 28, 28), 10).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    tiny = _tiny()
    rebuilt = from_record(arch_record(tiny))
    assert type(rebuilt) is VGG11 and rebuilt.config() == tiny.config()
    assert [tuple(p.shape) for p in rebuilt.parameters()] == [tuple(p.shape) for p in tiny.parameters()]
    assert isinstance(VGG16.default((3, 32, 32), 100), VGG16)


def test_a_small_vgg_compresses_and_comes_back_from_its_file_alone(tmp_path, digits) -> None:
    model = _tiny()
    from nncompress.config import TrainConfig
    from nncompress.train.loop import fit, set_seed

    fit(model, digits.train_x, digits.train_y, TrainConfig(epochs=3, lr=0.05, batch_size=64), generator=set_seed(0))
    prune = nnc.PruneConfig(
        target_density=0.5, target_steps=1, epochs_per_step=1, final_epochs=0, probe=False, batch_size=64
    )
    result = nnc.compress(
        model,
        digits,
        tmp_path / "v.nnc",
        nnc.CompressConfig(prune=prune, share=nnc.ShareConfig(epochs=0, batch_size=64)),
    )
    assert result.ratio > 2  # a 7 k-parameter net: BatchNorm vectors and headers weigh
    back = nnc.load(result.path)  # the built-in record rebuilds it, shrunk or not
    x = digits.test_x[:16]
    assert torch.equal(back.eval()(x), result.model.eval()(x))
