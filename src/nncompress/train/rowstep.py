"""Large Linear layers that are stepped a block of rows at a time inside backward.

Stepping each parameter as soon as backward has its gradient (``InPlaceSGD.step_in_backward``)
still holds one whole gradient at a time, and in VGG-16 one layer is three quarters of the
model: fine-tuning it holds the weights, the momentum and that gradient. Here the weight
gradient of such a layer is never formed: backward computes it a block of output rows at a
time (``gy[:, rows]^T @ x``) and hands each block to the optimizer, which updates those rows
and lets the block go. Only the weight's own gradient is treated so; the input's and the
bias's flow on as usual. Under torchrun each block is averaged over the ranks before it is
applied (``BackwardStep``); a step taken after backward uses the plain layer.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.train.sgd import BackwardStep, InPlaceSGD

__all__ = ["ROW_STEP_BYTES", "BLOCK_BYTES", "row_stepped"]

#: Linear weights of at least this many bytes are stepped by rows
ROW_STEP_BYTES = 128 * 2**20
#: bytes of weight gradient formed at a time
BLOCK_BYTES = 32 * 2**20

Stepper = Callable[[slice, torch.Tensor], None]


class _RowStepped(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stepper: Stepper
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stepper = stepper
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, gy: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        gx = gy @ weight if ctx.needs_input_grad[0] else None  # before any row of the weight moves
        gb = gy.reshape(-1, gy.shape[-1]).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        if ctx.needs_input_grad[1]:
            g2, x2 = gy.reshape(-1, gy.shape[-1]), x.reshape(-1, x.shape[-1])
            block = max(1, BLOCK_BYTES // max(1, weight.shape[1] * weight.element_size()))
            for start in range(0, weight.shape[0], block):
                rows = slice(start, min(weight.shape[0], start + block))
                ctx.stepper(rows, g2[:, rows].t() @ x2)
        return gx, None, gb, None


def _stepped_forward(module: nn.Linear, stepper: Stepper, gate: BackwardStep) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if not gate.on or not torch.is_grad_enabled() or not module.weight.requires_grad:
            return F.linear(x, module.weight, module.bias)
        return _RowStepped.apply(x, module.weight, module.bias, stepper)

    return forward


@contextlib.contextmanager
def row_stepped(model: nn.Module, opt: InPlaceSGD, gate: BackwardStep) -> Iterator[set[int]]:
    """While open, every Linear of ``model`` whose weight ``opt`` trains and which holds
    ``ROW_STEP_BYTES`` or more is stepped by rows in backward; yields the ids of those weights
    (which then never get a ``.grad``: leave them out of ``step_in_backward``). A weight
    shared by several modules is left alone (its gradient has several parts)."""
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    owners: dict[int, list[nn.Linear]] = {}
    for m in model.modules():
        if isinstance(m, nn.Linear):
            owners.setdefault(id(m.weight), []).append(m)
    uses: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    chosen = [
        ms[0]
        for pid, ms in owners.items()
        if len(ms) == 1
        and uses.get(pid) == 1
        and pid in trained
        and ms[0].weight.dim() == 2
        and ms[0].weight.numel() * ms[0].weight.element_size() >= ROW_STEP_BYTES
    ]
    before = {id(m): m.__dict__.get("forward") for m in chosen}
    for m in chosen:  # an instance attribute shadows the class's forward (mypy sees a method assigned)
        m.forward = _stepped_forward(m, _stepper(opt, m.weight, gate), gate)  # type: ignore[method-assign, assignment]
    try:
        yield {id(m.weight) for m in chosen}
    finally:
        for m in chosen:
            own = before[id(m)]
            if own is None:
                del m.forward  # the class's forward again
            else:
                m.forward = own  # type: ignore[method-assign]


def _stepper(opt: InPlaceSGD, weight: torch.Tensor, gate: BackwardStep) -> Stepper:
    def step(rows: slice, grad: torch.Tensor) -> None:
        gate.prepare(grad)  # under torchrun: this block averaged over the ranks first
        opt.update_rows(weight, rows, grad)

    return step
