"""Data loading: strict IDX reading, seeded train/val/test splits, inputs of any structure."""

from __future__ import annotations

from nncompress.data.batches import Inputs, count, model_outputs, pick_output, take, to_device
from nncompress.data.datasets import FASHION_MNIST_DIR, Splits, describe_transform, load_data
from nncompress.data.idx import read_idx
from nncompress.data.loaders import splits_from_function, splits_from_loaders

__all__ = [
    "FASHION_MNIST_DIR",
    "Inputs",
    "Splits",
    "count",
    "describe_transform",
    "load_data",
    "model_outputs",
    "pick_output",
    "read_idx",
    "splits_from_function",
    "splits_from_loaders",
    "take",
    "to_device",
]
