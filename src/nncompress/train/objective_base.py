"""The Objective base every loop asks (a batch's loss, a split's score) and classification, its labelled case.

The kinds and the "auto" rule are described in ``nncompress.train.objective``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nncompress import distributed
from nncompress.data.batches import Inputs, OutputFn, call_model, count, model_device, pick_output, take, to_device
from nncompress.errors import DataError

__all__ = ["AUTO", "Classification", "EVAL_BATCH", "KINDS", "Objective"]

AUTO = "auto"
KINDS = ("classification", "kl", "cosine", "mse")
EVAL_BATCH = 1000


class Objective:
    """Base of every objective: how outputs are picked, a batch's loss, a split's score."""

    kind = "objective"
    metric = "score"
    higher_is_better = True
    needs_labels = False
    kl_probe = False  # outputs are logits: the probe's KL test applies
    counts_examples = False  # the score is a fraction of examples (1 example = 100/n points)
    uses_teacher_term = False  # the pruner's ``distill`` adds the Teacher term to this loss

    def __init__(self, output: Optional[OutputFn] = None) -> None:
        self.output = output
        self.dense: Optional[nn.Module] = None

    # -- binding -------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return True

    def bind(self, dense: nn.Module) -> "Objective":
        """This objective tied to ``dense`` as the reference (a frozen copy); a no-op where none is needed."""
        return self

    # -- outputs and targets -------------------------------------------------
    def outputs(self, model: nn.Module, inputs: Inputs) -> torch.Tensor:
        return pick_output(call_model(model, inputs), self.output)[0]

    def targets(self, inputs: Inputs, labels: Optional[torch.Tensor], batch_size: int = EVAL_BATCH) -> torch.Tensor:
        """What a split's outputs are compared with: its labels here; the dense model's outputs for distillation."""
        if labels is None:
            raise DataError(
                f"the {self.kind} objective needs labels, and these data carry none; "
                "use a label-free objective ('kl', 'cosine', 'mse') or a UserObjective"
            )
        return labels

    # -- what subclasses define ------------------------------------------------
    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def batch_sums(self, out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        """(sum of per-example losses, sum of per-example scores) of one batch."""
        raise NotImplementedError

    def example_scores(self, out: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
        """One score per example of a batch (the split's score is their mean), so two models can be
        compared on the same examples; None where the score is not such a mean."""
        return None

    # -- used by the loops -----------------------------------------------------
    def train_loss(
        self, model: nn.Module, inputs: Inputs, labels: Optional[torch.Tensor], teacher: Any = None
    ) -> torch.Tensor:
        """The loss of one training batch (``teacher``: classification's optional distillation term)."""
        out = self.outputs(model, inputs)
        return self.loss(out, self._batch_targets(inputs, labels))

    def _batch_targets(self, inputs: Inputs, labels: Optional[torch.Tensor]) -> torch.Tensor:
        return self.targets(inputs, labels)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, inputs: Inputs, labels: Optional[torch.Tensor], batch_size: int = EVAL_BATCH
    ) -> tuple[float, float]:
        """(mean loss, score) of ``model`` on one split; the model's train/eval mode is restored."""
        was_training = model.training
        model.eval()
        device = model_device(model)
        targets = self.targets(inputs, labels, batch_size)
        loss, score = 0.0, 0.0
        n = count(inputs)
        lo, hi = distributed.span(n)  # under torchrun each rank scores its share; the sums are added up
        try:
            for i in range(lo, hi, batch_size):
                end = min(i + batch_size, hi)
                out = self.outputs(model, to_device(take(inputs, slice(i, end)), device))
                batch_loss, batch_score = self.batch_sums(out, targets[i:end].to(device))
                loss += batch_loss
                score += batch_score
        finally:
            model.train(was_training)
        if distributed.active():
            loss, score = distributed.all_sum([loss, score])
        n = max(1, n)
        return loss / n, score / n

    def score(self, model: nn.Module, inputs: Inputs, labels: Optional[torch.Tensor]) -> float:
        return self.evaluate(model, inputs, labels)[1]

    def signed(self, score: float) -> float:
        """The score as the pruner reads it: higher is always better (a lower-is-better metric is negated)."""
        return score if self.higher_is_better else -score

    # -- words -----------------------------------------------------------------
    def tolerance_text(self, points: float) -> str:
        """A tolerance of ``points`` (1/100 of the score) in the metric's own units."""
        return f"{points / 100:g} of {self.metric}"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "higher_is_better": self.higher_is_better}


class Classification(Objective):
    """Labels present: cross-entropy, scored by accuracy."""

    kind = "classification"
    metric = "accuracy"
    needs_labels = True
    kl_probe = True
    counts_examples = True
    uses_teacher_term = True

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target)

    def train_loss(
        self, model: nn.Module, inputs: Inputs, labels: Optional[torch.Tensor], teacher: Any = None
    ) -> torch.Tensor:
        logits = self.outputs(model, inputs)
        target = self.targets(inputs, labels)
        return F.cross_entropy(logits, target) if teacher is None else teacher.loss(logits, inputs, target)

    def batch_sums(self, out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        return F.cross_entropy(out, target, reduction="sum").item(), int((out.argmax(1) == target).sum())

    def example_scores(self, out: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
        return (out.argmax(1) == target).float()

    def tolerance_text(self, points: float) -> str:
        return f"{points:g} points of accuracy"
