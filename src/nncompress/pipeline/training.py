"""Training a model from its current weights, as a pipeline stage."""

from __future__ import annotations

import time
from typing import Any, Optional

from torch import nn

from nncompress import distributed
from nncompress.config import TrainConfig
from nncompress.data import Splits
from nncompress.errors import ConfigError
from nncompress.progress import ProgressFn
from nncompress.train import fit, set_seed
from nncompress.train.objective import Objective, resolve_objective
from nncompress.train.journal import Journal
from nncompress.pipeline.measure import metrics


def train_model(
    model: nn.Module,
    splits: Splits,
    cfg: TrainConfig,
    progress: Optional[ProgressFn] = None,
    journal: Optional[Journal] = None,
    objective: Optional[Objective] = None,
) -> dict[str, Any]:
    """Train from the current weights: on the labels, or by ``objective`` (e.g. a user loss)."""
    if objective is None and not splits.has_labels:
        raise ConfigError(
            f"{splits.name} carries no labels: training from scratch needs labels or a user "
            "objective with a loss; label-free data compress a trained model by distilling from it"
        )
    objective = objective or resolve_objective(None, model, splits)
    gen = set_seed(cfg.seed)
    t0 = time.perf_counter()
    losses = fit(
        model,
        splits.train_x,
        splits.train_y,
        cfg,
        generator=gen,
        progress=progress,
        journal=journal,
        objective=objective,
    )
    distributed.check_identical(distributed.model_tensors(model), "the trained weights")
    return {
        "train_seconds": round(time.perf_counter() - t0, 2),
        "train_losses": losses,
        "val": metrics(model, splits, "val", objective),
        "train": cfg.to_dict(),
    }
