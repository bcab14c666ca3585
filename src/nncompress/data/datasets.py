"""Load a data set into fixed, standardised train/validation/test splits.

Splits are seeded and preprocessing statistics come from the train split only,
so every run with the same spec and seed sees exactly the same tensors.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from nncompress.data.batches import Inputs, count
from nncompress.data.idx import read_idx
from nncompress.errors import ConfigError, DataError
from nncompress.imports import is_import_spec
from nncompress.paths import check_input_file
from nncompress.plain import is_int

# Defined beside their kin, importable from here as before.
from nncompress.data.transforms import (
    NORMALIZE_CHOICES as NORMALIZE_CHOICES,
    Normalize as Normalize,
    _normalize_kind as _normalize_kind,
    describe_transform as describe_transform,
    recorded_normalize as recorded_normalize,
    recorded_val_size as recorded_val_size,
    transform_record as transform_record,
)

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV",
    "IDX_FILES",
    "NORMALIZE_CHOICES",
    "Normalize",
    "Splits",
    "describe_transform",
    "load_data",
    "fashion_mnist_dir",
    "recorded_normalize",
    "recorded_val_size",
    "transform_record",
]

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "NNCOMPRESS_FASHION_MNIST_DIR"

# The four standard file names, in the order (train images, train labels, test images, test labels).
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Large training sets hold out a fixed 5,000 images, as is customary for MNIST-style data;
# smaller ones hold out 10% so the validation split never dominates.
_VAL_SIZE = 5000
_VAL_FIXED_MIN_TRAIN = 25000
_VAL_FRACTION = 0.1
_DIGITS_TEST_FRACTION = 0.2

_INSTALL_HINT = (
    "run `apt-get update && apt-get install -y dataset-fashion-mnist` or pass --data PATH to a folder "
    "holding " + ", ".join(f"{name}(.gz)" for name in IDX_FILES)
)


@dataclass(frozen=True)
class Splits:
    """Train/validation/test inputs of one data set, with labels or without.

    The built-in data hold float32 N×C×H×W images and int64 labels. A user's
    data may hold any inputs ``nncompress.data.batches`` handles (a tensor, a
    tuple of tensors, a dict of tensors such as tokenised text), dtypes as given,
    and no labels at all (``*_y`` None): the run then distils from the dense
    model. ``transform`` records how raw inputs became these tensors, so files
    and reports can state it; ``test_is_val`` marks data without a test split,
    whose "test" figures are the validation split's.
    """

    name: str
    train_x: Inputs
    train_y: Optional[torch.Tensor]
    val_x: Inputs
    val_y: Optional[torch.Tensor]
    test_x: Inputs
    test_y: Optional[torch.Tensor]
    input_shape: Any
    num_classes: Optional[int]
    transform: Optional[dict[str, Any]] = None
    test_is_val: bool = False
    split: Optional[dict[str, int]] = None  # {"seed", "val"}: how the built-in data held out validation

    @property
    def has_labels(self) -> bool:
        return self.train_y is not None

    def sizes(self) -> dict[str, int]:
        """Number of examples per split, for logs and reports."""
        return {"train": count(self.train_x), "val": count(self.val_x), "test": count(self.test_x)}

    def __repr__(self) -> str:  # the default would dump tensor contents
        return (
            f"Splits(name={self.name!r}, sizes={self.sizes()}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, transform={self.transform}"
            + (", test_is_val=True)" if self.test_is_val else ")")
        )


def fashion_mnist_dir() -> Path:
    """Where Fashion-MNIST is looked for; the env var is read at call time so tests can redirect it."""
    override = os.environ.get(FASHION_MNIST_ENV)
    return Path(override) if override else FASHION_MNIST_DIR


def load_data(spec: str, *, split_seed: int = 0, normalize: Normalize = None, val_size: Optional[int] = None) -> Splits:
    """Load "fashion-mnist", "digits", a folder of the four IDX files, or a user's
    ``package.module:function`` (see ``nncompress.data.loaders.splits_from_function``)
    into seeded splits.

    ``normalize`` sets how image pixels become inputs, and is recorded in
    ``Splits.transform``: "standardize" (the default: mean and std of the train
    split's pixels scaled to [0, 1]), "unit" ([0, 1]), "none" (the raw pixel
    values as float32, e.g. 0..255), or an explicit (mean, std) applied to
    pixels scaled to [0, 1] (``(x / 255 - mean) / std``, as torchvision's
    ToTensor + Normalize). A user's function transforms its own batches, so
    ``normalize`` is refused there.

    ``val_size`` is how many training examples the built-in data and IDX folders hold out for
    validation (default: 5,000 from training sets of 25,000 or more, else 10 %); every drop a
    run decides on is read there, so more examples mean less noise (the standard error of a
    paired drop falls as 1/sqrt(val_size)). A model must be tuned on the split it was trained
    with: ``Splits.split`` records it and model files keep it.

    >>> import nncompress as nnc
    >>> digits = nnc.load_data("digits")                      # ships with scikit-learn
    >>> digits.train_x.shape, digits.val_x.shape, digits.num_classes
    (torch.Size([1295, 1, 8, 8]), torch.Size([143, 1, 8, 8]), 10)
    >>> unit = nnc.load_data("digits", normalize="unit")
    >>> unit.transform["normalize"], float(unit.train_x.min()), float(unit.train_x.max())
    ('unit', 0.0, 1.0)
    """
    kind, explicit = _normalize_kind(normalize)
    if val_size is not None and (not is_int(val_size) or val_size < 1):
        raise ConfigError(f"val_size must be a positive number of examples, got {val_size!r}", field="val_size")
    if is_import_spec(spec) and not Path(spec).is_dir():
        if val_size is not None:
            raise ConfigError(
                f"val_size applies to image folders and the built-in data; {spec} gives its own splits",
                field="val_size",
            )
        if normalize is not None:
            raise ConfigError(
                f"normalize {normalize!r} applies to image folders and the built-in data; "
                f"{spec} gives its own batches: transform them in that function"
            )
        from nncompress.data.loaders import splits_from_function  # loaders build on Splits

        return splits_from_function(spec, split_seed=split_seed)
    if spec == "fashion-mnist":
        folder = fashion_mnist_dir()
        if not folder.is_dir():
            raise DataError(f"Fashion-MNIST not found: no folder {folder}; {_INSTALL_HINT}")
        return _load_idx_folder(
            folder, "fashion-mnist", split_seed, hint=_INSTALL_HINT, norm=(kind, explicit), val_size=val_size
        )
    if spec == "digits":
        return _load_digits(split_seed, norm=(kind, explicit), val_size=val_size)
    folder = Path(spec)
    if folder.is_dir():
        name = data_name(spec) or str(folder)
        return _load_idx_folder(folder, name, split_seed, hint=None, norm=(kind, explicit), val_size=val_size)
    raise DataError(
        f"unknown data spec {spec!r} (not an existing folder): expected 'fashion-mnist', 'digits', "
        f"a path to a folder holding {', '.join(f'{n}(.gz)' for n in IDX_FILES)}, or 'package.module:function' "
        "returning data loaders"
    )


def data_name(spec: str) -> Optional[str]:
    """The name ``load_data(spec)`` gives built-in data or an IDX folder (what files record as their
    ``data``); None for a user's function."""
    if spec in ("fashion-mnist", "digits"):
        return spec
    if is_import_spec(spec) and not Path(spec).is_dir():
        return None
    return Path(spec).name or str(Path(spec))


