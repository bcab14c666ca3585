"""A user's own module and DataLoaders through the whole pipeline."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nncompress.config import PruneConfig, ShareConfig, TrainConfig
from nncompress.data import Splits, splits_from_loaders
from nncompress.errors import DataError
from nncompress.modelfile import load_compressed
from nncompress.pipeline import compress_model, metrics
from nncompress.train import fit, set_seed


class TinyCNN(nn.Module):  # not one of ours: the file cannot name it
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3)
        self.head = nn.Linear(6 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def _loaders(digits: Splits, batch: int = 100) -> list[DataLoader]:
    return [
        DataLoader(TensorDataset(x, y), batch_size=batch)
        for x, y in ((digits.train_x, digits.train_y), (digits.val_x, digits.val_y), (digits.test_x, digits.test_y))
    ]


def test_loaders_give_the_same_tensors(digits: Splits) -> None:
    splits = splits_from_loaders(*_loaders(digits, batch=64))
    assert torch.equal(splits.train_x, digits.train_x) and torch.equal(splits.test_y, digits.test_y)
    assert splits.input_shape == digits.input_shape and splits.num_classes == 10


def test_own_module_from_loaders_round_trips_through_the_file(tmp_path, digits: Splits) -> None:
    splits = splits_from_loaders(*_loaders(digits))
    model = TinyCNN()
    fit(model, splits.train_x, splits.train_y, TrainConfig(epochs=8, lr=0.05, batch_size=64), generator=set_seed(0))
    summary = compress_model(
        model,
        {},
        splits,
        tmp_path / "m.nnc",
        PruneConfig(epochs_per_step=1, final_epochs=1, q_max=0.75, batch_size=64, tolerance=2.0),
        ShareConfig(epochs=1, batch_size=64),
    )
    assert summary["test_accuracy"] > 0.8
    fresh = load_compressed(tmp_path / "m.nnc").build_model(TinyCNN())
    assert metrics(fresh, splits)["accuracy"] == summary["test_accuracy"]
    assert (fresh.head.weight == 0).float().mean() > 0.3  # pruned positions came back as zeros


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (
            [(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.int64), torch.zeros(2))],
            "not an \\(inputs, labels\\) pair",
        ),
        ([(torch.zeros(2, 1, 8, 8),)], "some loaders carry labels and some do not"),  # (x,) is inputs alone
        ([(torch.zeros(2, 1, 8, 8), torch.zeros(2))], "1-D integer tensor"),
        ([(torch.zeros(2, 1, 8, 8), torch.zeros(3, dtype=torch.int64))], "one per input"),
        ([], "yields no batches"),
        (
            [
                (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.int64)),
                (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64)),
            ],
            "different shapes",
        ),
    ],
)
def test_bad_loaders_are_data_errors(digits: Splits, bad: list, fragment: str) -> None:
    good = _loaders(digits)
    with pytest.raises(DataError, match=fragment):
        splits_from_loaders(bad, good[1], good[2])


def test_labels_beyond_num_classes_are_refused(digits: Splits) -> None:
    with pytest.raises(DataError, match="num_classes 5"):
        splits_from_loaders(*_loaders(digits), num_classes=5)
