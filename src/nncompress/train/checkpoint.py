"""Checkpoints that hold plain tensors and plain values only.

They load with ``torch.load(weights_only=True)``: no code is ever unpickled.
Pruned weights may be stored as CSR (values, indices, shape) where that is
smaller than dense; masks and ``*_orig`` copies are never written. Files
from elsewhere (bare state dicts, GPU-saved, DataParallel-wrapped) load too.

Saving is here; reading a file is ``checkpoint_load``, the record both share
``checkpoint_record``, building a model for a stored state ``model_state``;
their public names are all importable from here.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import torch
from torch import nn

from nncompress.atomic import atomic_open
from nncompress.coding.csr import csr_bytes, to_csr
from nncompress.errors import CheckpointError
from nncompress.models import arch_record
from nncompress.train.checkpoint_record import CHECKPOINT_KEY, CHECKPOINT_VERSION, _fold_pruning_masks, check_finite

# Defined beside their kin (the record, reading a file, building a model), imported from here.
from nncompress.train.checkpoint_load import MAX_CSR_ELEMENTS as MAX_CSR_ELEMENTS
from nncompress.train.checkpoint_load import PLAIN_DTYPES as PLAIN_DTYPES
from nncompress.train.checkpoint_load import WIDENED_DTYPES as WIDENED_DTYPES
from nncompress.train.checkpoint_load import load_checkpoint as load_checkpoint
from nncompress.train.checkpoint_load import plain_tensor as plain_tensor
from nncompress.train.checkpoint_record import Checkpoint as Checkpoint
from nncompress.train.checkpoint_record import nonfinite as nonfinite
from nncompress.train.model_state import _owned as _owned
from nncompress.train.model_state import load_state as load_state
from nncompress.train.model_state import model_for_state as model_for_state
from nncompress.train.model_state import state_mismatch as state_mismatch

STORAGES = ("auto", "dense", "csr")


def _is_sparse_weight(name: str, tensor: torch.Tensor) -> bool:
    return name.endswith("weight") and tensor.dim() >= 2 and tensor.is_floating_point()


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, *, meta: Optional[Mapping[str, Any]] = None, storage: str = "auto"
) -> dict[str, str]:
    """Write ``model`` atomically; return how each weight was stored ('dense'/'csr')."""
    if storage not in STORAGES:
        raise CheckpointError(f"storage must be one of {STORAGES}, got {storage!r}")
    # no copy: nothing below writes into these tensors (a copy would double a VGG-16's 528 MB while saving)
    state = _fold_pruning_masks({k: v.detach().cpu() for k, v in model.state_dict().items()}, "the model")
    check_finite(state)
    dense: dict[str, torch.Tensor] = {}
    sparse: dict[str, dict[str, Any]] = {}
    layout: dict[str, str] = {}
    for name, tensor in state.items():
        arr = tensor.numpy()
        use_csr = _is_sparse_weight(name, tensor) and (
            storage == "csr" or (storage == "auto" and csr_bytes(arr) < arr.nbytes)
        )
        if use_csr:
            csr = to_csr(arr)
            sparse[name] = {
                "values": torch.from_numpy(csr.values),
                "col_indices": torch.from_numpy(csr.col_indices),
                "crow_indices": torch.from_numpy(csr.crow_indices),
                "shape": list(csr.shape),
            }
            layout[name] = "csr"
        else:
            dense[name] = tensor
            layout[name] = "dense"
    payload = {
        CHECKPOINT_KEY: CHECKPOINT_VERSION,
        "arch": arch_record(model),
        "state": dense,
        "sparse": sparse,
        "meta": dict(meta or {}),
    }
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)
    return layout
