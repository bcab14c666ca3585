"""Model files in and out: read a checkpoint or ``.nnc`` file, build a model sized for the data,
check that a model takes the data, and save a trained one."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from nncompress import distributed
from nncompress.data import Splits
from nncompress.data.batches import call_model, describe, pick_output, take
from nncompress.memory import release_freed
from nncompress.errors import CheckpointError
from nncompress.imports import import_object, is_import_spec
from nncompress.models import Trust, build_model, names_recorded_factory
from nncompress.modelfile import (
    Compressed,
    CompressedHeader,
    is_compressed,
    load_compressed,
    read_compressed_header,
)
from nncompress.train.objective import Objective
from nncompress.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from nncompress.pipeline.measure import _data_meta


def read_model_file(path: str | os.PathLike[str]) -> "Checkpoint | Compressed":
    """A checkpoint or a compressed ``.nnc`` file, read and checked once; both give ``arch``,
    ``meta`` and ``build_model``."""
    return load_compressed(path) if is_compressed(path) else load_checkpoint(path)


def read_model_header(path: str | Path) -> "Checkpoint | CompressedHeader":
    """What a model file records (``arch``, ``meta``) without decoding a ``.nnc`` file's weights
    (a checkpoint has no header apart from its tensors, so it is read whole)."""
    return read_compressed_header(path) if is_compressed(path) else load_checkpoint(path)


def load_model_file(
    path: str | Path, model: Optional[nn.Module] = None, *, trust_factory: Trust = False
) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint or a compressed ``.nnc`` file -> (model, meta). ``model``
    is needed only for files that record no architecture; a recorded factory
    that is not an nn.Module class is called only when ``trust_factory`` names it."""
    file = read_model_file(path)
    built, meta = file.build_model(model, trust_factory=trust_factory), dict(file.meta)
    del file  # the state it read is in the model now
    release_freed()
    return built, meta


def data_kwargs(spec: str, splits: Splits, kwargs: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """A factory's keyword arguments, with the sizes the data implies filled in where the
    factory takes them and the user did not give them: ``num_classes``, ``in_channels``,
    ``input_shape``. So ``--model nets:resnet`` fits Fashion-MNIST and digits alike."""
    out = dict(kwargs or {})
    try:
        params = inspect.signature(import_object(spec, "--model")).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): nothing to fill in
        return out
    shape = splits.input_shape if isinstance(splits.input_shape, tuple) else None
    implied = {
        "num_classes": splits.num_classes,
        "in_channels": shape[0] if shape else None,
        "input_shape": list(shape) if shape else None,
    }
    for name, value in implied.items():
        if name in params and name not in out and value is not None:
            out[name] = value
    return out


def model_for_data(spec: str, splits: Splits, kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """A fresh model for ``splits``: a built-in name sized for the data, or a factory
    ``pkg.module:name`` called with ``kwargs`` (and the sizes the data implies)."""
    if is_import_spec(spec):
        return build_model(spec, kwargs=data_kwargs(spec, splits, kwargs))
    return build_model(spec, splits.input_shape, splits.num_classes, kwargs=kwargs)


def load_for_data(
    path: str | Path, splits: Splits, model_name: Optional[str] = None, model_kwargs: Optional[Mapping[str, Any]] = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model file into its recorded architecture, or into ``model_name`` (a
    built-in or a factory the user names, which is then trusted), and check it fits
    the data. A file that records the same factory keeps its recorded kwargs unless
    ``model_kwargs`` are given."""
    file = read_model_file(path)
    named = names_recorded_factory(file.arch, model_name, model_kwargs)
    if named:
        model = file.build_model(trust_factory=named)
    else:
        model = file.build_model(model_for_data(model_name, splits, model_kwargs) if model_name else None)
    check_fits(model, splits, f"model in {path}")
    return model, dict(file.meta)


def check_fits(model: nn.Module, splits: Splits, what: str, objective: Optional[Objective] = None) -> None:
    """One forward pass on two validation examples: a model that cannot take
    this data fails here with a clear message, not deep inside training."""
    sample = take(splits.val_x, slice(0, 2))
    try:
        with torch.no_grad():
            raw = call_model(model.eval(), sample)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        shape = f"of shape {tuple(splits.input_shape)}" if isinstance(sample, torch.Tensor) else describe(sample)
        raise CheckpointError(
            f"{what} does not accept {splits.name} inputs {shape}: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
        ) from exc
    out, _ = pick_output(raw, objective.output if objective is not None else None)
    classifying = objective is None or objective.kind == "classification"
    if classifying and splits.num_classes is not None and out.shape[-1] != splits.num_classes:
        raise CheckpointError(f"{what} has {out.shape[-1]} outputs but {splits.name} has {splits.num_classes} classes")


def save_trained(model: nn.Module, splits: Splits, out: str | Path, info: dict[str, Any]) -> None:
    distributed.on_main(lambda: save_checkpoint(out, model, meta={**_data_meta(splits), **info}, storage="dense"))
