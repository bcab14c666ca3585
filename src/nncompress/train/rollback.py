"""The copy of a model that a rejected step or fine-tuning rolls back to.

A small model is copied in memory. A large one (``SPILL_BYTES`` or more of state) goes
to an anonymous temporary file, and rolling back reads it straight into the model's own
tensors: pruning VGG-16 already holds the model, its gradients and momentum (three times
its size), and a fourth copy in memory is what would not fit. The file has no name, so
the operating system frees it when the copy is dropped or the process dies; it lives in
``tempfile``'s directory (``TMPDIR``).
"""

from __future__ import annotations

import io
import logging
import tempfile
from typing import Mapping, MutableMapping, Optional

import torch
from torch import nn

from nncompress.errors import ModelError

__all__ = ["SPILL_BYTES", "Rollback"]

log = logging.getLogger(__name__)

#: state of at least this many bytes is kept on disk, not in memory
SPILL_BYTES = 256 * 2**20

Tensors = Mapping[str, torch.Tensor]


def _bytes_of(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat uint8 CPU tensor (no copy for a contiguous CPU tensor)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


class Rollback:
    """A copy of ``model``'s state and of ``extra`` tensors (masks, codebooks), to restore
    with :meth:`restore_` as often as needed. ``spill`` forces disk (True) or memory
    (False); by default state of ``SPILL_BYTES`` or more is spilled."""

    def __init__(self, model: nn.Module, extra: Optional[Tensors] = None, *, spill: Optional[bool] = None) -> None:
        tensors = {
            **{f"state.{k}": v for k, v in model.state_dict().items()},
            **{f"extra.{k}": v for k, v in (extra or {}).items()},
        }
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        self.spilled = size >= SPILL_BYTES if spill is None else bool(spill)
        self._kinds = {k: (t.dtype, t.shape) for k, t in tensors.items()}
        self._layout: dict[str, tuple[int, int]] = {}
        self._copies: dict[str, torch.Tensor] = {}
        self._file: Optional[io.BufferedRandom] = None
        if not self.spilled:
            self._copies = {k: v.detach().clone() for k, v in tensors.items()}
            return
        self._file = tempfile.TemporaryFile(prefix="nncompress-rollback-")
        offset = 0
        for key, t in tensors.items():
            data = _bytes_of(t)
            self._file.write(data.numpy().data)
            self._layout[key] = (offset, data.numel())
            offset += data.numel()
        self._file.flush()
        log.debug("rollback copy of %.0f MB written to a temporary file", offset / 1e6)

    def _read_into(self, key: str, target: torch.Tensor) -> None:
        offset, nbytes = self._layout[key]
        dtype, shape = self._kinds[key]
        if target.dtype != dtype or target.shape != shape:
            raise ModelError(
                f"cannot roll back {key[key.index('.') + 1 :]!r}: it is now {tuple(target.shape)} "
                f"{target.dtype}, the copy holds {tuple(shape)} {dtype}"
            )
        assert self._file is not None
        self._file.seek(offset)
        direct = target.device.type == "cpu" and target.is_contiguous()
        buffer = target.detach().reshape(-1).view(torch.uint8) if direct else torch.empty(nbytes, dtype=torch.uint8)
        if self._file.readinto(buffer.numpy().data) != nbytes:
            raise ModelError("the rollback copy's temporary file was cut short; the run cannot roll back")
        if not direct:
            with torch.no_grad():
                target.copy_(buffer.view(dtype).reshape(shape))

    def _restore(self, key: str, target: torch.Tensor) -> None:
        if self.spilled:
            self._read_into(key, target)
        else:
            with torch.no_grad():
                target.copy_(self._copies[key])

    def restore_(self, model: nn.Module, extra: Optional[MutableMapping[str, torch.Tensor]] = None) -> None:
        """Put the copied state back into ``model`` (in place) and the copied extras into
        ``extra`` (into its tensors where they match, as new tensors where they do not)."""
        state = model.state_dict()
        keys = {k for k in self._kinds if k.startswith("state.")}
        if keys != {f"state.{k}" for k in state}:
            raise ModelError("cannot roll back: the model's parameters and buffers are not those that were copied")
        for name, target in state.items():
            self._restore(f"state.{name}", target)
        if extra is None:
            return
        names = [k[len("extra.") :] for k in self._kinds if k.startswith("extra.")]
        for name in list(extra):
            if name not in names:
                del extra[name]
        for name in names:
            key = f"extra.{name}"
            dtype, shape = self._kinds[key]
            current = extra.get(name)
            if current is None or current.dtype != dtype or current.shape != shape:
                device = current.device if current is not None else "cpu"
                extra[name] = current = torch.empty(shape, dtype=dtype, device=device)
            self._restore(key, current)

    def close(self) -> None:
        """Free the copy now (dropping the object does the same)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._copies = {}
