"""Label-free objectives: the dense model's outputs are the targets (KL of logits, cosine or MSE of outputs).

A distilling objective is bound to a frozen copy of the dense model; its
outputs on a split are computed once and reused for every score on that split.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.data.batches import Inputs, OutputFn, count, model_device, take, to_device
from nncompress.errors import ConfigError
from nncompress.train.objective_base import EVAL_BATCH, Objective

__all__ = ["CosineDistillation", "Distillation", "KLDistillation", "LABEL_FREE", "MSEDistillation"]


def _per_example(values: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first."""
    return values.reshape(len(values), -1).mean(1) if values.dim() > 1 else values


class Distillation(Objective):
    """No labels: the dense model's outputs are the targets."""

    def __init__(self, output: Optional[OutputFn] = None) -> None:
        super().__init__(output)
        self._cache: dict[int, tuple[Inputs, torch.Tensor]] = {}

    @property
    def bound(self) -> bool:
        return self.dense is not None

    def bind(self, dense: nn.Module) -> "Objective":
        bound = copy.copy(self)
        bound.dense = copy.deepcopy(dense).eval()
        for p in bound.dense.parameters():
            p.requires_grad_(False)
        bound._cache = {}
        return bound

    def _reference(self) -> nn.Module:
        if self.dense is None:
            raise ConfigError(
                f"the {self.kind} objective is not bound to a dense model: "
                "call resolve_objective(objective, dense_model, splits) first"
            )
        return self.dense

    def _batch_targets(self, inputs: Inputs, labels: Optional[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return self.outputs(self._reference(), inputs)

    @torch.no_grad()
    def targets(self, inputs: Inputs, labels: Optional[torch.Tensor], batch_size: int = EVAL_BATCH) -> torch.Tensor:
        """The dense model's outputs on a whole split, computed once per split (kept on the CPU)."""
        hit = self._cache.get(id(inputs))
        if hit is not None and hit[0] is inputs:
            return hit[1]
        dense = self._reference()
        device = model_device(dense)
        outs = torch.cat(
            [
                self.outputs(dense, to_device(take(inputs, slice(i, i + batch_size)), device)).cpu()
                for i in range(0, count(inputs), batch_size)
            ]
        )
        self._cache[id(inputs)] = (inputs, outs)  # the inputs are held so their id cannot be reused
        return outs

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reference": "the dense model's outputs"}


class KLDistillation(Distillation):
    kind = "kl"
    metric = "agreement"
    kl_probe = True
    counts_examples = True

    def __init__(self, output: Optional[OutputFn] = None, temperature: float = 1.0) -> None:
        super().__init__(output)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a positive number, got {temperature}")
        self.temperature = float(temperature)

    def _kl(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per position KL(dense || model) of the softened distributions, shape = out.shape[:-1]."""
        t = self.temperature
        logp = F.log_softmax(out.float() / t, dim=-1)
        logq = F.log_softmax(target.float() / t, dim=-1)
        return (logq.exp() * (logq - logp)).sum(-1) * t * t

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._kl(out, target).mean()

    def batch_sums(self, out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        agree = (out.argmax(-1) == target.argmax(-1)).float()
        return float(_per_example(self._kl(out, target)).sum()), float(_per_example(agree).sum())

    def example_scores(self, out: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
        return _per_example((out.argmax(-1) == target.argmax(-1)).float())

    def tolerance_text(self, points: float) -> str:
        return f"{points:g} points of top-1 agreement with the dense model"


def _cosine(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(out.float().reshape(len(out), -1), target.float().reshape(len(target), -1), dim=1)


class CosineDistillation(Distillation):
    kind = "cosine"
    metric = "mean_cosine"

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1 - _cosine(out, target)).mean()

    def batch_sums(self, out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        cos = _cosine(out, target)
        return float((1 - cos).sum()), float(cos.sum())

    def example_scores(self, out: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
        return _cosine(out, target)

    def tolerance_text(self, points: float) -> str:
        return f"{points / 100:g} of mean cosine to the dense model's outputs"


class MSEDistillation(CosineDistillation):
    kind = "mse"

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out.float(), target.float())

    def batch_sums(self, out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        err = _per_example((out.float() - target.float()) ** 2)
        return float(err.sum()), float(_cosine(out, target).sum())


# The label-free kinds by name, as `resolve_objective` builds them.
LABEL_FREE: dict[str, type[Distillation]] = {
    "kl": KLDistillation,
    "cosine": CosineDistillation,
    "mse": MSEDistillation,
}
