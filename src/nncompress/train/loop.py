"""Plain training and evaluation over in-memory tensors.

The data sets we handle fit in memory, and slicing a tensor is several times
faster than a DataLoader on two cores, so batches are index slices.
"""
from __future__ import annotations

import json
import math
import random
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.config import TrainConfig
from nncompress.errors import ModelError
from nncompress.progress import ProgressFn, report

if TYPE_CHECKING:
    from nncompress.train.journal import Journal

AfterStep = Callable[[], None]


class Teacher:
    """Knowledge distillation (Hinton et al. 2015): the pruned student also
    matches the dense model's softened outputs, which carry more than the
    labels about what the removed weights did."""

    def __init__(self, model: nn.Module, weight: float, temperature: float) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.weight = float(weight)
        self.temperature = float(temperature)

    def loss(self, logits: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # log-probabilities on both sides: no 0 * log 0 where a class underflows
            soft = F.log_softmax(self.model(inputs) / self.temperature, dim=1)
        kd = F.kl_div(F.log_softmax(logits / self.temperature, dim=1), soft, reduction="batchmean", log_target=True)
        return (1 - self.weight) * F.cross_entropy(logits, target) + self.weight * self.temperature ** 2 * kd


def set_seed(seed: int) -> torch.Generator:
    """Seed every RNG the loops use; return the generator that shuffles batches."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero (one-cycle)."""
    warm = int(cfg.warmup * total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def model_device(model: nn.Module) -> torch.device:
    """Where the model lives: batches are moved there (data stays on the CPU)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) of ``model`` on (x, y)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size].to(device))
        target = y[i:i + batch_size].to(device)
        loss += F.cross_entropy(out, target, reduction="sum").item()
        correct += int((out.argmax(1) == target).sum())
    model.train(was_training)
    n = max(1, len(x))
    return loss / n, correct / n


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *,
        params: Optional[Iterable[nn.Parameter]] = None, after_step: Optional[AfterStep] = None,
        generator: Optional[torch.Generator] = None, progress: Optional[ProgressFn] = None,
        task: str = "train", freeze_others: bool = True, journal: Optional["Journal"] = None,
        teacher: Optional[Teacher] = None) -> list[float]:
    """Train with SGD + Nesterov momentum on a one-cycle cosine schedule.

    ``params`` restricts what is trained (the rest stays frozen); ``after_step``
    runs after every optimizer step, which is where masks re-zero pruned
    weights so they stay exactly zero through momentum and weight decay.
    With ``freeze_others=False`` the other parameters still get gradients
    (for hooks like centroid fine-tuning that consume them). Returns the
    mean training loss of each epoch. With a ``journal`` the state is saved
    after every epoch, and a call the journal already holds resumes there.
    A ``teacher`` adds its distillation term to the loss.
    """
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if cfg.epochs == 0 or (not trainable and after_step is None):
        return []
    gen = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                          weight_decay=cfg.weight_decay) if trainable else None
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    chosen = {id(p) for p in trainable}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen] if freeze_others else []
    for p in frozen:
        p.requires_grad_(False)
    losses: list[float] = []
    device = model_device(model)
    model.train()
    try:
        start = 0
        if journal is not None:
            settings = json.dumps({"train": cfg.to_dict(), "distill": [teacher.weight, teacher.temperature]
                                   if teacher is not None else None}, sort_keys=True)
            start, losses = journal.begin(model, opt, gen, cfg.epochs, task, settings)
        step = start * steps_per_epoch
        for epoch in range(start, cfg.epochs):
            order = torch.randperm(len(x), generator=gen)
            running = 0.0
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                model.zero_grad(set_to_none=True)
                inputs, target = x[idx].to(device), y[idx].to(device)
                logits = model(inputs)
                loss = F.cross_entropy(logits, target) if teacher is None else teacher.loss(logits, inputs, target)
                loss.backward()
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = _lr_at(cfg, step, total)
                    opt.step()
                if after_step is not None:
                    after_step()
                running += loss.item() * len(idx)
                step += 1
            losses.append(running / len(x))
            if not math.isfinite(losses[-1]):  # before the journal saves it: a resume must not start from NaN
                raise ModelError(f"{task} diverged: the mean loss of epoch {epoch + 1} is {losses[-1]}; "
                                 f"lower the learning rate (it peaked at {cfg.lr:g})")
            if journal is not None:
                journal.epoch_done(epoch + 1, model, opt, gen, losses)
            report(progress, task, epoch + 1, cfg.epochs, loss=losses[-1])
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.eval()
    return losses
