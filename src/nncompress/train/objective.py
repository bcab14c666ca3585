"""What "better" means for a run: the loss training descends and the score every decision reads.

Training, evaluation, the fine-tuning probe and the sensitivity scan ask an
objective; none of them assumes labels.

- ``classification`` (data with labels): cross-entropy (plus the optional
  distillation ``Teacher`` term); score = accuracy.
- ``kl`` (label-free): distillation from the dense model, KL divergence of the
  softmax of the outputs (over the last dimension, averaged over positions);
  score = agreement of the top-1 class with the dense model's.
- ``cosine`` / ``mse`` (label-free): the outputs (embeddings, hidden states)
  pulled towards the dense model's by 1 - cosine or by mean squared error;
  score = mean cosine to the dense model's outputs, per example on the
  flattened output (a sequence of token states counts as one vector, padding
  positions included, so no attention mask is needed to compute it).
- a user's ``UserObjective``: a loss and/or a metric with its direction.

Without labels the "auto" rule distils by ``kl`` when the judged output came
from a ``.logits`` field (a classifier or language model), and by ``cosine``
otherwise; the choice is logged. Scores are fractions where 1.0 is perfect
(or a user metric); a pruner's tolerance is in points, 1/100 of the score, and
``tolerance_text`` states it in the score's own units. A distilling objective
is bound to a frozen copy of the dense model; its outputs on a split are
computed once and reused for every score on that split.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from nncompress import distributed
from nncompress.data.batches import Inputs, OutputFn, call_model, count, model_device, pick_output, take, to_device
from nncompress.errors import ConfigError, DataError

__all__ = [
    "AUTO",
    "Classification",
    "Distillation",
    "KINDS",
    "Objective",
    "ObjectiveSpec",
    "UserObjective",
    "default_objective",
    "resolution_warning",
    "resolve_objective",
]

log = logging.getLogger(__name__)

AUTO = "auto"
KINDS = ("classification", "kl", "cosine", "mse")
EVAL_BATCH = 1000
# The resolution warning fires when the tolerance spans fewer validation examples than this.
MIN_TOLERANCE_EXAMPLES = 5


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


_LABEL_FREE: dict[str, type[Distillation]] = {
    "kl": KLDistillation,
    "cosine": CosineDistillation,
    "mse": MSEDistillation,
}
ObjectiveSpec = Union[None, str, Objective]


def default_objective(labels: Optional[torch.Tensor]) -> Objective:
    """What loops use when no objective is given: classification; label-free data need one bound to a model."""
    if labels is None:
        raise ConfigError(
            "these data carry no labels: give an objective bound to the dense model "
            "(nncompress.train.objective.resolve_objective(None, model, splits) distils from it)"
        )
    return Classification()


def _auto_label_free(model: nn.Module, val_x: Inputs, output: Optional[OutputFn]) -> str:
    """ "kl" when the judged output came from ``.logits``, else "cosine"."""
    device, training = model_device(model), model.training
    model.eval()
    try:
        with torch.no_grad():
            _, source = pick_output(call_model(model, to_device(take(val_x, slice(0, 2)), device)), output)
    finally:
        model.train(training)
    return "kl" if source == "logits" else "cosine"


def resolve_objective(
    spec: ObjectiveSpec, model: nn.Module, splits: Any, *, output: Optional[OutputFn] = None
) -> Objective:
    """The objective of a run on ``splits``, bound to ``model`` (the dense reference) where it distils.

    ``spec``: None or "auto" (classification with labels; without, "kl" when the
    output is ``.logits``, else "cosine"), one of ``KINDS``, or an ``Objective``
    (bound here if it is not yet). ``output`` picks the judged tensor from what
    the model returns (``nncompress.data.batches.pick_output``)."""
    labelled = splits.train_y is not None
    if isinstance(spec, UserObjective):
        if spec.bound:
            return spec
        base = resolve_objective(spec.base_spec, model, splits, output=spec.output or output)
        return spec.with_base(base)
    if isinstance(spec, Objective):
        return spec if spec.bound else spec.bind(model)
    if spec is None or spec == AUTO:
        if labelled:
            return Classification(output)
        kind = _auto_label_free(model, splits.val_x, output)
        chosen = _LABEL_FREE[kind](output).bind(model)
        log.info(
            "%s carries no labels: distilling from the dense model by %s; score = %s (%s)",
            splits.name,
            "KL divergence of its logits" if kind == "kl" else "cosine of its outputs",
            chosen.metric,
            "the output is .logits" if kind == "kl" else "the output is not .logits",
        )
        return chosen
    if spec == "classification":
        if not labelled:
            raise ConfigError(
                f"objective 'classification' needs labels, and {splits.name} carries none; "
                "use 'auto', 'kl', 'cosine' or 'mse' to distil from the dense model"
            )
        return Classification(output)
    if spec in _LABEL_FREE:
        return _LABEL_FREE[spec](output).bind(model)
    raise ConfigError(
        f"unknown objective {spec!r}: expected 'auto', {', '.join(repr(k) for k in KINDS)} or an Objective"
    )


def against_reference(spec: ObjectiveSpec, reference: nn.Module, splits: Any) -> Objective:
    """An objective that scores a model against ``reference``'s outputs whether or not the
    data carry labels: ``spec`` None/"auto" picks "kl" for logits, else "cosine"."""
    if spec is None or spec == AUTO:
        spec = _auto_label_free(reference, splits.val_x, None)
    if spec == "classification":
        raise ConfigError(
            "a reference model is compared by its outputs: use the objective 'auto', 'kl', 'cosine' or 'mse' with it"
        )
    return resolve_objective(spec, reference, splits)


def resolution_warning(objective: Objective, tolerance: float, n_val: int, dense_score: float) -> Optional[str]:
    """Why a validation split of ``n_val`` examples cannot resolve a ``tolerance`` (points) of this
    score, or None. Applies to scores that count examples (accuracy, agreement): one example is
    100/n points, and the standard error of a fraction p is sqrt(p(1-p)/n)."""
    if not objective.counts_examples or n_val <= 0:
        return None
    examples = tolerance / 100 * n_val
    p = min(max(dense_score, 0.0), 1.0)
    se = 100 * math.sqrt(p * (1 - p) / n_val)
    reasons = []
    if examples < MIN_TOLERANCE_EXAMPLES:
        reasons.append(f"a {tolerance:g}-point tolerance on {n_val:,} validation examples is {examples:.3g} example(s)")
    if 0 < se and tolerance < se:
        reasons.append(f"it is below one standard error of the dense {objective.metric}")
    wrong = (1 - p) * n_val
    if objective.kind == "classification" and wrong < MIN_TOLERANCE_EXAMPLES:
        reasons.append(f"{objective.metric} {100 * p:.2f} % leaves {wrong:.0f} wrong example(s) to measure a drop by")
    if not reasons:
        return None
    return (
        f"the validation split cannot resolve a tolerance of {objective.tolerance_text(tolerance)}: "
        + "; ".join(reasons)
        + f" (standard error {se:.2f} points at {objective.metric} {100 * p:.2f} %); "
        "use more validation examples or a larger tolerance"
    )
