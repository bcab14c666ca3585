"""Splits from a user's own PyTorch data loaders.

The pipeline trains and evaluates on in-memory tensors (every fine-tuning step
reshuffles them with a seeded generator, so a run is repeatable); a user who
holds DataLoaders gets those tensors by reading each loader once.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch

from nncompress.data.datasets import Splits
from nncompress.errors import DataError


def _read(loader: Iterable[Any], which: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i, batch in enumerate(loader):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise DataError(f"{which} loader: batch {i} is not an (inputs, labels) pair")
        x, y = (torch.as_tensor(b) for b in batch)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1 or len(y) != len(x):
            raise DataError(f"{which} loader: batch {i} labels must be a 1-D integer tensor, one per input; "
                            f"got {y.dtype} of shape {list(y.shape)} for {len(x)} inputs")
        xs.append(x.detach().to("cpu", torch.float32))
        ys.append(y.detach().to("cpu", torch.int64))
    if not xs:
        raise DataError(f"{which} loader yields no batches")
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) > 1:
        raise DataError(f"{which} loader: inputs of different shapes {sorted(shapes)}")
    return torch.cat(xs), torch.cat(ys)


def splits_from_loaders(train: Iterable[Any], val: Iterable[Any], test: Iterable[Any], *, name: str = "custom",
                        num_classes: Optional[int] = None) -> Splits:
    """Read three loaders of (inputs, labels) batches into Splits. Every choice
    the pipeline makes is made on ``val``; ``test`` is only reported."""
    parts = {which: _read(loader, which) for which, loader in (("train", train), ("val", val), ("test", test))}
    shapes = {which: tuple(x.shape[1:]) for which, (x, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"the loaders' inputs differ in shape: {shapes}")
    labels = torch.cat([y for _, y in parts.values()])
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise DataError(f"labels must be >= 0, got {low}")
    classes = high + 1 if num_classes is None else num_classes
    if classes <= high:
        raise DataError(f"num_classes {classes} but a label is {high}")
    (tx, ty), (vx, vy), (sx, sy) = parts["train"], parts["val"], parts["test"]
    return Splits(name, tx, ty, vx, vy, sx, sy, shapes["train"], classes)  # type: ignore[arg-type]
