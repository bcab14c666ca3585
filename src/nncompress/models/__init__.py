"""Built-in models and the name -> factory registry.

A model is described by an *architecture record*: ``{"name": str, "config": dict}``
holding plain values only, so a checkpoint can rebuild the exact (possibly shrunk)
network without pickling code.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from nncompress.errors import ModelError
from nncompress.models.lenet import LeNet5, LeNet300, DigitsMLP

ModelFactory = Callable[..., nn.Module]

MODELS: dict[str, type[nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "mlp": DigitsMLP,
}


def build_model(name: str, input_shape: tuple[int, ...] | None = None,
                num_classes: int | None = None) -> nn.Module:
    """Build a fresh built-in model sized for the data it will see."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name].default(input_shape=input_shape, num_classes=num_classes)
    except ValueError as exc:
        raise ModelError(f"cannot build {name} for inputs of shape {input_shape}: {exc}") from exc


def arch_record(model: nn.Module) -> dict[str, Any] | None:
    """The architecture record of a built-in model, or None for a foreign one."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return {"name": name, "config": model.config()}
    return None


def from_record(record: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its architecture record."""
    if not isinstance(record, dict) or "name" not in record or "config" not in record:
        raise ModelError("architecture record must be a dict with 'name' and 'config'")
    name = record["name"]
    if name not in MODELS:
        raise ModelError(f"checkpoint names unknown model {name!r}: known are {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**record["config"])
    except (TypeError, ValueError) as exc:
        raise ModelError(f"architecture record for {name!r} is invalid: {exc}") from exc


__all__ = ["MODELS", "build_model", "arch_record", "from_record", "LeNet300", "LeNet5", "DigitsMLP"]
