"""Built-in models: published sizes, records, training determinism."""

from __future__ import annotations

import pytest
import torch

from nncompress.config import TrainConfig
from nncompress.errors import ConfigError, ModelError
from nncompress.models import arch_record, build_model, from_record
from nncompress.train import evaluate, fit, set_seed


def test_published_parameter_counts() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model("lenet300")) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    lenet5 = build_model("lenet5")
    assert count(lenet5) == 20 * 25 + 20 + 50 * 20 * 25 + 50 + 800 * 500 + 500 + 500 * 10 + 10
    assert lenet5(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_record_round_trip_and_errors() -> None:
    model = build_model("mlp", (1, 8, 8), 10)
    assert arch_record(model) == {"name": "mlp", "config": {"sizes": [64, 128, 64, 10], "dropout": [0.2, 0.2]}}
    assert arch_record(from_record(arch_record(model))) == arch_record(model)
    with pytest.raises(ModelError, match="unknown model"):
        build_model("resnet")
    with pytest.raises(ModelError, match="invalid"):
        from_record({"name": "lenet300", "config": {"sizes": [784, 0, 10]}})


def test_training_learns_and_is_deterministic(digits) -> None:
    def run() -> torch.nn.Module:
        gen = set_seed(3)
        m = build_model("mlp", digits.input_shape, digits.num_classes)
        fit(m, digits.train_x, digits.train_y, TrainConfig(epochs=4, batch_size=64), generator=gen)
        return m

    a, b = run(), run()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert evaluate(a, digits.test_x, digits.test_y)[1] > 0.85


def test_diverging_training_says_so(digits) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    with pytest.raises(ModelError, match="train diverged.*lower the learning rate"):
        fit(model, digits.train_x, digits.train_y, TrainConfig(epochs=3, lr=1e10, batch_size=64), generator=set_seed(0))


def test_train_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"epochs": 1, "lrr": 0.1})


def test_configs_bound_steps_and_seeds() -> None:
    from nncompress.config import PruneConfig

    with pytest.raises(ConfigError, match="q_step"):
        PruneConfig(q_step=1e-9)
    with pytest.raises(ConfigError, match="seed"):
        TrainConfig(seed=2**64)
    with pytest.raises(ConfigError, match="seed"):
        PruneConfig(seed=-1)


def test_lenet5_refuses_images_it_cannot_take() -> None:
    with pytest.raises(ModelError, match="too small"):
        build_model("lenet5", (1, 8, 8))
    with pytest.raises(ModelError, match="square"):
        build_model("lenet5", (1, 28, 32))
