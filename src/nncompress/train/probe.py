"""Choose the pruner's fine-tuning recipe by trying it on the dense model first.

A converged net can sit where the default fine-tuning rate throws it to another
point: with nothing pruned, two epochs at lr 0.05 move LeNet-5's validation
outputs by a mean KL divergence of 0.031-0.033 nats (and its accuracy by up to
0.4 points either way), against 0.013-0.015 for LeNet-300-100. The pruner would
then judge that jump instead of the pruning. So a copy of the dense model gets
one pruning step's worth of fine-tuning first; when that alone moves the
outputs by more than ``probe_kl`` or costs more than the tolerance, the pruning
fine-tunes at the fallback rate with distillation from the dense model.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.config import PruneConfig
from nncompress.errors import ModelError
from nncompress.progress import ProgressFn
from nncompress.pruning.schedule import drop_points
from nncompress.train.loop import Teacher, fit, model_device

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
        moved = (f"one step's fine-tuning moved the dense model's validation outputs by KL {self.probe_kl:.3f} "
                 f"and its accuracy by {-self.probe_drop_points:+.2f} points")
        return f"{recipe} ({moved}: too far, so the fallback)" if self.fallback else f"{recipe} ({moved})"


def _log_probs(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Validation outputs, once per model: the KL and the accuracy both come from them."""
    device, training = model_device(model), model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([F.log_softmax(model(x[i:i + batch_size].to(device)), dim=1).cpu()
                              for i in range(0, len(x), batch_size)])
    finally:
        model.train(training)


def _accuracy(log_probs: torch.Tensor, y: torch.Tensor) -> float:
    return int((log_probs.argmax(1) == y.cpu()).sum()) / max(1, len(y))


def choose_finetune(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
                    val_y: torch.Tensor, cfg: PruneConfig, progress: Optional[ProgressFn] = None
                    ) -> tuple[PruneConfig, FinetuneChoice]:
    """Return the config the pruning should run with and why. ``model`` and
    every global RNG are left exactly as they were."""
    if not cfg.probe or cfg.epochs_per_step == 0:
        return cfg, FinetuneChoice(cfg.lr, cfg.distill, fallback=False)
    dense_logp = _log_probs(model, val_x)
    dense = _accuracy(dense_logp, val_y)
    trial = copy.deepcopy(model)
    teacher = Teacher(copy.deepcopy(model), cfg.distill, cfg.distill_temperature) if cfg.distill > 0 else None
    device = model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + PROBE_SEED_OFFSET)  # dropout too: the same decision every time
        gen = torch.Generator().manual_seed(cfg.seed + PROBE_SEED_OFFSET)
        try:
            fit(trial, train_x, train_y, cfg.finetune(cfg.epochs_per_step), generator=gen, progress=progress,
                task="probe", teacher=teacher)
            diverged = False
        except ModelError:  # the loss went to NaN/Inf: the clearest case for the fallback
            diverged = True
    if diverged:
        probed, kl = None, None
        unstable = True
    else:
        trial_logp = _log_probs(trial, val_x)
        probed = _accuracy(trial_logp, val_y)
        kl = round(float(F.kl_div(trial_logp, dense_logp, reduction="batchmean", log_target=True)), 6)
        unstable = kl > cfg.probe_kl or drop_points(dense, probed) > cfg.tolerance
    if unstable:
        cfg = dataclasses.replace(cfg, lr=min(cfg.lr, cfg.fallback_lr), distill=max(cfg.distill, cfg.fallback_distill))
    choice = FinetuneChoice(cfg.lr, cfg.distill, fallback=unstable, dense_val_accuracy=dense,
                            probe_val_accuracy=probed, probe_kl=kl, probe_diverged=diverged)
    log.info("%s", choice.describe())
    return cfg, choice
