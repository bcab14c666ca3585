"""Splits from a user's own PyTorch data loaders or iterables of batches.

The pipeline trains and evaluates on in-memory inputs (every fine-tuning step
reshuffles them with a seeded generator, so a run is repeatable); a user who
holds DataLoaders gets those inputs by reading each loader once.

A batch is one of:

- a tensor: inputs, no labels;
- a tuple or list ``(inputs, labels)``, where inputs may themselves be a tensor,
  a tuple or a dict; a one-element tuple (what ``TensorDataset(x)`` yields) is
  inputs without labels;
- a dict of tensors (tokenised text): the key ``labels`` or ``label`` holds the
  labels, every other key is a keyword input of the model.

``labels=None`` says no batch carries labels (then a tuple is the model's
positional inputs), and ``labels="key"`` names the dict key that holds them.
Labels are class indices (1-D integers, one per example). Inputs keep their
dtypes: token ids stay int64.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Iterable, Optional, Union, cast

import numpy as np
import torch

from nncompress.data.batches import Inputs, check_inputs, concat, count, describe, detach_cpu, take
from nncompress.data.datasets import Splits
from nncompress.errors import ConfigError, DataError

__all__ = [
    "AUTO",
    "LABEL_KEYS",
    "SINGLE_VAL_FRACTION",
    "SINGLE_TEST_FRACTION",
    "splits_from_function",
    "splits_from_loaders",
]

log = logging.getLogger(__name__)

AUTO = "auto"
LABEL_KEYS = ("labels", "label")
# A single iterable of batches holds out this seeded share as validation and as test.
SINGLE_VAL_FRACTION = 0.1
SINGLE_TEST_FRACTION = 0.1

Labels = Union[str, None]


def _as_tensor(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


def _inputs(value: Any) -> Inputs:
    """A batch's inputs with numpy arrays turned into tensors (never re-typed)."""
    if isinstance(value, Mapping):
        return {k: _as_tensor(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_as_tensor(v) for v in value)
    return _as_tensor(value)


def _split_batch(batch: Any, labels: Labels, which: str, i: int) -> tuple[Inputs, Optional[torch.Tensor]]:
    """(inputs, labels or None) of one batch, by the rules in the module docstring."""
    if isinstance(batch, Mapping):
        keys = [labels] if isinstance(labels, str) and labels != AUTO else (LABEL_KEYS if labels == AUTO else ())
        found = [k for k in keys if k in batch]
        if isinstance(labels, str) and labels != AUTO and not found:
            raise DataError(f"{which} loader: batch {i} has no key {labels!r} (keys: {sorted(batch)})")
        if len(found) > 1:
            raise DataError(f"{which} loader: batch {i} has both {found}; name the labels key with labels='...'")
        key = found[0] if found else None
        return _inputs({k: v for k, v in batch.items() if k != key}), (_as_tensor(batch[key]) if key else None)
    if isinstance(batch, (tuple, list)):
        if labels is None:
            return _inputs(batch), None
        if len(batch) == 1:
            return _inputs(batch[0]), None
        if len(batch) != 2:
            raise DataError(
                f"{which} loader: batch {i} is a tuple of {len(batch)}, not an (inputs, labels) pair; "
                "if the batch is the model's positional inputs without labels, pass labels=None"
            )
        return _inputs(batch[0]), _as_tensor(batch[1])
    if labels not in (None, AUTO):
        raise DataError(f"{which} loader: batch {i} is a {type(batch).__name__}, so it has no key {labels!r}")
    return _inputs(batch), None


def _check_labels(y: Any, n: int, which: str, i: int) -> torch.Tensor:
    if (
        not isinstance(y, torch.Tensor)
        or y.dtype.is_floating_point
        or y.dtype == torch.bool
        or y.dim() != 1
        or len(y) != n
    ):
        what = f"{y.dtype} of shape {list(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(
            f"{which} loader: batch {i} labels must be a 1-D integer tensor, one per input; got {what} "
            f"for {n} inputs (if the batch is the model's positional inputs without labels, "
            "pass labels=None)"
        )
    return y.detach().to("cpu", torch.int64)


def _read(loader: Iterable[Any], which: str, labels: Labels) -> tuple[Inputs, Optional[torch.Tensor]]:
    xs: list[Inputs] = []
    ys: list[Optional[torch.Tensor]] = []
    for i, batch in enumerate(loader):
        x, y = _split_batch(batch, labels, which, i)
        check_inputs(x, f"{which} loader: batch {i}")
        xs.append(detach_cpu(x))
        ys.append(None if y is None else _check_labels(y, count(x), which, i))
    if not xs:
        raise DataError(f"{which} loader yields no batches")
    with_labels = sum(y is not None for y in ys)
    if 0 < with_labels < len(ys):
        raise DataError(f"{which} loader: {with_labels} of {len(ys)} batches carry labels; all or none must")
    # with labels, every batch carries them (checked above)
    return concat(xs, f"{which} loader"), (torch.cat(cast(list[torch.Tensor], ys)) if with_labels else None)


def _input_shape(x: Inputs) -> Any:
    """Per-example shape(s), for files and messages: a tuple, a tuple of tuples, or a dict."""
    if isinstance(x, torch.Tensor):
        return tuple(x.shape[1:])
    if isinstance(x, Mapping):
        return {k: tuple(v.shape[1:]) for k, v in x.items()}
    return tuple(tuple(t.shape[1:]) for t in x)


def _classes(ys: list[torch.Tensor], num_classes: Optional[int]) -> int:
    labels = torch.cat(ys)
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise DataError(f"labels must be >= 0, got {low}")
    classes = high + 1 if num_classes is None else num_classes
    if classes <= high:
        raise DataError(f"num_classes {classes} but a label is {high}")
    return classes


