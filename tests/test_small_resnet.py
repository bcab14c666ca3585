"""The example ResNet by import path: checkpoint, rebuild from its record, prune, .nnc round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.config import PruneConfig
from nncompress.modelfile import load_compressed, save_compressed
from nncompress.models import arch_record, build_model
from nncompress.pruning import prunable_layers, prune_
from nncompress.quantization import share_weights_
from nncompress.train.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FUNCTION = "examples/small_resnet.py:small_resnet"
CLASS = "examples.small_resnet:SmallResNet"


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)
    return ROOT


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_shapes_and_stages(at_root: Path, shape: tuple) -> None:
    model = build_model(FUNCTION, kwargs={"in_channels": shape[0], "num_classes": 7, "width": 4})
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sorted({c.out_channels for c in convs}) == [4, 8, 16]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) >= 7
    assert [c.stride for c in convs if c.stride != (1, 1)] == [(2, 2)] * 4  # two stages x (conv, shortcut)


def test_checkpoint_rebuilds_from_the_recorded_factory(at_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(FUNCTION, kwargs={"in_channels": 1, "num_classes": 10, "width": 4})
    save_checkpoint(tmp_path / "r.pt", model)
    ckpt = load_checkpoint(tmp_path / "r.pt")
    assert ckpt.arch == {"factory": FUNCTION, "kwargs": {"in_channels": 1, "num_classes": 10, "width": 4}}
    _same(ckpt.build_model(trust_factory=FUNCTION), model)  # a function: named by the caller
    by_class = build_model(CLASS, kwargs={"in_channels": 3, "widths": [4, 8, 8]})
    save_checkpoint(tmp_path / "c.pt", by_class)
    _same(load_checkpoint(tmp_path / "c.pt").build_model(), by_class)  # a class: rebuilt without asking


def test_prune_share_and_round_trip_the_file(at_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(FUNCTION, kwargs={"in_channels": 1, "num_classes": 4, "width": 4})
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)

    def finetune(params, epochs, after_step) -> None:
        model.train()
        opt = torch.optim.SGD(list(params), lr=0.01)
        for _ in range(epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            after_step()
        model.eval()

    def evaluate() -> float:
        with torch.no_grad():
            return float((model.eval()(x).argmax(1) == y).float().mean())

    cfg = PruneConfig(
        q0=0.75,
        q_step=0.5,
        q_max=0.75,
        tolerance=100.0,
        epochs_per_step=1,
        recover_epochs=0,
        final_epochs=1,
        control=False,
        refine_steps=0,
        probe=False,
    )
    result = prune_(model, cfg, finetune=finetune, evaluate=evaluate)
    layers = prunable_layers(model)
    assert (
        0.3
        < sum(int((m.weight != 0).sum()) for m in layers.values()) / sum(m.weight.numel() for m in layers.values())
        < 0.9
    )
    assert result.shrink is not None and not result.shrink.applicable
    assert "SmallResNet, not a plain nn.Sequential" in result.shrink.reason
    shared = share_weights_(layers, {name: 8 if isinstance(m, nn.Conv2d) else 5 for name, m in layers.items()})
    save_compressed(tmp_path / "r.nnc", model, shared, codebook_dtype="float32")
    box = load_compressed(tmp_path / "r.nnc")
    assert box.header["arch"] == arch_record(model) and box.header["arch"]["factory"] == FUNCTION
    restored = box.build_model(trust_factory=FUNCTION)
    _same(restored, model)
    with torch.no_grad():
        assert torch.equal(restored(x), model.eval()(x))
