"""Plain training and evaluation over in-memory inputs.

The data sets we handle fit in memory, and slicing a tensor is several times
faster than a DataLoader on two cores, so batches are index slices. Inputs may
be a tensor, a tuple or a dict of tensors (``nncompress.data.batches``); what
the loss and the score are comes from an objective (``train.objective``),
classification when none is given.

Under torchrun (``nncompress.distributed``) every rank draws the same order
and takes its contiguous share of each batch; the gradients are averaged
over the ranks before the step, weighted by each rank's share, so a step
follows the whole batch's mean loss as on one process (BatchNorm layers see
their rank's share only, and dropout draws other masks, so the numbers match
a single process within training noise, not bit for bit). Each rank draws
dropout from its own stream during an epoch; BatchNorm statistics and the
global RNG state are made equal on every rank after it.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nncompress import distributed
from nncompress.config import TrainConfig
from nncompress.data.batches import Inputs, OutputFn, count, model_device, model_outputs, take, to_device
from nncompress.errors import ModelError
from nncompress.progress import ProgressFn, report
from nncompress.train.objective import Objective, default_objective
from nncompress.train.rowstep import row_stepped
from nncompress.train.sgd import BackwardStep, InPlaceSGD

if TYPE_CHECKING:
    from nncompress.train.journal import Journal

AfterStep = Callable[[], None]


class Teacher:
    """Knowledge distillation (Hinton et al. 2015): the pruned student also
    matches the dense model's softened outputs, which carry more than the
    labels about what the removed weights did."""

    def __init__(self, model: nn.Module, weight: float, temperature: float, output: Optional[OutputFn] = None) -> None:
        self.model = model.eval()
        self.output = output
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.weight = float(weight)
        self.temperature = float(temperature)

    def loss(self, logits: torch.Tensor, inputs: Inputs, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # log-probabilities on both sides: no 0 * log 0 where a class underflows
            soft = F.log_softmax(model_outputs(self.model, inputs, self.output) / self.temperature, dim=1)
        kd = F.kl_div(F.log_softmax(logits / self.temperature, dim=1), soft, reduction="batchmean", log_target=True)
        return (1 - self.weight) * F.cross_entropy(logits, target) + self.weight * self.temperature**2 * kd


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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Inputs,
    y: Optional[torch.Tensor],
    batch_size: int = 1000,
    objective: Optional[Objective] = None,
) -> tuple[float, float]:
    """Mean loss and score of ``model`` on (x, y): cross-entropy and accuracy (fraction)
    unless ``objective`` says otherwise."""
    return (objective or default_objective(y)).evaluate(model, x, y, batch_size)


def fit(
    model: nn.Module,
    x: Inputs,
    y: Optional[torch.Tensor],
    cfg: TrainConfig,
    *,
    params: Optional[Iterable[nn.Parameter]] = None,
    after_step: Optional[AfterStep] = None,
    generator: Optional[torch.Generator] = None,
    progress: Optional[ProgressFn] = None,
    task: str = "train",
    freeze_others: bool = True,
    journal: Optional["Journal"] = None,
    teacher: Optional[Teacher] = None,
    objective: Optional[Objective] = None,
) -> list[float]:
    """Train with SGD + Nesterov momentum on a one-cycle cosine schedule.

    ``params`` restricts what is trained (the rest stays frozen); ``after_step``
    runs after every optimizer step, which is where masks re-zero pruned
    weights so they stay exactly zero through momentum and weight decay.
    With ``freeze_others=False`` the other parameters still get gradients
    (for hooks like centroid fine-tuning that consume them). Returns the
    mean training loss of each epoch. With a ``journal`` the state is saved
    after every epoch, and a call the journal already holds resumes there.
    A ``teacher`` adds its distillation term to the loss (classification
    only). ``objective`` sets the loss (default: cross-entropy on ``y``).
    """
    objective = objective or default_objective(y)
    if teacher is not None and not objective.uses_teacher_term:
        raise ModelError(f"a Teacher term applies to classification, not to the {objective.kind} objective")
    n = count(x)
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if cfg.epochs == 0 or (not trainable and after_step is None):
        return []
    gen = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    opt = (
        InPlaceSGD(
            trainable, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay
        )
        if trainable
        else None
    )
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    chosen = {id(p) for p in trainable}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen] if freeze_others else []
    for p in frozen:
        p.requires_grad_(False)
    losses: list[float] = []
    in_backward: list = []
    opt_params: list[nn.Parameter] = []
    hooks = contextlib.ExitStack()
    device = model_device(model)
    model.train()
    try:
        start = 0
        if journal is not None:
            described: dict = {
                "train": cfg.to_dict(),
                "distill": [teacher.weight, teacher.temperature] if teacher is not None else None,
            }
            if objective.kind != "classification":  # classification keeps the settings older journals hold
                described["objective"] = objective.describe()
            settings = json.dumps(described, sort_keys=True)
            start, losses = journal.begin(model, opt, gen, cfg.epochs, task, settings)
        step = start * steps_per_epoch
        ranks = distributed.world_size() if distributed.active() else 1
        reduced = [p for p in model.parameters() if p.requires_grad] if ranks > 1 else []
        # each layer is updated as soon as its gradient is ready (averaged over the ranks under torchrun),
        # so one gradient is held at a time; the largest Linear layers, a block of rows at a time
        gate = BackwardStep(distributed.average_gradient if ranks > 1 else None)
        if opt is not None:
            in_backward = opt.step_in_backward(gate)
            hooks.enter_context(row_stepped(model, opt, gate))
            opt_params = [p for g in opt.param_groups for p in g["params"]]
            stepped = {id(p) for p in opt_params}
            reduced = [p for p in reduced if id(p) not in stepped]  # what the optimizer does not own
        for epoch in range(start, cfg.epochs):
            order = torch.randperm(n, generator=gen)
            running = 0.0
            if ranks > 1:
                distributed.fork_rng()
            for i in range(0, n, cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                mine = distributed.shard(idx) if ranks > 1 else idx
                model.zero_grad(set_to_none=True)
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = _lr_at(cfg, step, total)
                uneven = len(idx) < ranks  # a rank without examples runs no backward
                gate.on, gate.share = not uneven, len(mine) / len(idx)
                if len(mine):
                    inputs = to_device(take(x, mine), device)
                    target = y[mine].to(device) if y is not None else None
                    loss = objective.train_loss(model, inputs, target, teacher)
                    loss.backward()
                    running += loss.item() * len(mine)
                if ranks > 1:
                    owned = reduced if not uneven or opt is None else reduced + opt_params
                    distributed.average_gradients(owned, gate.share, uneven=uneven)
                if opt is not None and uneven:
                    opt.step()
                if after_step is not None:
                    after_step()
                step += 1
            if ranks > 1:
                running = distributed.all_sum([running])[0]
                distributed.sync_buffers(model)
                distributed.sync_rng()
            losses.append(running / n)
            if not math.isfinite(losses[-1]):  # before the journal saves it: a resume must not start from NaN
                raise ModelError(
                    f"{task} diverged: the mean loss of epoch {epoch + 1} is {losses[-1]}; "
                    f"lower the learning rate (it peaked at {cfg.lr:g})"
                )
            if journal is not None:
                journal.epoch_done(epoch + 1, model, opt, gen, losses)
            report(progress, task, epoch + 1, cfg.epochs, loss=losses[-1])
    finally:
        hooks.close()
        for handle in in_backward:
            handle.remove()
        for p in trainable:  # the last step's gradients are never read again: give their memory back
            p.grad = None
        for p in frozen:
            p.requires_grad_(True)
        model.eval()
    return losses
