"""Pruning to a target density, and pruning grouped/depthwise convolutions."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from nncompress.config import PruneConfig
from nncompress.errors import ConfigError
from nncompress.pruning import prunable_layers, prune_
from nncompress.pruning.apply import overall_density
from nncompress.pruning.target import density_steps, q_for_density


def _tiny_task(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 12, generator=gen)
    y = (x[:, :3].sum(1) > 0).long()
    return x, y


def _callbacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, trained: list[int]):
    def finetune(params, epochs, after_step) -> None:
        opt = torch.optim.SGD(list(params), lr=0.05)
        for _ in range(epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            after_step()
        trained.append(epochs)

    def evaluate() -> float:
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    return finetune, evaluate


@pytest.mark.parametrize("target, scale", [(0.2, {}), (0.05, {"0": 2.0}), (0.5, {"2": 0.5})])
def test_target_density_is_reached_within_a_point(target: float, scale: dict) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    x, y = _tiny_task()
    trained: list[int] = []
    finetune, evaluate = _callbacks(model, x, y, trained)
    cfg = PruneConfig(
        target_density=target,
        target_steps=3,
        groups="all",
        min_layer_share=0.0,
        control=False,
        epochs_per_step=2,
        final_epochs=1,
        layer_scale=scale,
        remove_dead=False,
    )
    result = prune_(model, cfg, finetune=finetune, evaluate=evaluate)
    layers = prunable_layers(model)
    kept = sum(int((m.weight != 0).sum()) for m in layers.values()) / sum(m.weight.numel() for m in layers.values())
    assert abs(kept - target) <= 0.01
    assert abs(overall_density(result.masks) - target) <= 0.01
    steps = [s for s in result.steps if s.stage == "target"]
    assert [s.step for s in steps] == [1, 2, 3] and all(s.accepted for s in steps)
    expected = [target ** (k / 3) for k in (1, 2, 3)]
    assert [s.overall_density for s in steps] == pytest.approx(expected, abs=0.01)
    assert trained[:3] == [2, 2, 2]  # fine-tuned after every step, then the final fine-tune
    plain = {n: q for n, q in result.q.items() if n not in scale}
    assert len(set(plain.values())) == 1 and min(plain.values()) > 0  # one q for all unscaled layers
    for name, factor in scale.items():
        assert result.q[name] == pytest.approx(factor * next(iter(plain.values())), rel=1e-12)


def test_target_density_warns_when_the_drop_exceeds_the_tolerance(caplog) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 2))
    accs = iter([0.9] + [0.5] * 10)
    cfg = PruneConfig(
        target_density=0.1,
        target_steps=2,
        groups="all",
        min_layer_share=0.0,
        control=False,
        epochs_per_step=0,
        final_epochs=0,
        remove_dead=False,
        tolerance=1.0,
    )
    with caplog.at_level(logging.WARNING, logger="nncompress.pruning.iterative"):
        result = prune_(model, cfg, finetune=lambda p, e, a: None, evaluate=lambda: next(accs))
    assert [s.stage for s in result.steps] == ["dense", "target", "target", "final"]
    assert all(s.drop_points == 40.0 for s in result.steps[1:])
    assert any("exceeds the tolerance" in r.message for r in caplog.records)


def test_q_bisection_and_schedule() -> None:
    w = {"a": torch.arange(1.0, 101.0).reshape(10, 10)}
    masks = {"a": torch.ones(10, 10, dtype=torch.bool)}
    q = q_for_density(w, masks, {"a": 10.0}, 0.25)
    assert int((w["a"].abs() >= q * 10.0).sum()) == 25
    assert density_steps(1.0, 0.01, 2) == pytest.approx([0.1, 0.01])
    assert density_steps(0.5, 0.125, 2) == pytest.approx([0.25, 0.125])
    assert density_steps(0.1, 0.2, 3) == []
    with pytest.raises(ConfigError, match="target_density"):
        PruneConfig(target_density=0.0)
    with pytest.raises(ConfigError, match="target_steps"):
        PruneConfig(target_density=0.5, target_steps=0)


@pytest.mark.parametrize("conv", ["grouped", "depthwise", "conv1d"])
def test_grouped_and_depthwise_convs_prune_and_stay_pruned(conv: str) -> None:
    torch.manual_seed(0)
    if conv == "conv1d":
        model = nn.Sequential(
            nn.Conv1d(4, 8, 3, groups=2),
            nn.ReLU(),
            nn.Conv1d(8, 8, 3, groups=8),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 6, 2),
        )
        x = torch.randn(64, 4, 10)
    else:
        groups = 2 if conv == "grouped" else 8
        model = nn.Sequential(
            nn.Conv2d(4, 8, 1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, groups=groups, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 2),
        )
        x = torch.randn(64, 4, 6, 6)
    y = (x.flatten(1).mean(1) > 0).long()
    trained: list[int] = []
    finetune, evaluate = _callbacks(model, x, y, trained)
    cfg = PruneConfig(
        target_density=0.4,
        target_steps=2,
        groups="all",
        min_layer_share=0.0,
        control=False,
        epochs_per_step=1,
        final_epochs=1,
    )
    result = prune_(model, cfg, finetune=finetune, evaluate=evaluate)
    layers = prunable_layers(model)
    for name, layer in layers.items():
        assert result.masks[name].shape == layer.weight.shape
        assert torch.all(layer.weight[~result.masks[name]] == 0)
    assert abs(overall_density(result.masks) - 0.4) <= 0.01
    with torch.no_grad():
        assert model(x).shape == (64, 2)
    assert result.shrink is not None and "grouped convolution" in result.shrink.reason
