"""Choose the pruner's fine-tuning recipe by trying it on the dense model first.

A converged net can sit where the default fine-tuning rate throws it to another
point: with nothing pruned, two epochs at lr 0.05 move LeNet-5's validation
outputs by a mean KL divergence of 0.031-0.033 nats (and its accuracy by up to
0.4 points either way), against 0.013-0.015 for LeNet-300-100. The pruner would
then judge that jump instead of the pruning. So the dense model gets one
pruning step's worth of fine-tuning first (and is rolled back after); when that alone moves the
outputs by more than ``probe_kl`` or costs more than the tolerance, the pruning
fine-tunes at the fallback rate with distillation from the dense model.

The KL test applies where outputs are logits: classification and KL
distillation. Other objectives (cosine or MSE distillation of embeddings, a
user metric on other outputs) are judged by their score alone: the fallback
is taken when one step's fine-tuning costs more than the tolerance of that
score. Without labels the fine-tuning already distils from the dense model, so
the fallback lowers the rate only.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from nncompress.config import PruneConfig
from nncompress.data.batches import Inputs
from nncompress.errors import ModelError
from nncompress.progress import ProgressFn
from nncompress.pruning.schedule import drop_points
from nncompress.train.evidence import Reading, ValidationReader, paired_drop
from nncompress.train.loop import Teacher, fit, model_device
from nncompress.train.objective import Classification, Objective
from nncompress.train.rollback import Rollback

log = logging.getLogger(__name__)

# The probe shuffles with its own generator, offset from the run's seed, so
# the run itself sees exactly the random numbers it would see without it.
PROBE_SEED_OFFSET = 7919


@dataclass(frozen=True)
class FinetuneChoice:
    lr: float
    distill: float
    fallback: bool
    dense_val_accuracy: Optional[float] = None
    probe_val_accuracy: Optional[float] = None
    probe_kl: Optional[float] = None  # mean KL(dense || fine-tuned) of the validation outputs, nats
    probe_diverged: bool = False  # the probe's loss went to NaN/Inf (no KL or accuracy then)
    metric: str = "accuracy"  # what the two validation figures are (the objective's score)

    @property
    def probe_drop_points(self) -> Optional[float]:
        if self.dense_val_accuracy is None or self.probe_val_accuracy is None:
            return None
        return drop_points(self.dense_val_accuracy, self.probe_val_accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "probe_drop_points": self.probe_drop_points, "note": self.describe()}

    def describe(self) -> str:
        recipe = f"lr {self.lr:g}, distillation {self.distill:g}"
        if self.probe_diverged:
            return f"{recipe} (one step's fine-tuning of the dense model diverged: the fallback)"
        if self.probe_val_accuracy is None:
            return f"{recipe} (no probe)"
        drop = self.probe_drop_points or 0.0
        moved = (
            f"one step's fine-tuning moved the dense model's validation outputs by KL {self.probe_kl:.3f} "
            f"and its {self.metric} by {-drop:+.2f} points"
            if self.probe_kl is not None
            else f"one step's fine-tuning moved the dense model's validation {self.metric} by {-drop:+.2f} points"
        )
        return f"{recipe} ({moved}: too far, so the fallback)" if self.fallback else f"{recipe} ({moved})"


def _costs_too_much(dense: Reading, trial: Reading, cfg: PruneConfig) -> bool:
    """One step's fine-tuning costs more than the tolerance: by two standard errors of the paired
    drop (pooled decisions, where the examples allow), or on the reading alone."""
    drop = drop_points(dense.score, trial.score)
    if cfg.decision == "pooled" and dense.examples is not None and trial.examples is not None:
        return drop - 2 * paired_drop(dense.examples, trial.examples)[1] > cfg.tolerance
    return drop > cfg.tolerance


def choose_finetune(
    model: nn.Module,
    train_x: Inputs,
    train_y: Optional[torch.Tensor],
    val_x: Inputs,
    val_y: Optional[torch.Tensor],
    cfg: PruneConfig,
    progress: Optional[ProgressFn] = None,
    objective: Optional[Objective] = None,
    reader: Optional[ValidationReader] = None,
) -> tuple[PruneConfig, FinetuneChoice]:
    """Return the config the pruning should run with and why. ``model`` and
    every global RNG are left exactly as they were. ``objective`` (bound to
    the dense model; default classification) sets the loss and the score;
    ``reader`` (on ``val_x``, paired with ``model``) is made here when not given."""
    objective = objective or Classification()
    if not cfg.probe or cfg.epochs_per_step == 0:
        return cfg, FinetuneChoice(cfg.lr, cfg.distill, fallback=False, metric=objective.metric)
    reader = reader or ValidationReader(objective, val_x, val_y, model)
    dense_reading = reader.read(model)
    dense = dense_reading.score
    teacher = (
        Teacher(copy.deepcopy(model), cfg.distill, cfg.distill_temperature, objective.output)
        if cfg.distill > 0 and objective.uses_teacher_term
        else None
    )
    # the trial tunes the model itself and is rolled back after (a copy would hold the model twice while
    # it trains; the rollback copy of a large model waits on disk)
    saved, trial = Rollback(model), model
    try:
        diverged, trial_reading = _trial(trial, train_x, train_y, cfg, progress, teacher, objective, reader)
    finally:
        saved.restore_(model)
        saved.close()
    kl = None
    if diverged:
        probed = None
        unstable = True
    else:
        assert trial_reading is not None
        probed = trial_reading.score
        kl = None if trial_reading.kl is None else round(trial_reading.kl, 6)
        unstable = (kl is not None and kl > cfg.probe_kl) or _costs_too_much(dense_reading, trial_reading, cfg)
    if unstable:
        distill = max(cfg.distill, cfg.fallback_distill) if objective.uses_teacher_term else cfg.distill
        cfg = dataclasses.replace(cfg, lr=min(cfg.lr, cfg.fallback_lr), distill=distill)
    choice = FinetuneChoice(
        cfg.lr,
        cfg.distill,
        fallback=unstable,
        dense_val_accuracy=dense,
        probe_val_accuracy=probed,
        probe_kl=kl,
        probe_diverged=diverged,
        metric=objective.metric,
    )
    log.info("%s", choice.describe())
    return cfg, choice


def _trial(
    trial: nn.Module,
    train_x: Inputs,
    train_y: Optional[torch.Tensor],
    cfg: PruneConfig,
    progress: Optional[ProgressFn],
    teacher: Optional[Teacher],
    objective: Objective,
    reader: ValidationReader,
) -> tuple[bool, Optional[Reading]]:
    """One step's fine-tuning at the configured rate: (diverged, the validation reading after)."""
    device = model_device(trial)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + PROBE_SEED_OFFSET)  # dropout too: the same decision every time
        gen = torch.Generator().manual_seed(cfg.seed + PROBE_SEED_OFFSET)
        try:
            fit(
                trial,
                train_x,
                train_y,
                cfg.finetune(cfg.epochs_per_step),
                generator=gen,
                progress=progress,
                task="probe",
                teacher=teacher,
                objective=objective,
            )
            diverged = False
        except ModelError:  # the loss went to NaN/Inf: the clearest case for the fallback
            diverged = True
    return diverged, None if diverged else reader.read(trial)
