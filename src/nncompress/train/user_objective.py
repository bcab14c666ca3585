"""A user's own loss and/or metric, with what it does not give taken from a built-in objective."""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from nncompress.data.batches import Inputs, OutputFn
from nncompress.errors import ConfigError
from nncompress.train.objective_base import AUTO, EVAL_BATCH, Objective

__all__ = ["LossFn", "MetricFn", "UserObjective"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], Union[torch.Tensor, float]]


class UserObjective(Objective):
    """A user's loss and/or metric. Both are called as ``fn(outputs, target)``, where
    ``target`` is the labels when the data carry them and the dense model's outputs
    otherwise. ``loss`` returns a scalar tensor to descend; ``metric`` returns one value
    per example or the batch's mean, and the score is its mean over the split.
    ``higher_is_better`` gives its direction; tolerances are in 1/100 of the metric.
    What is not given comes from ``base`` (default: "auto", the rule for the data)."""

    kind = "user"

    def __init__(
        self,
        loss: Optional[LossFn] = None,
        metric: Optional[MetricFn] = None,
        *,
        name: str = "metric",
        higher_is_better: bool = True,
        base: Union[str, Objective, None] = AUTO,
        output: Optional[OutputFn] = None,
    ) -> None:
        if loss is None and metric is None:
            raise ConfigError("a UserObjective needs a loss, a metric, or both")
        super().__init__(output)
        self.user_loss, self.user_metric = loss, metric
        self.base_spec = base
        self.base: Optional[Objective] = base if isinstance(base, Objective) and base.bound else None
        if metric is not None:
            self.metric = name
            self.higher_is_better = bool(higher_is_better)

    def _base(self) -> Objective:
        if self.base is None:
            raise ConfigError("a UserObjective is bound to the data and the dense model by resolve_objective first")
        return self.base

    @property
    def bound(self) -> bool:
        return self.base is not None

    def with_base(self, base: Objective) -> "UserObjective":
        bound = copy.copy(self)
        bound.base = base
        if self.user_metric is None:
            bound.metric, bound.higher_is_better = base.metric, base.higher_is_better
        bound.needs_labels = base.needs_labels
        bound.kl_probe = base.kl_probe
        bound.counts_examples = base.counts_examples and self.user_metric is None
        bound.uses_teacher_term = base.uses_teacher_term and self.user_loss is None
        bound.dense = base.dense
        return bound

    def outputs(self, model: nn.Module, inputs: Inputs) -> torch.Tensor:
        return self._base().outputs(model, inputs)

    def targets(self, inputs: Inputs, labels: Optional[torch.Tensor], batch_size: int = EVAL_BATCH) -> torch.Tensor:
        return self._base().targets(inputs, labels, batch_size)

    def _batch_targets(self, inputs: Inputs, labels: Optional[torch.Tensor]) -> torch.Tensor:
        return self._base()._batch_targets(inputs, labels)

    def train_loss(
        self, model: nn.Module, inputs: Inputs, labels: Optional[torch.Tensor], teacher: Any = None
    ) -> torch.Tensor:
        if self.user_loss is None:
            return self._base().train_loss(model, inputs, labels, teacher)
        return self.loss(self.outputs(model, inputs), self._batch_targets(inputs, labels))

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.user_loss(out, target) if self.user_loss is not None else self._base().loss(out, target)

    def batch_sums(self, out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        n = len(out)
        if self.user_loss is not None:
            loss_sum = float(self.user_loss(out, target)) * n
        else:
            loss_sum = self._base().batch_sums(out, target)[0]
        if self.user_metric is None:
            return loss_sum, self._base().batch_sums(out, target)[1]
        value = torch.as_tensor(self.user_metric(out, target), dtype=torch.float64)
        score_sum = float(value) * n if value.dim() == 0 else float(value.sum())
        return loss_sum, score_sum

    def example_scores(self, out: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
        if self.user_metric is None:
            return self._base().example_scores(out, target)
        value = torch.as_tensor(self.user_metric(out, target), dtype=torch.float64)
        return value.reshape(-1) if value.dim() == 1 and len(value) == len(out) else None

    def tolerance_text(self, points: float) -> str:
        if self.user_metric is None:
            return self._base().tolerance_text(points)
        direction = "higher" if self.higher_is_better else "lower"
        return f"{points / 100:g} of {self.metric} ({direction} is better)"

    def describe(self) -> dict[str, Any]:
        base = self._base().describe() if self.base is not None else None
        return {
            **super().describe(),
            "user_loss": self.user_loss is not None,
            "user_metric": self.user_metric is not None,
            "base": base,
        }
