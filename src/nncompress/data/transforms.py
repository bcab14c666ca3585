"""How raw inputs become the tensors a model sees, and what files record of it to do it again: the input
transform (``normalize``) and the validation split of the built-in data (``val_size``)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np

from nncompress.errors import ConfigError
from nncompress.plain import is_int

Normalize = Union[str, tuple[float, float], Mapping[str, float], None]
NORMALIZE_CHOICES = ("standardize", "unit", "none")


def _normalize_kind(normalize: Normalize) -> tuple[str, Optional[tuple[float, float]]]:
    """("standardize" | "unit" | "none" | "explicit", (mean, std) when explicit); bad values are ConfigErrors."""
    if normalize is None:
        return "standardize", None
    if isinstance(normalize, str):
        text = normalize.strip().lower().replace("standardise", "standardize")
        if text in NORMALIZE_CHOICES:
            return text, None
        parts = text.split(",")
        try:
            mean, std = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(
                f"normalize {normalize!r}: expected one of {', '.join(NORMALIZE_CHOICES)} or "
                "'MEAN,STD' (applied to inputs scaled to [0, 1])"
            ) from None
        normalize = (mean, std)
    if isinstance(normalize, Mapping):
        if set(normalize) != {"mean", "std"}:
            raise ConfigError(f"normalize {dict(normalize)}: a mapping needs exactly the keys 'mean' and 'std'")
        normalize = (normalize["mean"], normalize["std"])
    try:
        mean, std = (float(v) for v in normalize)
    except (TypeError, ValueError):
        raise ConfigError(
            f"normalize {normalize!r}: expected one of {', '.join(NORMALIZE_CHOICES)}, "
            "a (mean, std) pair or {'mean': ..., 'std': ...}"
        ) from None
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise ConfigError(f"normalize: mean {mean} and std {std} must be finite numbers with std > 0")
    return "explicit", (mean, std)


def describe_transform(transform: Optional[Mapping[str, Any]]) -> str:
    """One line for logs and reports: how raw inputs became the tensors a model sees."""
    if not transform:
        return "as given"
    if "divisor" not in transform:
        return str(transform.get("normalize", "as given"))
    return (
        f"{transform['normalize']}: x = (pixel / {transform['divisor']:g} - {transform['mean']:.6g}) "
        f"/ {transform['std']:.6g}"
    )


def recorded_normalize(transform: Any) -> Normalize:
    """The ``normalize`` argument that reproduces a transform a file recorded (see
    ``transform_record``); None, i.e. the default, for anything else."""
    if not isinstance(transform, Mapping):
        return None
    kind = transform.get("normalize")
    if kind in ("unit", "none"):
        return kind
    if kind == "explicit":
        try:
            return _normalize_kind({"mean": transform["mean"], "std": transform["std"]})[1]
        except (KeyError, ConfigError):
            return None
    return None


def transform_record(transform: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """What a compressed file records of its data's input transform: nothing for the default
    (train-split standardisation, which the same data reproduces), else how to redo it."""
    if not transform or transform.get("normalize") in (None, "standardize"):
        return None
    if transform["normalize"] == "explicit":
        return {"normalize": "explicit", "mean": float(transform["mean"]), "std": float(transform["std"])}
    return {"normalize": str(transform["normalize"])}


def recorded_val_size(split: Any) -> Optional[int]:
    """The ``val_size`` a file recorded of its training data's validation split (``Splits.split``), or None."""
    if isinstance(split, Mapping) and is_int(split.get("val")) and split["val"] >= 1:
        return int(split["val"])
    return None
