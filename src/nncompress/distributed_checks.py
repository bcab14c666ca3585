"""Checks that every rank holds the very same tensors (the ranks must compute the same thing)."""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

import torch
from torch import nn

from nncompress.distributed_group import _comm_device, _dist, _guard, active, world_size
from nncompress.errors import RankMismatchError


def _digest(t: torch.Tensor) -> int:
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    raw = flat.view(torch.uint8).numpy().data if flat.numel() else b""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little", signed=True)


def check_identical(tensors: Iterable[tuple[str, torch.Tensor]], what: str) -> None:
    """Raise ``RankMismatchError`` unless every rank holds the very same bytes in ``tensors``
    (a checksum per tensor, gathered from every rank). One pass over the bytes, no copies kept."""
    if not active():
        return
    names, sums = [], []
    for name, t in tensors:
        names.append(name)
        sums.append(_digest(t))
    mine = torch.tensor(sums + [len(sums)], dtype=torch.int64, device=_comm_device())
    count = torch.tensor([mine.numel()], dtype=torch.int64, device=_comm_device())
    counts = [torch.empty_like(count) for _ in range(world_size())]
    with _guard(f"checking {what}"):
        _dist().all_gather(counts, count)
    if len({int(c.item()) for c in counts}) != 1:
        raise RankMismatchError(
            f"{what}: the ranks hold different numbers of tensors ({[int(c.item()) - 1 for c in counts]})"
        )
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    with _guard(f"checking {what}"):
        _dist().all_gather(parts, mine)
    differ = sorted({names[i] for part in parts[1:] for i in range(len(names)) if int(part[i]) != int(parts[0][i])})
    if differ:
        raise RankMismatchError(
            f"{what} differ between the ranks in {len(differ)} tensor(s) "
            f"({', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''}); the ranks did "
            "not compute the same thing (different data, code or library versions on the "
            "nodes?)"
        )


def model_tensors(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """The model's parameters and buffers, named, for ``check_identical``."""
    for name, t in model.state_dict(keep_vars=False).items():
        yield prefix + name, t
