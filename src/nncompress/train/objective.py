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

import logging
import math
from typing import Any, Optional, Union

import torch
from torch import nn

from nncompress.data.batches import Inputs, OutputFn, call_model, model_device, pick_output, take, to_device
from nncompress.errors import ConfigError
from nncompress.train.distillation import LABEL_FREE, Distillation
from nncompress.train.objective_base import AUTO, KINDS, Classification, Objective
from nncompress.train.user_objective import UserObjective

# Defined beside their kin, imported from here by the loops, the pipeline and users.
from nncompress.train.distillation import CosineDistillation as CosineDistillation
from nncompress.train.distillation import KLDistillation as KLDistillation
from nncompress.train.distillation import MSEDistillation as MSEDistillation
from nncompress.train.objective_base import EVAL_BATCH as EVAL_BATCH
from nncompress.train.user_objective import LossFn as LossFn
from nncompress.train.user_objective import MetricFn as MetricFn

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
# The resolution warning fires when the tolerance spans fewer validation examples than this.
MIN_TOLERANCE_EXAMPLES = 5

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
        chosen = LABEL_FREE[kind](output).bind(model)
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
    if spec in LABEL_FREE:
        return LABEL_FREE[spec](output).bind(model)
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
        "hold out more validation examples (--val-size) or allow a larger tolerance"
    )
