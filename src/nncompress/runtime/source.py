"""A model and its example input size from a model file, with no data set at hand.

``evaluate`` sizes a model from the data; the runtime and the exports have only
the file: the input shape it recorded (``meta.input_shape``) or one the user gives.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

from torch import nn

from nncompress.errors import ConfigError


def recorded_shape(meta: Mapping[str, Any]) -> Optional[list[int]]:
    """The shape of one input example a file records, when it is a plain tensor shape."""
    shape = meta.get("input_shape")
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(s, int) and s > 0 for s in shape):
        return [int(s) for s in shape]
    return None


def parse_shape(text: Optional[str], flag: str = "--input-shape") -> Optional[list[int]]:
    """``"1,28,28"`` -> [1, 28, 28] (one example, no batch axis)."""
    if text is None:
        return None
    try:
        shape = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        shape = []
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(
            f"{flag} must be the shape of one input example without the batch axis, like 1,28,28 or 784; got {text!r}"
        )
    return shape


def check_shape(shape: Optional[Sequence[int]]) -> Optional[list[int]]:
    """A user's ``input_shape`` argument as a list of positive ints (None stays None)."""
    if shape is None:
        return None
    if isinstance(shape, int):
        shape = [shape]
    if (
        not isinstance(shape, (list, tuple))
        or not shape
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
    ):
        raise ConfigError(
            f"input_shape must be the shape of one example without the batch axis, like (1, 28, 28); got {shape!r}"
        )
    return [int(s) for s in shape]


def model_from_file(
    path: str | os.PathLike[str], model_name: Optional[str] = None, model_kwargs: Optional[Mapping[str, Any]] = None
) -> tuple[nn.Module, dict[str, Any]]:
    """(model, meta) from a ``.nnc`` file or checkpoint: its recorded architecture, or ``model_name`` (a
    built-in sized by the recorded input shape and classes, or a factory the user names and so trusts)."""
    from nncompress.imports import is_import_spec
    from nncompress.models import build_model, names_recorded_factory
    from nncompress.pipeline import read_model_file

    file = read_model_file(path)
    meta = dict(file.meta)
    named = names_recorded_factory(file.arch, model_name, model_kwargs)
    if named:
        return file.build_model(trust_factory=named), meta
    if model_name:
        if is_import_spec(model_name):
            fresh = build_model(model_name, kwargs=model_kwargs)
        else:
            shape = recorded_shape(meta)
            classes = meta.get("num_classes") if isinstance(meta.get("num_classes"), int) else None
            fresh = build_model(model_name, tuple(shape) if shape else None, classes, kwargs=model_kwargs)
        return file.build_model(fresh), meta
    return file.build_model(), meta


def input_shape_for(meta: Mapping[str, Any], given: Optional[Sequence[int]], what: str) -> list[int]:
    """The input shape to use: the one given, else the file's record; refused when neither exists."""
    shape = check_shape(given) or recorded_shape(meta)
    if shape is None:
        raise ConfigError(
            f"{what} needs the shape of one input example and the file records none: "
            "give --input-shape (input_shape= in Python), e.g. 1,28,28"
        )
    return shape
