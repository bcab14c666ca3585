"""Shared tiny, seeded data and models (the embedded scikit-learn digits)."""

from __future__ import annotations

import copy
from typing import Callable

import pytest
from torch import nn

from nncompress.config import TrainConfig
from nncompress.data import Splits, load_data
from nncompress.models import build_model
from nncompress.train import fit, set_seed


@pytest.fixture(scope="session")
def digits() -> Splits:
    return load_data("digits")


@pytest.fixture(scope="session")
def _trained_mlp_state(digits: Splits) -> dict:
    gen = set_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    fit(model, digits.train_x, digits.train_y, TrainConfig(epochs=15, lr=0.05, batch_size=64), generator=gen)
    return copy.deepcopy(model.state_dict())


@pytest.fixture
def trained_mlp(digits: Splits, _trained_mlp_state: dict) -> Callable[[], nn.Module]:
    """A factory: each call gives a fresh copy of one MLP trained once per session."""

    def make() -> nn.Module:
        model = build_model("mlp", digits.input_shape, digits.num_classes)
        model.load_state_dict(_trained_mlp_state)
        return model.eval()

    return make
