"""Data loading: strict IDX reading and seeded, standardised train/val/test splits."""
from __future__ import annotations

from nncompress.data.datasets import FASHION_MNIST_DIR, Splits, load_data
from nncompress.data.idx import read_idx
from nncompress.data.loaders import splits_from_loaders

__all__ = ["FASHION_MNIST_DIR", "Splits", "load_data", "read_idx", "splits_from_loaders"]
