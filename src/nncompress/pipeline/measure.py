"""What a model scores on a split by the run's objective, and what a saved file records of the data."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from torch import nn

from nncompress.data import Splits
from nncompress.data.batches import count
from nncompress.errors import ConfigError
from nncompress.pruning.apply import count_parameters
from nncompress.layers import compressible_layers
from nncompress.train.objective import Objective, ObjectiveSpec, resolve_objective


def _data_meta(splits: Splits) -> dict[str, Any]:
    shape = splits.input_shape
    meta = {
        "data": splits.name,
        "input_shape": dict(shape) if isinstance(shape, dict) else list(shape),
        "num_classes": splits.num_classes,
    }
    if splits.transform:
        meta["transform"] = splits.transform
    if splits.split:
        meta["split"] = dict(splits.split)
    return meta


def _objective(objective: ObjectiveSpec, model: nn.Module, splits: Splits) -> Objective:
    """The run's objective, bound to ``model`` as the dense reference where it distils."""
    return resolve_objective(objective, model, splits)


def metrics(
    model: nn.Module, splits: Splits, split: str = "test", objective: Optional[Objective] = None
) -> dict[str, Any]:
    """The objective's score and loss, and weight counts, of ``model`` on a split.

    The score is reported under its own name (``accuracy`` for classification,
    ``agreement`` or ``mean_cosine`` with the dense model for label-free data,
    a user metric's name) and as ``score``, with ``metric`` naming it. Label-free
    data need the ``objective`` bound to the dense model (``resolve_objective``):
    a model is only ever compared with that reference."""
    x, y = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
    if objective is None:
        if y is None:
            raise ConfigError(
                f"{splits.name} carries no labels: metrics need the objective bound to the dense "
                "model (nncompress.train.objective.resolve_objective(None, dense_model, splits))"
            )
        objective = resolve_objective(None, model, splits)
    loss, score = objective.evaluate(model, x, y)
    params, nonzero = count_parameters(model)
    out = {
        objective.metric: score,
        "loss": loss,
        "params": params,
        "nonzero": nonzero,
        "split": split,
        "examples": count(x),
        "metric": objective.metric,
        "score": score,
    }
    if objective.kind != "classification":
        out["objective"] = objective.describe()
    if split == "test" and splits.test_is_val:
        out["test_is_val"] = True
    return out


def _weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {n: m.weight.detach().cpu().numpy().copy() for n, m in compressible_layers(model).items()}