def _assemble(
    parts: dict[str, tuple[Inputs, Optional[torch.Tensor]]],
    name: str,
    num_classes: Optional[int],
    test_is_val: bool,
    source: str,
) -> Splits:
    shapes = {which: describe(take(x, slice(0, 0))) for which, (x, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"the loaders' inputs differ in shape: {shapes}")
    has = {which: y is not None for which, (_, y) in parts.items()}
    if len(set(has.values())) > 1:
        raise DataError(f"some loaders carry labels and some do not ({has}); give labels everywhere or nowhere")
    labelled = all(has.values())
    if not labelled and num_classes is not None:
        raise ConfigError("num_classes given, but the batches carry no labels")
    classes = _classes(cast(list[torch.Tensor], [y for _, y in parts.values()]), num_classes) if labelled else None
    (tx, ty), (vx, vy), (sx, sy) = parts["train"], parts["val"], parts["test"]
    if test_is_val:
        log.warning(
            "%s: no test split; every 'test' figure is measured on the validation split, which also made "
            "every pruning decision (an optimistic estimate)",
            name,
        )
    if not labelled:
        log.info("%s: the batches carry no labels; runs distil from the dense model", name)
    return Splits(
        name,
        tx,
        ty,
        vx,
        vy,
        sx,
        sy,
        _input_shape(tx),
        classes,
        transform={"normalize": "as given", "source": source},
        test_is_val=test_is_val,
    )


def splits_from_loaders(
    train: Iterable[Any],
    val: Iterable[Any],
    test: Optional[Iterable[Any]] = None,
    *,
    name: str = "custom",
    num_classes: Optional[int] = None,
    labels: Labels = AUTO,
) -> Splits:
    """Read the loaders' batches (see the module docstring) into Splits. Every
    choice the pipeline makes is made on ``val``; ``test`` is only reported.
    Without ``test``, test figures are the validation split's (``Splits.test_is_val``,
    logged as a warning).

    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> import nncompress as nnc
    >>> x, y = torch.randn(100, 8), torch.randint(0, 3, (100,))
    >>> train = DataLoader(TensorDataset(x[:80], y[:80]), batch_size=16)
    >>> val = DataLoader(TensorDataset(x[80:], y[80:]), batch_size=16)
    >>> splits = nnc.splits_from_loaders(train, val, num_classes=3)
    >>> splits.train_x.shape, splits.num_classes, splits.test_is_val
    (torch.Size([80, 8]), 3, True)
    """
    parts = {"train": _read(train, "train", labels), "val": _read(val, "val", labels)}
    parts["test"] = parts["val"] if test is None else _read(test, "test", labels)
    return _assemble(parts, name, num_classes, test is None, "loaders")


def _hold_out(
    x: Inputs, y: Optional[torch.Tensor], split_seed: int, what: str
) -> dict[str, tuple[Inputs, Optional[torch.Tensor]]]:
    n = count(x)
    if n < 3:
        raise DataError(f"{what} gives {n} examples; holding out validation and test needs at least 3")
    n_val = max(1, int(n * SINGLE_VAL_FRACTION))
    n_test = max(1, int(n * SINGLE_TEST_FRACTION))
    perm = torch.from_numpy(np.random.default_rng(split_seed).permutation(n))
    idx = {
        "val": perm[:n_val].sort().values,
        "test": perm[n_val : n_val + n_test].sort().values,
        "train": perm[n_val + n_test :].sort().values,
    }
    log.info(
        "%s: one stream of %d examples; held out a seeded %d for validation and %d for test (%.0f%% each)",
        what,
        n,
        n_val,
        n_test,
        100 * SINGLE_VAL_FRACTION,
    )
    return {k: (take(x, i), None if y is None else y[i]) for k, i in idx.items()}


def splits_from_function(spec: str, *, split_seed: int = 0, labels: Labels = AUTO) -> Splits:
    """Call a user's ``package.module:function`` (no arguments) and read what it returns:

    - a dict with keys ``train``, ``val`` and optionally ``test``, each a loader or iterable of batches;
    - a tuple of two or three loaders, (train, val) or (train, val, test);
    - anything else iterable: one stream of batches, of which a seeded 10 % is held out as
      validation and another 10 % as test (``split_seed`` chooses them).
    """
    from nncompress.imports import import_object

    fn = import_object(spec, "--data")
    if not callable(fn):
        raise ConfigError(f"--data {spec!r} is a {type(fn).__name__}, not a function returning data loaders")
    try:
        got = fn()
    except Exception as exc:
        raise DataError(f"--data {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    name = spec.rpartition(":")[2]
    if isinstance(got, Mapping):
        unknown = sorted(set(got) - {"train", "val", "test"})
        if unknown or not {"train", "val"} <= set(got):
            raise DataError(
                f"--data {spec!r} returned a dict with keys {sorted(got)}; expected 'train', 'val' and "
                "optionally 'test'"
            )
        loaders = (got["train"], got["val"], got.get("test"))
    elif isinstance(got, tuple) and len(got) in (2, 3):
        loaders = (*got, None) if len(got) == 2 else got
    elif isinstance(got, Iterable) and not isinstance(got, (torch.Tensor, str, bytes)):
        x, y = _read(got, spec, labels)
        return _assemble(_hold_out(x, y, split_seed, spec), name, None, False, spec)
    else:
        raise DataError(
            f"--data {spec!r} returned {type(got).__name__}; expected (train, val[, test]) loaders, "
            "a dict of them, or one iterable of batches"
        )
    splits = splits_from_loaders(*loaders, name=name, labels=labels)
    return dataclasses.replace(splits, transform={"normalize": "as given", "source": spec})
