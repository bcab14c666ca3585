"""Built-in models, models from an import path, and their architecture records.

A model is described by an *architecture record* holding plain values only,
so a file can rebuild the network without pickling code: a built-in model's
``{"name": str, "config": dict}`` (its exact, possibly shrunk, sizes), or a
factory's ``{"factory": "module:name", "kwargs": dict}`` (the original sizes;
``fit_shapes_`` then fits them to the stored tensors).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from torch import nn

from nncompress.errors import ModelError
from nncompress.imports import is_import_spec
from nncompress.models.factory import (
    Trust,
    build_from_spec,
    factory_record,
    is_factory_record,
    names_recorded_factory,
    plain_kwargs,
    record_factory,
    remember,
    trusted_factory,
)
from nncompress.models.fit import fit_shapes_
from nncompress.models.lenet import LeNet5, LeNet300, DigitsMLP
from nncompress.models.vgg import VGG11, VGG16

#: A built-in model: each has a ``default`` classmethod and a ``config()`` that rebuilds it.
Builtin = Union[LeNet300, LeNet5, DigitsMLP, VGG11, VGG16]

MODELS: dict[str, type[Builtin]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "mlp": DigitsMLP,
    "vgg11": VGG11,
    "vgg16": VGG16,
}


def build_model(
    spec: str,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    kwargs: Optional[Mapping[str, Any]] = None,
) -> nn.Module:
    """Build a fresh model: a built-in name sized for the data it will see, or an
    import path ``pkg.module:factory`` / ``path/to/file.py:factory`` called with
    ``**kwargs`` (plain JSON values, recorded so files can rebuild it)."""
    if isinstance(spec, str) and is_import_spec(spec):
        return build_from_spec(spec, kwargs)
    if spec not in MODELS:
        raise ModelError(
            f"unknown model {spec!r}: choose one of {', '.join(sorted(MODELS))}, or name a factory "
            "as 'package.module:factory' or 'path/to/file.py:factory'"
        )
    if kwargs:
        raise ModelError(
            f"built-in model {spec!r} takes no kwargs (got {sorted(kwargs)}): its sizes follow the "
            "data; name your own factory to choose them"
        )
    try:
        return MODELS[spec].default(input_shape=input_shape, num_classes=num_classes)
    except ValueError as exc:
        raise ModelError(f"cannot build {spec} for inputs of shape {input_shape}: {exc}") from exc


def arch_record(model: nn.Module) -> dict[str, Any] | None:
    """The architecture record of ``model``: a built-in's, else the factory it was
    built from (``build_model`` or ``record_factory``), else None."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return {"name": name, "config": model.config()}
    return factory_record(model)


def from_record(record: dict[str, Any], *, trust_factory: Trust = False) -> nn.Module:
    """Rebuild a model from its architecture record. A factory record is called
    only as ``trusted_factory`` allows, and gives the factory's original sizes."""
    if is_factory_record(record):
        factory, spec, kwargs = trusted_factory(record, trust_factory, "the architecture record")
        return remember(factory(**kwargs), spec, kwargs)
    if not isinstance(record, dict) or "name" not in record or "config" not in record:
        raise ModelError("architecture record must be a dict with 'name' and 'config', or 'factory' and 'kwargs'")
    name, config = record["name"], record["config"]
    if not isinstance(name, str) or name not in MODELS:
        raise ModelError(f"checkpoint names unknown model {str(name)[:100]!r}: known are {', '.join(sorted(MODELS))}")
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise ModelError(f"architecture record for {name!r} has a config that is not an object of named values")
    try:
        return MODELS[name](**config)
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:  # sizes torch cannot hold included
        raise ModelError(f"architecture record for {name!r} is invalid: {str(exc)[:300]}") from exc


__all__ = [
    "MODELS",
    "Trust",
    "factory_record",
    "build_model",
    "arch_record",
    "from_record",
    "record_factory",
    "fit_shapes_",
    "trusted_factory",
    "is_factory_record",
    "names_recorded_factory",
    "plain_kwargs",
    "remember",
    "LeNet300",
    "LeNet5",
    "DigitsMLP",
]
