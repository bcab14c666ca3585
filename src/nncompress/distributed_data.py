"""Data-parallel helpers: each rank's share of the examples, sums over the ranks, averaged gradients and
BatchNorm statistics, and the random streams the ranks share or fork."""

from __future__ import annotations

import hashlib
from typing import Iterator, Sequence

import torch
from torch import nn

from nncompress.distributed_group import _comm_device, _dist, _guard, active, is_main, rank, world_size

#: gradients are all-reduced in buckets of about this many bytes: one flat copy of the whole model is never made
BUCKET_BYTES = 25 * 2**20


def span(n: int) -> tuple[int, int]:
    """This rank's contiguous share [lo, hi) of n items (shares differ by at most one)."""
    if not active():
        return 0, n
    w, r = world_size(), rank()
    return n * r // w, n * (r + 1) // w


def shard(items: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a 1-D tensor (e.g. one batch's example indices)."""
    lo, hi = span(len(items))
    return items[lo:hi]


def all_sum(values: Sequence[float]) -> list[float]:
    """Each value summed over the ranks, in rank order and in float64, so every rank gets the same bits."""
    if not active():
        return [float(v) for v in values]
    mine = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    with _guard("summing figures over the ranks"):
        _dist().all_gather(parts, mine)
    total = parts[0].clone()
    for part in parts[1:]:
        total += part
    return [float(v) for v in total.cpu()]


def _buckets(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (
            size + t.numel() * t.element_size() > BUCKET_BYTES
            or t.dtype != bucket[0].dtype
            or t.device != bucket[0].device
        ):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def _sum_in_place(tensors: Sequence[torch.Tensor], what: str) -> None:
    """All-reduce (sum) ``tensors`` in place, a bucket of them at a time."""
    dist, device = _dist(), _comm_device()
    for bucket in _buckets(tensors):
        if len(bucket) == 1 and bucket[0].is_contiguous() and bucket[0].device == device:
            with _guard(what):  # a tensor of a bucket's size or more: reduced where it lies, not copied
                dist.all_reduce(bucket[0])
            continue
        flat = torch.cat([t.reshape(-1) for t in bucket]).to(device)
        with _guard(what):
            dist.all_reduce(flat)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


@torch.no_grad()
def average_gradient(grad: torch.Tensor, weight: float) -> None:
    """One gradient (or a block of one) replaced by the sum over the ranks of ``weight`` x its
    local value, where it lies: for steps taken inside backward, one layer at a time, every
    rank reducing the same tensors in the same order."""
    if not active():
        return
    grad.mul_(weight)
    _sum_in_place([grad], "averaging gradients")


@torch.no_grad()
def average_gradients(params: Sequence[nn.Parameter], weight: float, uneven: bool = False) -> None:
    """Replace each gradient by the sum over the ranks of ``weight`` x its local value: with
    ``weight`` = local examples / batch examples this is the gradient of the whole batch's mean
    loss. ``uneven``: some rank had no examples, so gradients that exist anywhere are made to
    exist everywhere first (a parameter no rank touched keeps ``None``)."""
    if not active():
        return
    if uneven:
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=_comm_device())
        with _guard("averaging gradients"):
            _dist().all_reduce(flags)
        for p, flag in zip(params, flags.tolist(), strict=True):
            if flag and p.grad is None:
                p.grad = torch.zeros_like(p)
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.to_dense()
        p.grad.mul_(weight)
        grads.append(p.grad)
    _sum_in_place(grads, "averaging gradients")


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Average the floating buffers (BatchNorm running statistics): each rank saw its own examples."""
    if not active():
        return
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    _sum_in_place(buffers, "averaging BatchNorm statistics")
    for b in buffers:
        b.div_(world_size())


def sync_rng() -> None:
    """Every rank takes rank 0's global RNG state: what it saves is then what every rank holds."""
    if not active():
        return
    dist, device = _dist(), _comm_device()
    state = torch.get_rng_state().to(device)
    with _guard("sharing the random state"):
        dist.broadcast(state, 0)
    torch.set_rng_state(state.cpu())
    if device.type == "cuda":
        cuda_state = torch.cuda.get_rng_state().to(device)
        with _guard("sharing the random state"):
            dist.broadcast(cuda_state, 0)
        torch.cuda.set_rng_state(cuda_state.cpu())


def fork_rng() -> None:
    """Ranks other than 0 leave the common random stream for one of their own (dropout masks differ
    between the ranks' examples), derived from the common state and the rank, so a resumed run draws
    the same. Rank 0 keeps the common stream, which ``sync_rng`` hands back to all."""
    if not active() or is_main():
        return
    digest = hashlib.blake2b(
        torch.get_rng_state().numpy().tobytes() + rank().to_bytes(4, "little"), digest_size=8
    ).digest()
    torch.manual_seed(int.from_bytes(digest, "little") >> 1)