def _find_file(folder: Path, name: str, hint: str | None) -> Path:
    """Return the plain file if present (cheaper to read), else its .gz twin."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
        if os.path.lexists(candidate):  # a FIFO, device, folder or dangling link: say so, never open it
            check_input_file(candidate, f"data file {candidate}", DataError)
    msg = f"missing data file {name} (or {name}.gz) in {folder}"
    raise DataError(f"{msg}; {hint}" if hint else msg)


def _check_pair(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path) -> None:
    """Reject image/label files that cannot belong together."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{img_path}: expected 3-D uint8 images (N, H, W), got {images.ndim}-D {images.dtype} "
            f"with shape {images.shape}"
        )
    if labels.ndim != 1:
        raise DataError(f"{lbl_path}: expected 1-D labels, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"image/label count mismatch: {img_path} holds {len(images)} images but "
            f"{lbl_path} holds {len(labels)} labels"
        )
    if len(labels) == 0:
        raise DataError(f"{img_path}: holds no images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{lbl_path}: labels must be integers, got {labels.dtype}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= 256:
        raise DataError(f"{lbl_path}: labels must lie in 0..255, found range {lo}..{hi}")


def _held_out(n: int, val_size: Optional[int], default: int, what: str) -> int:
    """Validation examples to hold out of ``n``: ``val_size``, else ``default``; at least one must stay to train."""
    if val_size is None:
        return default
    if val_size >= n:
        raise ConfigError(
            f"val_size {val_size:,} leaves nothing to train on: {what} has {n:,} training examples", field="val_size"
        )
    return val_size


def _load_idx_folder(
    folder: Path, name: str, split_seed: int, hint: str | None, norm: tuple[str, Any], val_size: Optional[int] = None
) -> Splits:
    """Read the four standard IDX files and hold out a seeded validation split of train."""
    paths = [_find_file(folder, n, hint) for n in IDX_FILES]
    train_img, train_lbl, test_img, test_lbl = (read_idx(p) for p in paths)
    _check_pair(train_img, train_lbl, paths[0], paths[1])
    _check_pair(test_img, test_lbl, paths[2], paths[3])
    if train_img.shape[1:] != test_img.shape[1:]:
        raise DataError(
            f"image size mismatch: {paths[0]} holds {train_img.shape[1:]} images but "
            f"{paths[2]} holds {test_img.shape[1:]}"
        )
    n = len(train_lbl)
    if n < 2:
        raise DataError(f"{paths[0]}: needs at least 2 training images to hold out a validation split, has {n}")
    num_classes = int(train_lbl.max()) + 1
    bad = int(test_lbl.max())
    if bad >= num_classes:
        raise DataError(
            f"{paths[3]}: test label {bad} does not occur in training data ({paths[1]} has labels 0..{num_classes - 1})"
        )
    default = _VAL_SIZE if n >= _VAL_FIXED_MIN_TRAIN else max(1, int(n * _VAL_FRACTION))
    n_val = _held_out(n, val_size, default, str(paths[0]))
    perm = np.random.default_rng(split_seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    log.info("loaded %s from %s: %d train, %d val, %d test", name, folder, n - n_val, n_val, len(test_lbl))
    return _build(
        name,
        train_img[train_idx],
        train_lbl[train_idx],
        train_img[val_idx],
        train_lbl[val_idx],
        test_img,
        test_lbl,
        max_value=255,
        num_classes=num_classes,
        norm=norm,
        split={"seed": split_seed, "val": n_val},
    )


def _load_digits(split_seed: int, norm: tuple[str, Any], val_size: Optional[int] = None) -> Splits:
    """scikit-learn's embedded 8×8 digits: seeded 20% test, then 10% of the rest as validation."""
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # integral values 0..16
    labels = bunch.target.astype(np.int64)
    n = len(labels)
    n_test = max(1, int(n * _DIGITS_TEST_FRACTION))
    n_val = _held_out(n - n_test, val_size, max(1, int((n - n_test) * _VAL_FRACTION)), "digits")
    perm = np.random.default_rng(split_seed).permutation(n)
    test_idx = np.sort(perm[:n_test])
    val_idx = np.sort(perm[n_test : n_test + n_val])
    train_idx = np.sort(perm[n_test + n_val :])
    return _build(
        "digits",
        images[train_idx],
        labels[train_idx],
        images[val_idx],
        labels[val_idx],
        images[test_idx],
        labels[test_idx],
        max_value=16,
        num_classes=int(labels.max()) + 1,
        norm=norm,
        split={"seed": split_seed, "val": n_val},
    )


def _build(
    name: str,
    train_img: np.ndarray,
    train_lbl: np.ndarray,
    val_img: np.ndarray,
    val_lbl: np.ndarray,
    test_img: np.ndarray,
    test_lbl: np.ndarray,
    *,
    max_value: int,
    num_classes: int,
    norm: tuple[str, Any],
    split: Optional[dict[str, int]] = None,
) -> Splits:
    """Scale pixels as ``norm`` says (by default: to [0,1], then standardised with train-split
    statistics) and wrap them as N×1×H×W float32 tensors."""
    kind, explicit = norm
    divisor, mean, std = float(max_value), 0.0, 1.0
    if kind == "standardize":
        # Mean/std from a histogram of the uint8 train pixels: exact in float64 and much cheaper
        # than materialising a float64 copy of tens of millions of pixels.
        flat = torch.from_numpy(np.ascontiguousarray(train_img)).view(-1)  # torch's bincount avoids an int64 copy
        hist = torch.bincount(flat, minlength=256).numpy().astype(np.float64)
        values = np.arange(len(hist), dtype=np.float64) / max_value
        total = hist.sum()
        mean = float((hist * values).sum() / total)
        std = float(np.sqrt((hist * (values - mean) ** 2).sum() / total))
        if std < 1e-12:
            log.warning("%s: train pixels are constant; skipping division by std", name)
            std = 1.0
    elif kind == "none":
        divisor = 1.0
    elif kind == "explicit":
        mean, std = explicit
    scale, shift = 1.0 / (divisor * std), mean / std
    transform = {
        "normalize": kind,
        "divisor": divisor,
        "mean": mean,
        "std": std,
        "formula": "x = (pixel / divisor - mean) / std",
    }
    log.info("%s inputs: %s", name, describe_transform(transform))

    def to_x(img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(img)).to(torch.float32)
        return x.mul_(scale).sub_(shift).unsqueeze(1).contiguous()

    def to_y(lbl: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(lbl.astype(np.int64))  # astype copies: tensors never alias inputs

    h, w = int(train_img.shape[1]), int(train_img.shape[2])
    return Splits(
        name=name,
        train_x=to_x(train_img),
        train_y=to_y(train_lbl),
        val_x=to_x(val_img),
        val_y=to_y(val_lbl),
        test_x=to_x(test_img),
        test_y=to_y(test_lbl),
        input_shape=(1, h, w),
        num_classes=num_classes,
        transform=transform,
        split=split,
    )
